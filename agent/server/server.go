// Package server is the agent's HTTP API: health, queries streamed as
// Server-Sent Events, the results of the client's function calls,
// interrupts, workspace files and process statistics. Every endpoint but
// GET /health requires the container's bearer token.
//
// A turn whose model calls the client's own functions (QueryRequest.Tools)
// ends its stream with a client_tool_calls event and waits; POST
// /tool_results with their results continues the same turn in a new
// stream. GET /health and GET /stats report such a turn as busy (it holds
// the CLI), as they do a turn that runs on after its client left; a new
// POST /query is nevertheless accepted then: it abandons the waiting calls
// and runs once the old turn has ended.
package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/claude"
	"github.com/agcluster/caddy-agcluster/agent/clienttools"
	"github.com/agcluster/caddy-agcluster/agent/statefile"
	"github.com/agcluster/caddy-agcluster/agent/workspace"
	"github.com/agcluster/caddy-agcluster/internal/relay"
)

// Options configure a [Server].
type Options struct {
	// Token is the bearer token every endpoint but /health requires.
	Token string
	// Runner runs turns on the CLI.
	Runner *claude.Runner
	// SetKey hands a turn's API key to the credential proxy.
	SetKey func(key string)
	// DefaultKey is used when a query carries no key ("" = a key is required).
	DefaultKey string
	// Workspace confines the file endpoints.
	Workspace *workspace.Workspace
	// ClaudeVersion is reported by /health.
	ClaudeVersion string
	// MaxFileBytes caps PUT /files uploads (default 100 MiB).
	MaxFileBytes int64
	// MaxQueryBytes caps POST /query and POST /tool_results bodies
	// (default 48 MiB: a gateway's 32 MiB request of images, as JSON).
	MaxQueryBytes int64
	// MaxTreeEntries caps GET /files listings (default 10000).
	MaxTreeEntries int
	// KeepAlive is the silence after which a ": keep-alive" comment is sent
	// on a query stream (default 15s).
	KeepAlive time.Duration
	// Logger receives request logs; nil discards them.
	Logger *zap.Logger
	// State, if not nil, keeps the binding across restarts of the agent: a
	// saved binding is in force from the start, and PUT /binding saves it
	// before it answers.
	State *statefile.Store
	// StateDir is the agent's state directory (AGENT_STATE_DIR), which GET
	// /snapshot includes; nil: the snapshot holds the workspace only.
	StateDir *workspace.Workspace
}

// Server is the agent's HTTP API.
type Server struct {
	opts    Options
	token   []byte
	started time.Time
	mux     *http.ServeMux

	bindMu  sync.Mutex
	binding *agent.Binding // set once by PUT /binding

	transcriptMu sync.Mutex
	transcript   *agent.Transcript // the latest PUT /transcript, also in the state file

	claim sleepClaim // a gateway's claim to put the agent to sleep

	cpuMu   sync.Mutex
	cpuAt   time.Time // when cpuLast was read
	cpuLast float64   // CPU seconds at cpuAt
}

