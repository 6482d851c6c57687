package anthropictest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultAddr is where [Server.Start] listens when given an empty address:
// the loopback interface, on a free port.
const DefaultAddr = "127.0.0.1:0"

// closeTimeout bounds how long [Server.Close] waits for responses to end.
const closeTimeout = 5 * time.Second

// Server is a scripted mock of the Anthropic Messages API. Create it with
// [New] or [NewServer]; it is safe for concurrent use.
type Server struct {
	mu        sync.Mutex
	script    Script
	remaining []int // uses left per step; negative means unlimited
	requests  []*RecordedRequest
	seq       int
	changed   chan struct{} // closed and replaced whenever requests change
	msgIDs    int
	toolIDs   int
	reqIDs    int

	logMu sync.Mutex
	log   io.Writer

	closing   chan struct{} // closed by Close and Shutdown
	closeOnce sync.Once

	startMu sync.Mutex
	httpSrv *http.Server
	ln      net.Listener
}

// New returns a mock that answers with script. It does not listen yet:
// call [Server.Start], or mount [Server.Handler] on a server of your own.
func New(script Script) *Server {
	s := &Server{
		changed: make(chan struct{}),
		closing: make(chan struct{}),
	}
	s.SetScript(script)
	return s
}

// NewServer returns a mock that answers with script and listens on
// [DefaultAddr]. It is closed when the test ends.
func NewServer(t testing.TB, script Script) *Server {
	t.Helper()
	s := New(script)
	if err := s.Start(DefaultAddr); err != nil {
		t.Fatalf("anthropictest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start listens on addr ([DefaultAddr] when empty) and serves in the
// background until [Server.Close] or [Server.Shutdown].
func (s *Server) Start(addr string) error {
	if addr == "" {
		addr = DefaultAddr
	}
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.httpSrv != nil {
		return errors.New("anthropictest: server already started")
	}
	select {
	case <-s.closing:
		return errors.New("anthropictest: server is closed")
	default:
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("anthropictest: listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
	}
	s.ln, s.httpSrv = ln, srv
	go func() { _ = srv.Serve(ln) }() // returns ErrServerClosed on Close/Shutdown
	return nil
}

// Addr returns the address the server listens on, such as
// "127.0.0.1:40123", or "" when it was not started.
func (s *Server) Addr() string {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns the base URL to put in ANTHROPIC_BASE_URL, such as
// "http://127.0.0.1:40123", or "" when the server was not started.
func (s *Server) URL() string {
	addr := s.Addr()
	if addr == "" {
		return ""
	}
	return "http://" + addr
}

// Handler returns the handler serving the Messages API and the control API,
// for mounting on a server of your own.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

// Close stops the server: streams still running end at their next delay
// or stall, and Close waits (up to 5 s) for them before closing the
// remaining connections. It is safe to call more than once.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = s.Shutdown(ctx)
}

// Shutdown stops the server like [Server.Close] but waits for the
// responses until ctx is done; then it closes the connections and returns
// the context's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.startMu.Lock()
	srv := s.httpSrv
	s.startMu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("anthropictest: shut down: %w", err)
	}
	return nil
}

// SetLog makes the server append a JSON line to w for every request it
// receives ({"type":"request",...}, full body) and every response it
// finishes ({"type":"response_done",...}), like the Python mock's --log.
// Nil stops logging. Write errors are ignored.
func (s *Server) SetLog(w io.Writer) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	s.log = w
}

// SetScript replaces the script; step use counts start afresh. Recorded
// requests are kept.
func (s *Server) SetScript(script Script) {
	script = cloneScript(script)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = script
	s.resetRemainingLocked()
}

// Reset forgets the recorded requests, restarts their numbering and
// restores every step's uses. Generated message and tool ids keep counting
// up, so they stay unique for the life of the server.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
	s.seq = 0
	s.resetRemainingLocked()
	s.notifyLocked()
}

func (s *Server) resetRemainingLocked() {
	s.remaining = make([]int, len(s.script.Steps))
	for i, st := range s.script.Steps {
		switch {
		case st.Times == 0:
			s.remaining[i] = 1
		case st.Times < 0:
			s.remaining[i] = Unlimited
		default:
			s.remaining[i] = st.Times
		}
	}
}

// Requests returns copies of the requests received so far, in order.
func (s *Server) Requests() []RecordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Server) snapshotLocked() []RecordedRequest {
	out := make([]RecordedRequest, len(s.requests))
	for i, r := range s.requests {
		out[i] = r.clone()
	}
	return out
}

// WaitFor blocks until cond holds for the recorded requests or ctx is done.
// cond is called again whenever a request arrives or finishes.
func (s *Server) WaitFor(ctx context.Context, cond func([]RecordedRequest) bool) error {
	if have, err := s.waitFor(ctx, cond); err != nil {
		return fmt.Errorf("anthropictest: wait for requests (have %d): %w", have, err)
	}
	return nil
}

// WaitForRequests blocks until at least n requests have arrived or ctx is
// done.
func (s *Server) WaitForRequests(ctx context.Context, n int) error {
	have, err := s.waitFor(ctx, func(r []RecordedRequest) bool { return len(r) >= n })
	if err != nil {
		return fmt.Errorf("anthropictest: wait for %d requests (have %d): %w", n, have, err)
	}
	return nil
}

