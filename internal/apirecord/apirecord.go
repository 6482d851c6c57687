// Package apirecord records the requests an emulated platform API
// receives: each request with its matched route, headers, body and the
// status answered, counts per route, and counts of the requests a proxy
// routed per target. The platform emulators (internal/flyemu,
// internal/vercelemu) expose these records to tests.
package apirecord

import (
	"context"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Request is one API request as an emulator received it.
type Request struct {
	// Time is when it arrived.
	Time time.Time
	// Method and URI are the request line (URI with its query).
	Method, URI string
	// Route is the matched route pattern, e.g. "POST /v3/sandboxes"
	// (see [SetRoute]), or "" when none matched.
	Route string
	// Header holds every header as sent (Authorization included).
	Header http.Header
	// Body is the request body, up to the recorder's BodyKeep bytes.
	Body []byte
	// BodySize is the body's full size in bytes.
	BodySize int64
	// Status is the HTTP status answered.
	Status int
}

// drainMax is how much of a body the handler left unread the recorder
// still reads to learn its size.
const drainMax = 1 << 20

// Recorder records API requests and proxied requests. The zero value is
// not ready: make one with [New]. Its methods are safe for concurrent use.
type Recorder struct {
	bodyKeep int

	mu       sync.Mutex
	requests []Request
	calls    map[string]int
	proxied  map[string]int
}

// New returns a recorder that keeps the first bodyKeep bytes of each
// request body.
func New(bodyKeep int) *Recorder {
	return &Recorder{bodyKeep: bodyKeep, calls: map[string]int{}, proxied: map[string]int{}}
}

type routeKey struct{}

// SetRoute names the route pattern that matched r, for the record of r
// (a no-op for a request the recorder did not see).
func SetRoute(r *http.Request, pattern string) {
	if route, ok := r.Context().Value(routeKey{}).(*string); ok {
		*route = pattern
	}
}

// Handler records every request next serves: its route (see [SetRoute]),
// status and (the start of) its body, read as next reads it.
func (rec *Recorder) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		capture := &captureBody{r: r.Body, keep: rec.bodyKeep}
		r.Body = capture
		route := new(string)
		r = r.WithContext(context.WithValue(r.Context(), routeKey{}, route))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		_, _ = io.Copy(io.Discard, io.LimitReader(capture, drainMax)) // what the handler did not read
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.requests = append(rec.requests, Request{Time: time.Now(), Method: r.Method, URI: r.URL.RequestURI(),
			Route: *route, Header: r.Header.Clone(), Body: capture.kept, BodySize: capture.n, Status: sw.status()})
		rec.calls[*route]++
	})
}

// Requests returns every API request recorded so far.
func (rec *Recorder) Requests() []Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.requests)
}

// Calls counts the API requests recorded per route ("" counts requests
// no route matched), whatever their answer.
func (rec *Recorder) Calls() map[string]int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return maps.Clone(rec.calls)
}

// TotalCalls is the number of API requests recorded.
func (rec *Recorder) TotalCalls() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.requests)
}

// Proxied counts one proxied request routed to target.
func (rec *Recorder) Proxied(target string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.proxied[target]++
}

// ProxiedRequests counts the proxied requests per target.
func (rec *Recorder) ProxiedRequests() map[string]int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return maps.Clone(rec.proxied)
}

// Reset forgets the requests and counts recorded so far.
func (rec *Recorder) Reset() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.requests = nil
	rec.calls = map[string]int{}
	rec.proxied = map[string]int{}
}

// captureBody keeps the first keep bytes read through it and counts all.
type captureBody struct {
	r    io.ReadCloser
	keep int
	kept []byte
	n    int64
}

func (c *captureBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if room := c.keep - len(c.kept); room > 0 {
		c.kept = append(c.kept, p[:min(n, room)]...)
	}
	return n, err
}

func (c *captureBody) Close() error { return c.r.Close() }

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush passes a flush through (streamed answers).
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