// New builds the server's routes.
func New(opts Options) (*Server, error) {
	if opts.Token == "" {
		return nil, errors.New("server: a token is required")
	}
	if opts.Runner == nil || opts.Workspace == nil || opts.SetKey == nil {
		return nil, errors.New("server: Runner, Workspace and SetKey are required")
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = 100 << 20
	}
	if opts.MaxQueryBytes <= 0 {
		opts.MaxQueryBytes = 48 << 20
	}
	if opts.MaxTreeEntries <= 0 {
		opts.MaxTreeEntries = 10000
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Server{opts: opts, token: []byte(opts.Token), started: time.Now(), mux: http.NewServeMux()}
	saved := opts.State.Get()
	s.binding, s.transcript = saved.Binding, saved.Transcript
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.Handle("POST /query", s.auth(s.query))
	s.mux.Handle("POST /tool_results", s.auth(s.toolResults))
	s.mux.Handle("POST /interrupt", s.auth(s.interrupt))
	s.mux.Handle("GET /stats", s.auth(s.stats))
	s.mux.Handle("GET /files", s.auth(s.tree))
	s.mux.Handle("GET /files/{path...}", s.auth(s.readFile))
	s.mux.Handle("PUT /files/{path...}", s.auth(s.writeFile))
	s.mux.Handle("GET /archive", s.auth(s.archive))
	s.mux.Handle("GET /snapshot", s.auth(s.snapshot))
	s.mux.Handle("GET /binding", s.auth(s.getBinding))
	s.mux.Handle("PUT /binding", s.auth(s.putBinding))
	s.mux.Handle("POST /sleep_claim", s.auth(s.claimSleep))
	s.mux.Handle("DELETE /sleep_claim", s.auth(s.releaseSleep))
	s.mux.Handle("GET /transcript", s.auth(s.getTranscript))
	s.mux.Handle("PUT /transcript", s.auth(s.putTranscript))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// ServeHTTP serves the API. Every response carries [agent.HeaderServer].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(agent.HeaderServer, "1")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) auth(h http.HandlerFunc) http.Handler { return requireToken(s.token, h) }

// requireToken answers 401 to requests without the bearer token and
// passes the others to h.
func requireToken(token []byte, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="agcluster-agent"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
			return
		}
		h(w, r)
	})
}

// maxHealthWait bounds GET /health?wait=.
const maxHealthWait = 30 * time.Second

// health answers at once, or with ?wait=<duration> (at most 30s) as soon
// as the CLI is ready or the wait is over: a control plane waiting for a
// new agent learns of its readiness the moment it happens, without polling.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("wait"); v != "" {
		wait, err := time.ParseDuration(v)
		if err != nil || wait < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("wait %q: want a duration such as 5s", v))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), min(wait, maxHealthWait))
		_ = s.opts.Runner.WaitReady(ctx) // the answer below says how it went
		cancel()
	}
	state, sessionID, startErr := s.opts.Runner.Status()
	h := agent.Health{
		Status:        string(state),
		ClaudeVersion: s.opts.ClaudeVersion,
		SessionID:     sessionID,
		Busy:          s.opts.Runner.Busy(),
		Resumed:       s.opts.Runner.Resumed(),
	}
	if startErr != nil {
		h.Error = startErr.Error()
	}
	status := http.StatusOK
	if state != claude.StateReady {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	var q agent.QueryRequest
	if !decodeBody(w, r, &q, s.opts.MaxQueryBytes, `query body must be JSON {"prompt": string, "api_key"?: string, "tools"?: [...], ...}`) {
		return
	}
	if strings.TrimSpace(q.Prompt) == "" && len(q.Images) == 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "prompt must be a non-empty string")
		return
	}
	if err := clienttools.Validate(q.Tools, q.ToolChoice); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := checkImages(q.Images); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := s.opts.Runner.CheckBranch(q.Branch); err != nil {
		writeError(w, http.StatusBadRequest, "unknown_turn", "branch.after: "+err.Error()+": no turn of this conversation has that id")
		return
	}
	key, ok := s.apiKey(w, r, q.APIKey)
	if !ok {
		return
	}
	var turn *claude.Turn
	if !s.beginUnlessSleeping(w, func() bool {
		var err error
		if turn, err = s.opts.Runner.Begin(); err != nil {
			writeError(w, http.StatusConflict, "busy", "a turn is already running in this agent; wait for it to finish or POST /interrupt")
			return false
		}
		return true
	}) {
		return
	}
	s.opts.SetKey(key)
	s.stream(w, r, "query", func(ctx context.Context, emit func(agent.Event) error) error {
		return turn.Run(ctx, q, emit)
	})
}

