// Package keyproxy is the agent's credential-injecting proxy to the
// Anthropic API.
//
// The Claude Code CLI is started before anyone has sent an API key (so a new
// conversation does not wait for it to load), and the key must never be
// written into the container's environment or onto disk. So the CLI is
// pointed at this proxy on 127.0.0.1 with a random per-process placeholder
// key; the proxy checks the placeholder, swaps in the key of the current
// turn, which it holds in memory only, and forwards the request to the real
// API base URL, streaming the response through unbuffered. It also reports
// each response's status, so an authentication failure can end a turn at
// once instead of after the CLI's retries.
package keyproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// maxRequestBytes bounds one API request from the CLI (the API's own limit
// is 32 MB).
const maxRequestBytes = 64 << 20

// Proxy forwards the CLI's API calls upstream with the current key.
type Proxy struct {
	upstream    *url.URL
	placeholder string
	key         atomic.Pointer[string]
	warmUp      atomic.Bool
	rp          *httputil.ReverseProxy
	onResponse  func(status int)

	srv *http.Server
	url string

	// OnAbort, if set, is told when the CLI abandons a request before its
	// response ended (for diagnostics).
	OnAbort func(path string, after time.Duration, err error)
}

// New returns a proxy to upstream (e.g. "https://api.anthropic.com").
// onResponse, if not nil, is called with the status of every upstream
// response.
func New(upstream string, onResponse func(status int)) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keyproxy: upstream %q must be an http(s) URL", upstream)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("keyproxy: placeholder key: %w", err)
	}
	p := &Proxy{
		upstream:    u,
		placeholder: "sk-ant-agcluster-placeholder-" + hex.EncodeToString(b[:]),
		onResponse:  onResponse,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.upstream)
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Set("X-Api-Key", *p.key.Load())
		},
		FlushInterval: -1,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Minute,
		},
		ModifyResponse: func(resp *http.Response) error {
			if p.onResponse != nil {
				p.onResponse(resp.StatusCode)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			writeAPIError(w, http.StatusBadGateway, "api_error", "agent proxy could not reach the Anthropic API: "+err.Error())
		},
	}
	return p, nil
}

// Placeholder is the key the CLI must present; give it to the CLI as
// ANTHROPIC_API_KEY.
func (p *Proxy) Placeholder() string { return p.placeholder }

// SetKey sets the API key used from now on.
func (p *Proxy) SetKey(key string) { p.key.Store(&key) }

// HasKey reports whether a key has been set.
func (p *Proxy) HasKey() bool {
	k := p.key.Load()
	return k != nil && *k != ""
}

// ServeHTTP checks the placeholder and forwards the request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	presented := r.Header.Get("X-Api-Key")
	if presented == "" {
		presented = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	if subtle.ConstantTimeCompare([]byte(presented), []byte(p.placeholder)) != 1 {
		writeAPIError(w, http.StatusUnauthorized, "authentication_error", "agent proxy: requests must come from this agent's Claude Code process")
		return
	}
	if p.warmUp.Load() {
		answerWarmUp(w, r)
		return
	}
	if !p.HasKey() {
		if p.onResponse != nil {
			p.onResponse(http.StatusUnauthorized)
		}
		writeAPIError(w, http.StatusUnauthorized, "authentication_error", "no Anthropic API key was given for this turn")
		return
	}
	// Read the whole request before forwarding it. Streaming it through
	// races the server: once the upstream's response headers are flushed
	// to the CLI, net/http closes the unread rest of the incoming body,
	// the transport's write of the outgoing body fails, and it closes the
	// upstream connection in the middle of the response.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		writeAPIError(w, http.StatusRequestEntityTooLarge, "request_too_large", "agent proxy: request body: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	start := time.Now()
	p.rp.ServeHTTP(w, r)
	if err := r.Context().Err(); err != nil && p.OnAbort != nil {
		p.OnAbort(r.URL.Path, time.Since(start), err)
	}
}

// Start listens on 127.0.0.1 on a free port and serves until Close.
func (p *Proxy) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("keyproxy: listen: %w", err)
	}
	p.url = "http://" + ln.Addr().String()
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return nil
}

// URL is the proxy's base URL once started; give it to the CLI as
// ANTHROPIC_BASE_URL.
func (p *Proxy) URL() string { return p.url }

// Close stops the listener.
func (p *Proxy) Close() error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Close()
}

func writeAPIError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":  "error",
		"error": map[string]string{"type": typ, "message": msg},
	})
}