// waitFor implements WaitFor; on failure it returns the number of requests
// recorded at the last check and the context's error.
func (s *Server) waitFor(ctx context.Context, cond func([]RecordedRequest) bool) (int, error) {
	for {
		s.mu.Lock()
		reqs := s.snapshotLocked()
		changed := s.changed
		s.mu.Unlock()
		if cond(reqs) {
			return len(reqs), nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return len(reqs), ctx.Err()
		}
	}
}

// notifyLocked wakes up WaitFor callers.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// ID kinds of [Server.nextID].
const (
	idMessage = "msg_01Mock"
	idTool    = "toolu_01Mock"
	idRequest = "req_011Mock"
)

// nextID returns the next id of a kind, such as msg_01Mock0000000000000001.
func (s *Server) nextID(kind string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n *int
	switch kind {
	case idMessage:
		n = &s.msgIDs
	case idTool:
		n = &s.toolIDs
	default:
		n = &s.reqIDs
	}
	*n++
	return fmt.Sprintf("%s%016d", kind, *n)
}

// pick returns the index of the step that answers the request (-1 for the
// default) and its response, using up one of the step's uses.
func (s *Server) pick(path string, req *apiRequest) (int, Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, st := range s.script.Steps {
		if s.remaining[i] == 0 || !st.Match.matches(path, req) {
			continue
		}
		if s.remaining[i] > 0 {
			s.remaining[i]--
		}
		return i, st.Response
	}
	if s.script.Default != nil {
		return -1, *s.script.Default
	}
	return -1, Response{Text: "OK"}
}

// record stores a new request and returns it for [Server.finish].
func (s *Server) record(r *http.Request, at time.Time, body []byte, step int) *RecordedRequest {
	rec := &RecordedRequest{
		Time:        at,
		Method:      r.Method,
		Path:        r.URL.Path,
		Query:       r.URL.RawQuery,
		Header:      r.Header.Clone(),
		Body:        bodyJSON(body),
		MatchedStep: step,
	}
	if r.Host != "" && rec.Header.Get("Host") == "" {
		rec.Header.Set("Host", r.Host) // net/http moves it out of Header
	}
	s.mu.Lock()
	s.seq++
	rec.Seq = s.seq
	s.requests = append(s.requests, rec)
	s.notifyLocked()
	logged := *rec // the fields logRequest reads do not change any more
	s.mu.Unlock()
	s.logRequest(&logged)
	return rec
}

// finish stores the outcome of a recorded request.
func (s *Server) finish(rec *RecordedRequest, status int, aborted bool, d time.Duration) {
	s.mu.Lock()
	rec.Done, rec.Status, rec.ClientAborted, rec.Duration = true, status, aborted, d
	seq := rec.Seq
	s.notifyLocked()
	s.mu.Unlock()
	s.logLine(object{
		{"type", "response_done"}, {"seq", seq}, {"status", status},
		{"client_aborted", aborted}, {"ms", d.Milliseconds()},
	})
}

// logRequest writes the "request" log line of rec.
func (s *Server) logRequest(rec *RecordedRequest) {
	headers := make(map[string]string, len(rec.Header))
	for k, v := range rec.Header {
		headers[k] = strings.Join(v, ", ")
	}
	var step any
	if rec.MatchedStep >= 0 {
		step = rec.MatchedStep
	}
	s.logLine(object{
		{"type", "request"}, {"seq", rec.Seq},
		{"t", float64(rec.Time.UnixMilli()) / 1000},
		{"method", rec.Method}, {"path", rec.Path}, {"query", rec.Query},
		{"headers", headers}, {"matched_step", step}, {"body", rec.Body},
	})
}

// logLine appends one JSON line to the log, if there is one.
func (s *Server) logLine(o object) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.log == nil {
		return
	}
	line, err := marshal(o)
	if err != nil {
		return
	}
	_, _ = s.log.Write(append(line, '\n'))
}

// bodyJSON returns body for [RecordedRequest.Body]: as it is when it is
// valid JSON, nil when empty, and as a JSON string otherwise.
func bodyJSON(body []byte) json.RawMessage {
	switch {
	case len(body) == 0:
		return nil
	case json.Valid(body):
		return json.RawMessage(body)
	default:
		s, _ := json.Marshal(strings.ToValidUTF8(string(body), "\uFFFD"))
		return s
	}
}

// cloneScript returns a copy of script that shares no slices or maps
// with it, so that callers may change theirs afterwards.
func cloneScript(script Script) Script {
	out := Script{Steps: make([]Step, len(script.Steps))}
	if script.Default != nil {
		d := cloneResponse(*script.Default)
		out.Default = &d
	}
	for i, st := range script.Steps {
		st.Match.Stream = clonePtr(st.Match.Stream)
		st.Match.HasToolResult = clonePtr(st.Match.HasToolResult)
		st.Response = cloneResponse(st.Response)
		out.Steps[i] = st
	}
	return out
}

func cloneResponse(r Response) Response {
	if r.Blocks != nil {
		blocks := make([]Block, len(r.Blocks))
		for i, b := range r.Blocks {
			if b.Input != nil {
				b.Input = append(json.RawMessage(nil), b.Input...)
			}
			blocks[i] = b
		}
		r.Blocks = blocks
	}
	r.Usage = maps.Clone(r.Usage)
	if r.Error != nil {
		e := *r.Error
		e.Headers = maps.Clone(e.Headers)
		r.Error = &e
	}
	r.StreamErrorAfterDeltas = clonePtr(r.StreamErrorAfterDeltas)
	r.HangAfterDeltas = clonePtr(r.HangAfterDeltas)
	return r
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
