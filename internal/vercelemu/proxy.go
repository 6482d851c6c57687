package vercelemu

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// serveProxy is Vercel's route proxy: https://<subdomain>.vercel.run goes
// to the port of the sandbox the subdomain names. Here the subdomain is
// the first path segment (ProxyURL/<subdomain>/...), or the first label
// of the Host header; it is stripped before the request goes on. The
// answer streams through unbuffered (SSE event by event), full duplex.
// An unknown subdomain gets 404, a sandbox whose session does not run
// 410 (Vercel's SANDBOX_STOPPED), a port nothing listens on 502.
func (e *Emulator) serveProxy(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "Vercel")
	w.Header().Set("X-Vercel-Id", Region+"::"+randhex.String(10))
	sub, rest := e.subdomain(r)
	target, name, status, msg := e.routeTarget(sub)
	if status != 0 {
		http.Error(w, msg, status)
		return
	}
	e.rec.Proxied(name)
	// Without full duplex, net/http's HTTP/1 server closes the request body
	// once the response starts, racing the transport still copying it.
	_ = http.NewResponseController(w).EnableFullDuplex()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path, pr.Out.URL.RawPath = rest, ""
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Proto", "https")
		},
		Transport:     e.proxyTransport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			e.log.Info("proxy_upstream_error", zap.String("sandbox", name), zap.Error(err))
			http.Error(w, "The sandbox's port could not be reached", http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

// subdomain reads the route's subdomain from r: the first path segment
// when it names a route, else the Host's first label. rest is the path
// to send on.
func (e *Emulator) subdomain(r *http.Request) (sub, rest string) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	first, after, _ := strings.Cut(p, "/")
	if e.knownSubdomain(first) {
		return first, "/" + after
	}
	host, _, _ := strings.Cut(r.Host, ".")
	return host, r.URL.Path
}

// knownSubdomain reports whether sub names a route.
func (e *Emulator) knownSubdomain(sub string) bool {
	if sub == "" {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, sb := range e.sandboxes {
		for _, s := range sb.subdomains {
			if s == sub {
				return true
			}
		}
	}
	return false
}

// routeTarget finds the sandbox and port behind sub: the URL to send to,
// or the status to answer.
func (e *Emulator) routeTarget(sub string) (*url.URL, string, int, string) {
	e.mu.Lock()
	var found *sandbox
	port := 0
	for _, sb := range e.sandboxes {
		for p, s := range sb.subdomains {
			if s == sub {
				found, port = sb, p
			}
		}
	}
	if found == nil {
		e.mu.Unlock()
		return nil, "", http.StatusNotFound, "The deployment could not be found on Vercel. DEPLOYMENT_NOT_FOUND"
	}
	name, st, ip := found.name, found.session.status, found.ip
	e.mu.Unlock()
	if st != sandboxapi.StatusRunning || ip == "" {
		return nil, name, http.StatusGone, "The sandbox is stopped. SANDBOX_STOPPED"
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(ip, strconv.Itoa(port))}, name, 0, ""
}