// toolResults answers the client's function calls a turn waits for and
// streams the rest of that turn.
func (s *Server) toolResults(w http.ResponseWriter, r *http.Request) {
	var tr agent.ToolResultsRequest
	if !decodeBody(w, r, &tr, s.opts.MaxQueryBytes, `tool results body must be JSON {"results": [{"id": string, "content": string, "is_error"?: bool}], "api_key"?: string}`) {
		return
	}
	key, ok := s.apiKey(w, r, tr.APIKey)
	if !ok {
		return
	}
	turn, err := s.opts.Runner.Waiting()
	if err != nil {
		writeError(w, http.StatusConflict, "no_pending_tool_calls", "no turn is waiting for the results of client tool calls")
		return
	}
	s.opts.SetKey(key)
	s.stream(w, r, "tool_results", func(ctx context.Context, emit func(agent.Event) error) error {
		return turn.Continue(ctx, tr.Results, emit)
	})
}

// decodeBody decodes a request's JSON body of at most limit bytes into v
// (no unknown fields), or answers 400 (with want, what the body should
// be) or 413 and reports false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, limit int64, want string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body is larger than %d bytes", mbe.Limit))
		return false
	}
	writeError(w, http.StatusBadRequest, "bad_request", want+": "+err.Error())
	return false
}

// apiKey is the Anthropic API key of a request: from its body, else its
// X-Api-Key header, else the agent's default. Without one it answers 400
// and reports false.
func (s *Server) apiKey(w http.ResponseWriter, r *http.Request, inBody string) (string, bool) {
	for _, key := range []string{inBody, r.Header.Get("X-Api-Key"), s.opts.DefaultKey} {
		if key != "" {
			return key, true
		}
	}
	writeError(w, http.StatusBadRequest, "no_api_key", "no Anthropic API key: send api_key in the body or an X-Api-Key header")
	return "", false
}

// stream answers with the event stream run produces (a turn, or the rest
// of one, for the endpoint named by what). When run fails to start, the
// stream still ends with an error event.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, what string, run func(ctx context.Context, emit func(agent.Event) error) error) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sse := newSSEWriter(w)
	_ = sse.Flush()

	started := time.Now()
	var final agent.Event
	_ = relay.Produce(r.Context(), sse, relay.Options{KeepAlive: s.opts.KeepAlive}, func(send func(agent.Event) error) error {
		err := run(r.Context(), func(e agent.Event) error {
			final = e
			return send(e)
		})
		if err != nil {
			// The turn never started (the CLI is not ready, or the client
			// left while it loaded) or ended before the results reached
			// it: the stream still ends with an error event.
			final = agent.Event{Type: agent.EventError, Seq: 1, Code: agent.CodeInternal, Message: err.Error()}
			_ = send(final)
		}
		return nil
	})
	s.opts.Logger.Info("turn stream ended",
		zap.String("endpoint", what),
		zap.String("outcome", string(final.Type)),
		zap.String("code", final.Code),
		zap.Duration("duration", time.Since(started)))
}

// imageTypes are the media types the Anthropic API takes in image blocks.
var imageTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true}

// checkImages refuses images the API would refuse: another media type, or
// data that is not standard base64.
func checkImages(images []agent.Image) error {
	for i, img := range images {
		if !imageTypes[img.MediaType] {
			return fmt.Errorf("images[%d]: media_type %q: want image/png, image/jpeg, image/gif or image/webp", i, img.MediaType)
		}
		if img.Data == "" {
			return fmt.Errorf("images[%d]: data is empty", i)
		}
		if _, err := base64.StdEncoding.DecodeString(img.Data); err != nil {
			return fmt.Errorf("images[%d]: data is not standard base64: %v", i, err)
		}
	}
	return nil
}

func (s *Server) interrupt(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"interrupted": s.opts.Runner.Interrupt()})
}

// subPath reads the optional ?path= sub-directory of tree and archive
// requests; on a bad path it answers 400 and reports false.
func subPath(w http.ResponseWriter, r *http.Request) (string, bool) {
	sub := r.URL.Query().Get("path")
	if sub == "" {
		return "", true
	}
	clean, err := workspace.CleanPath(sub)
	if err != nil {
		writeWorkspaceError(w, err)
		return "", false
	}
	return clean, true
}

