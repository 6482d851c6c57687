// Package emuhttp is the HTTP plumbing the platform emulators
// (internal/flyemu, internal/vercelemu) share: their two servers, the
// platform API and the proxy to the instances, and the JSON bodies of the
// API.
package emuhttp

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// DefaultAddr is where a server listens when its address is empty: a
// free loopback port.
const DefaultAddr = "127.0.0.1:0"

// Servers are an emulator's API server and proxy server.
type Servers struct {
	// APIURL and ProxyURL are the servers' base URLs,
	// e.g. "http://127.0.0.1:40123".
	APIURL, ProxyURL string

	api, proxy *http.Server
}

// Listen starts the API server on apiAddr and the proxy on proxyAddr
// (DefaultAddr when empty); they serve until Close.
func Listen(apiAddr string, api http.Handler, proxyAddr string, proxy http.Handler) (*Servers, error) {
	apiLn, err := net.Listen("tcp", cmp.Or(apiAddr, DefaultAddr))
	if err != nil {
		return nil, fmt.Errorf("listen for the api: %w", err)
	}
	proxyLn, err := net.Listen("tcp", cmp.Or(proxyAddr, DefaultAddr))
	if err != nil {
		_ = apiLn.Close()
		return nil, fmt.Errorf("listen for the proxy: %w", err)
	}
	s := &Servers{
		APIURL:   "http://" + apiLn.Addr().String(),
		ProxyURL: "http://" + proxyLn.Addr().String(),
		api:      &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second},
		proxy:    &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second},
	}
	go func() { _ = s.api.Serve(apiLn) }()
	go func() { _ = s.proxy.Serve(proxyLn) }()
	return s, nil
}

// Close stops both servers and their connections at once. A nil Servers
// does nothing.
func (s *Servers) Close() {
	if s == nil {
		return
	}
	_ = s.api.Close()
	_ = s.proxy.Close()
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// maxBody is the largest JSON body ReadJSON reads.
const maxBody = 8 << 20

// ReadJSON decodes the JSON body of r into v; an empty body leaves v as
// it is.
func ReadJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err == nil && len(strings.TrimSpace(string(body))) > 0 {
		err = json.Unmarshal(body, v)
	}
	return err
}
