package flyemu

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	fly "github.com/superfly/fly-go"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
)

// ForceInstanceHeader is the request header Fly's proxy routes by: the id
// of the machine that must serve the request.
const ForceInstanceHeader = "Fly-Force-Instance-Id"

// serveProxy is Fly's proxy for the app's HTTP services: a request with
// fly-force-instance-id goes to that machine, others to any started
// machine; the response streams through unbuffered (SSE event by event).
// An unknown machine gets 404; a machine that is not started gets 503,
// unless its service has autostart, which starts it first, as Fly's proxy
// does.
func (e *Emulator) serveProxy(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Fly-Request-Id", randhex.String(10)+"-"+e.opts.Region)
	w.Header().Set("Server", "Fly/flyemu")
	w.Header().Add("Via", "1.1 fly.io")
	m, status, msg := e.route(r)
	if m != nil && status == http.StatusServiceUnavailable && autostart(m) {
		m, status, msg = e.autostart(r.Context(), m)
	}
	if status != 0 {
		http.Error(w, msg, status)
		return
	}
	e.mu.Lock()
	ip, port := m.privateIP, servicePort(m.config)
	e.mu.Unlock()
	e.rec.Proxied(m.id)
	if port == 0 {
		http.Error(w, "machine has no service to route to", http.StatusServiceUnavailable)
		return
	}
	// Without full duplex, net/http's HTTP/1 server closes the request body
	// once the response starts, racing the transport that is still copying
	// it upstream (the upstream connection is then closed mid-stream).
	_ = http.NewResponseController(w).EnableFullDuplex()
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort(ip, strconv.Itoa(port))}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("Fly-Client-IP", clientIP(pr.In))
			pr.Out.Header.Set("Fly-Forwarded-Proto", "https")
			pr.Out.Header.Set("Fly-Region", m.region)
		},
		Transport:     e.proxyTransport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			e.log.Info("proxy_upstream_error", zap.String("machine", m.id), zap.Error(err))
			http.Error(w, "could not reach the machine: "+err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

// route picks the machine for r: the forced one, or any started machine.
func (e *Emulator) route(r *http.Request) (*machine, int, string) {
	id := strings.TrimSpace(r.Header.Get(ForceInstanceHeader))
	e.mu.Lock()
	defer e.mu.Unlock()
	if id == "" {
		ids := make([]string, 0, len(e.machines))
		for id, m := range e.machines {
			if m.state == stateStarted {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return nil, http.StatusServiceUnavailable, "no started machine to serve the request"
		}
		slices.Sort(ids)
		return e.machines[ids[0]], 0, ""
	}
	m := e.machines[id]
	switch {
	case m == nil || m.state == stateDestroyed || m.state == stateDestroying:
		return nil, http.StatusNotFound, "machine " + id + " not found"
	case m.state != stateStarted:
		return m, http.StatusServiceUnavailable, "machine " + id + " is " + m.state + ", not started"
	}
	return m, 0, ""
}

// autostart tells whether m's first service starts it on a request.
func autostart(m *machine) bool {
	return len(m.config.Services) > 0 && m.config.Services[0].Autostart != nil && *m.config.Services[0].Autostart
}

// autostart starts (or resumes) m for a request and waits until it is
// started.
func (e *Emulator) autostart(ctx context.Context, m *machine) (*machine, int, string) {
	e.mu.Lock()
	switch m.state {
	case stateStopped, stateCreated:
		e.setState(m, stateStarting, event("start", "starting", "fly-proxy"))
		e.launch(m, stateStarting)
	case stateSuspended:
		e.setState(m, stateStarting, event("start", "resuming", "fly-proxy"))
		e.resume(m)
	}
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		e.mu.Lock()
		st, ch := m.state, e.changed
		e.mu.Unlock()
		switch st {
		case stateStarted:
			return m, 0, ""
		case stateStarting, stateStopping, stateSuspending:
		default:
			return nil, http.StatusServiceUnavailable, "machine " + m.id + " is " + st + ", not started"
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, http.StatusServiceUnavailable, "machine " + m.id + " did not start in time"
		}
	}
}

// servicePort is the internal port of the first service (0 for none).
func servicePort(c *fly.MachineConfig) int {
	if len(c.Services) == 0 {
		return 0
	}
	return c.Services[0].InternalPort
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// checkStatuses runs m's top-level HTTP and TCP checks once, when it is
// started, and reports them as Fly's machine checks do.
func (e *Emulator) checkStatuses(ctx context.Context, m *fly.Machine) []*fly.MachineCheckStatus {
	if m.Config == nil || len(m.Config.Checks) == 0 {
		return nil
	}
	names := make([]string, 0, len(m.Config.Checks))
	for name := range m.Config.Checks {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]*fly.MachineCheckStatus, 0, len(names))
	for _, name := range names {
		status, output := e.runCheck(ctx, m, m.Config.Checks[name])
		now := time.Now().UTC()
		out = append(out, &fly.MachineCheckStatus{Name: name, Status: status, Output: output, UpdatedAt: &now})
	}
	return out
}

// runCheck probes one check with a 2 s timeout (or the check's own).
func (e *Emulator) runCheck(ctx context.Context, m *fly.Machine, c fly.MachineCheck) (fly.ConsulCheckStatus, string) {
	if m.State != stateStarted || m.PrivateIP == "" || c.Port == nil {
		return fly.Critical, "machine not started"
	}
	timeout := 2 * time.Second
	if c.Timeout != nil && c.Timeout.Duration > 0 {
		timeout = c.Timeout.Duration
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort(m.PrivateIP, strconv.Itoa(*c.Port))
	if c.Type != nil && *c.Type == "tcp" {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return fly.Critical, err.Error()
		}
		_ = conn.Close()
		return fly.Passing, "connected"
	}
	method, path := "GET", "/"
	if c.HTTPMethod != nil {
		method = strings.ToUpper(*c.HTTPMethod)
	}
	if c.HTTPPath != nil {
		path = *c.HTTPPath
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return fly.Critical, err.Error()
	}
	for _, h := range c.HTTPHeaders {
		for _, v := range h.Values {
			req.Header.Add(h.Name, v)
		}
	}
	resp, err := e.proxyTransport.RoundTrip(req)
	if err != nil {
		return fly.Critical, err.Error()
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fly.Critical, resp.Status
	}
	return fly.Passing, resp.Status
}