func (s *Server) tree(w http.ResponseWriter, r *http.Request) {
	sub, ok := subPath(w, r)
	if !ok {
		return
	}
	entries, err := s.opts.Workspace.Tree(sub, s.opts.MaxTreeEntries)
	truncated := errors.Is(err, workspace.ErrTooMany)
	if err != nil && !truncated {
		writeWorkspaceError(w, err)
		return
	}
	if entries == nil {
		entries = []workspace.Entry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries, "truncated": truncated})
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("path")
	f, info, err := s.opts.Workspace.OpenFile(p)
	if err != nil {
		writeWorkspaceError(w, err)
		return
	}
	defer f.Close()
	name := path.Base(p)
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	if v, _ := strconv.ParseBool(r.URL.Query().Get("download")); v {
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, name, info.ModTime(), f)
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("path")
	overwrite, _ := strconv.ParseBool(r.URL.Query().Get("overwrite"))
	if r.ContentLength > s.opts.MaxFileBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("file is larger than the %d-byte limit", s.opts.MaxFileBytes))
		return
	}
	n, err := s.opts.Workspace.Write(p, r.Body, s.opts.MaxFileBytes, overwrite)
	if err != nil {
		if errors.Is(err, workspace.ErrTooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("file is larger than the %d-byte limit", s.opts.MaxFileBytes))
			return
		}
		if errors.Is(err, workspace.ErrExists) {
			writeError(w, http.StatusConflict, "exists", fmt.Sprintf("%s already exists; PUT with ?overwrite=true to replace it", p))
			return
		}
		writeWorkspaceError(w, err)
		return
	}
	clean, _ := workspace.CleanPath(p)
	writeJSON(w, http.StatusCreated, map[string]any{"path": clean, "size": n})
}

func (s *Server) archive(w http.ResponseWriter, r *http.Request) {
	sub, ok := subPath(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="workspace.tar.gz"`)
	if err := s.opts.Workspace.Archive(r.Context(), sub, w); err != nil && !errors.Is(err, context.Canceled) {
		// Headers are gone; cutting the stream short tells the client the
		// archive is incomplete (gzip's trailer is missing).
		s.opts.Logger.Warn("archive failed", zap.Error(err))
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	st := agent.Stats{
		Agent:         readProcessStats(0),
		Turns:         s.opts.Runner.Turns(),
		Busy:          s.opts.Runner.Busy(),
		UptimeSeconds: time.Since(s.started).Seconds(),
		Restarts:      s.opts.Runner.Restarts(),
		Cgroup:        readCgroupStats(),
	}
	if pid := s.opts.Runner.PID(); pid > 0 {
		st.Claude = readProcessStats(pid)
	}
	cpu := st.Agent.CPUSeconds + st.Claude.CPUSeconds
	if st.Cgroup != nil {
		cpu = st.Cgroup.CPUSeconds
	}
	st.CPUPercent = s.cpuPercent(cpu)
	writeJSON(w, http.StatusOK, st)
}

// cpuPercent turns a CPU-seconds reading into percent of one CPU since
// the previous reading (since start for the first).
func (s *Server) cpuPercent(cpu float64) float64 {
	now := time.Now()
	s.cpuMu.Lock()
	defer s.cpuMu.Unlock()
	since, base := s.started, 0.0
	if !s.cpuAt.IsZero() && cpu >= s.cpuLast {
		since, base = s.cpuAt, s.cpuLast
	}
	s.cpuAt, s.cpuLast = now, cpu
	elapsed := now.Sub(since).Seconds()
	if elapsed <= 0 {
		return 0
	}
	return (cpu - base) / elapsed * 100
}

// sseWriter writes agent events as Server-Sent Events, one JSON object
// per data line: the relay's sink for a query stream.
type sseWriter struct {
	w   io.Writer
	rc  *http.ResponseController
	buf bytes.Buffer  // one SSE event, reused
	enc *json.Encoder // writes into buf
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	s := &sseWriter{w: w, rc: http.NewResponseController(w)}
	s.enc = json.NewEncoder(&s.buf)
	return s
}

// Write writes e as one SSE event (flushed by Flush).
func (s *sseWriter) Write(e agent.Event) error {
	s.buf.Reset()
	s.buf.WriteString("data: ")
	if err := s.enc.Encode(e); err != nil { // the JSON and a newline
		return fmt.Errorf("encode event: %w", err)
	}
	s.buf.WriteByte('\n')
	_, err := s.w.Write(s.buf.Bytes())
	return err
}

// KeepAlive writes a comment, which readers skip.
func (s *sseWriter) KeepAlive() error {
	_, err := io.WriteString(s.w, ": keep-alive\n\n")
	return err
}

// Flush sends what was written.
func (s *sseWriter) Flush() error { return s.rc.Flush() }

// putBinding hands the agent to one session, once: a warm-pool agent is
// never shared. Repeating the same binding is accepted; another is
// refused with 409. With Options.State the binding is saved before it is
// accepted, so it outlives a restart of the agent.
func (s *Server) putBinding(w http.ResponseWriter, r *http.Request) {
	var b agent.Binding
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "binding body must be JSON {\"session_id\", \"owner\", \"conversation\"}: "+err.Error())
		return
	}
	if b.SessionID == "" || b.Owner == "" || b.Conversation == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "session_id, owner and conversation are all required")
		return
	}
	s.bindMu.Lock()
	defer s.bindMu.Unlock()
	if s.binding != nil && *s.binding != b {
		writeError(w, http.StatusConflict, "already_bound",
			fmt.Sprintf("this agent already serves session %q; an agent is never handed out twice", s.binding.SessionID))
		return
	}
	if s.binding == nil {
		// Saved first: an agent that forgot its binding when restarted
		// could be handed out again.
		if err := s.opts.State.Update(func(st *statefile.State) { st.Binding = &b }); err != nil {
			s.opts.Logger.Error("binding not saved", zap.Error(err))
			writeError(w, http.StatusInternalServerError, "internal", "the binding could not be saved: "+err.Error())
			return
		}
		s.binding = &b
		s.opts.Logger.Info("agent bound", zap.String("session_id", b.SessionID))
	}
	writeJSON(w, http.StatusOK, agent.BindingState{Bound: true, Binding: s.binding})
}

// maxTranscriptBytes caps a PUT /transcript body.
const maxTranscriptBytes = 1 << 20

// putTranscript keeps the gateways' record of the conversation (see
// agent.Transcript), saved in the state file before it answers so that it
// outlives a sleep.
func (s *Server) putTranscript(w http.ResponseWriter, r *http.Request) {
	var t agent.Transcript
	if !decodeBody(w, r, &t, maxTranscriptBytes, "transcript body must be a JSON transcript") {
		return
	}
	s.transcriptMu.Lock()
	defer s.transcriptMu.Unlock()
	if err := s.opts.State.Update(func(st *statefile.State) { st.Transcript = &t }); err != nil {
		s.opts.Logger.Error("transcript not saved", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal", "the transcript could not be saved: "+err.Error())
		return
	}
	s.transcript = &t
	w.WriteHeader(http.StatusNoContent)
}

// getTranscript answers the transcript last put (an empty one before).
func (s *Server) getTranscript(w http.ResponseWriter, _ *http.Request) {
	s.transcriptMu.Lock()
	t := s.transcript.Clone()
	s.transcriptMu.Unlock()
	if t == nil {
		t = &agent.Transcript{}
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) getBinding(w http.ResponseWriter, _ *http.Request) {
	s.bindMu.Lock()
	defer s.bindMu.Unlock()
	writeJSON(w, http.StatusOK, agent.BindingState{Bound: s.binding != nil, Binding: s.binding})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, agent.ErrorBody{Error: agent.ErrorDetail{Code: code, Message: msg}})
}

func writeWorkspaceError(w http.ResponseWriter, err error) {
	status := workspace.HTTPStatus(err)
	code := "invalid_path"
	switch status {
	case http.StatusNotFound:
		code = "not_found"
	case http.StatusConflict:
		code = "exists"
	case http.StatusRequestEntityTooLarge:
		code = "too_large"
	case http.StatusInternalServerError:
		code = "internal"
	}
	writeError(w, status, code, err.Error())
}
