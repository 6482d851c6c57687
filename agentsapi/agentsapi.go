// Package agentsapi is the agent management API: launch agents from
// configuration templates, list and stop the caller's sessions, chat with
// the agent's typed event stream, move files in and out of its workspace,
// and read its resource use. Every route is owner-scoped: another owner's
// session is a 404. Errors are OpenAI-shaped, like the rest of the gateway.
package agentsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/docker/go-units"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/configs"
	"github.com/agcluster/caddy-agcluster/internal/relay"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/session"
)

// Caller is who makes a request: an owner id and the Anthropic key to use.
type Caller struct {
	// Owner is the opaque owner id.
	Owner string
	// Key is the Anthropic API key for turns.
	Key string
}

// Options configure a [Handler].
type Options struct {
	// Manager owns the sessions.
	Manager *session.Manager
	// Configs are the configuration templates.
	Configs *configs.Store
	// Provider picks the provider for a new session: the one requested
	// (a launch's "provider"; empty for none), else the configuration's,
	// else the default. An unknown name is a 400 that lists the configured
	// ones.
	Provider func(requested string, cfg *agent.Config) (string, *openai.Error)
	// Providers describes the configured providers for GET /api/providers.
	Providers func(ctx context.Context) any
	// Identify returns the request's caller; a returned error is written as is.
	Identify func(r *http.Request, bodyKey string) (Caller, *openai.Error)
	// Admit, when set, checks the caller's quotas before a turn of the
	// configuration, or a new conversation of it, starts; a returned error
	// is written as is.
	Admit func(c Caller, configID string, newConversation bool) *openai.Error
	// Record, when set, is told of every launch (result nil,
	// newConversation true) and every turn that ran, however it ended: its
	// result (nil when it reported none) and how long the session was held
	// for it.
	Record func(c Caller, s *session.Session, result *agent.Result, held time.Duration, newConversation bool)
	// Usage, when set, answers GET /api/agents/usage (r, whose query has
	// from, to, group_by) for the caller.
	Usage func(r *http.Request, c Caller) (any, *openai.Error)
	// MaxUploadBytes caps one uploaded file (default 50 MiB).
	MaxUploadBytes int64
	// MaxUploadFiles caps the files of one multipart upload (default 50).
	MaxUploadFiles int
	// MaxUploadTotal caps a multipart upload (default 200 MiB).
	MaxUploadTotal int64
	// KeepAlive is the silence after which chat streams get a comment
	// (default 10s).
	KeepAlive time.Duration
	// Logger receives errors; nil discards them.
	Logger *zap.Logger
}

// Handler serves /api/agents/*, /api/configs* and /api/providers.
type Handler struct {
	opts Options
	mux  *http.ServeMux
	doc  map[string]any // the OpenAPI document
}

// New builds the routes.
func New(opts Options) *Handler {
	if opts.MaxUploadBytes <= 0 {
		opts.MaxUploadBytes = 50 << 20
	}
	if opts.MaxUploadFiles <= 0 {
		opts.MaxUploadFiles = 50
	}
	if opts.MaxUploadTotal <= 0 {
		opts.MaxUploadTotal = 200 << 20
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	h := &Handler{opts: opts, mux: http.NewServeMux(), doc: OpenAPI()}
	for _, r := range routes {
		h.mux.HandleFunc(r.Method+" "+r.Pattern, r.handler(h))
	}
	h.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		notFound(fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)).Write(w)
	})
	return h
}

// Handles reports whether path belongs to this API.
func Handles(path string) bool {
	return strings.HasPrefix(path, "/api/agents/") || path == "/api/agents" ||
		path == "/api/configs" || strings.HasPrefix(path, "/api/configs/") || path == "/api/providers"
}

// ServeHTTP serves the API. Paths with ".." elements or empty elements
// (also when percent-encoded) are refused outright rather than cleaned and
// redirected, so a file route never resolves somewhere else.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if strings.Contains(p, "//") || strings.Contains(p, "\x00") || hasDotDot(p) {
		openai.BadRequest(fmt.Sprintf("invalid path %q: \"..\" and empty path elements are not allowed", p), "").Write(w)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func hasDotDot(p string) bool {
	for _, el := range strings.Split(p, "/") {
		if el == ".." || el == "." {
			return true
		}
	}
	return false
}

// route is one endpoint; the table is also the source of the OpenAPI
// document, so the two cannot drift apart.
type route struct {
	Method, Pattern, Summary string
	Owned                    bool // needs a caller and a session it owns
	handler                  func(h *Handler) http.HandlerFunc
}

var routes = []route{
	{Method: "POST", Pattern: "/api/agents/launch", Summary: "Launch an agent from a configuration template or an inline configuration",
		handler: func(h *Handler) http.HandlerFunc { return h.launch }},
	{Method: "GET", Pattern: "/api/agents/sessions", Summary: "List the caller's sessions",
		handler: func(h *Handler) http.HandlerFunc { return h.authed(h.listSessions) }},
	{Method: "GET", Pattern: "/api/agents/sessions/{id}", Summary: "Get one session", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.getSession) }},
	{Method: "DELETE", Pattern: "/api/agents/sessions/{id}", Summary: "Stop a session and remove its container", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.deleteSession) }},
	{Method: "POST", Pattern: "/api/agents/sessions/{id}/interrupt", Summary: "Interrupt the running turn", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.interrupt) }},
	{Method: "POST", Pattern: "/api/agents/sessions/{id}/chat", Summary: "Send a prompt; the agent's typed events stream back as SSE", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.chat) }},
	{Method: "GET", Pattern: "/api/agents/sessions/{id}/files", Summary: "The workspace tree", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.tree) }},
	{Method: "POST", Pattern: "/api/agents/sessions/{id}/files", Summary: "Upload files (multipart/form-data)", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.upload) }},
	{Method: "GET", Pattern: "/api/agents/sessions/{id}/files/{path...}", Summary: "Download a file (?download=1 for an attachment)", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.readFile) }},
	{Method: "PUT", Pattern: "/api/agents/sessions/{id}/files/{path...}", Summary: "Write a file (?overwrite=true to replace)", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.writeFile) }},
	{Method: "GET", Pattern: "/api/agents/sessions/{id}/archive", Summary: "The whole workspace as tar.gz", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.archive) }},
	{Method: "GET", Pattern: "/api/agents/sessions/{id}/resources", Summary: "CPU, memory, pids, uptime, turns", Owned: true,
		handler: func(h *Handler) http.HandlerFunc { return h.owned(h.resources) }},
	{Method: "GET", Pattern: "/api/agents/usage", Summary: "The caller's usage: tokens, cost and agent time per day, config or provider (?from=&to=&group_by=)",
		handler: func(h *Handler) http.HandlerFunc { return h.authed(h.usage) }},
	{Method: "GET", Pattern: "/api/configs", Summary: "List the configuration templates",
		handler: func(h *Handler) http.HandlerFunc { return h.listConfigs }},
	{Method: "GET", Pattern: "/api/configs/{id}", Summary: "Get one configuration template",
		handler: func(h *Handler) http.HandlerFunc { return h.getConfig }},
	{Method: "GET", Pattern: "/api/providers", Summary: "The configured providers: kind, capabilities, health, live and sleeping agents",
		handler: func(h *Handler) http.HandlerFunc { return h.authed(h.listProviders) }},
	{Method: "GET", Pattern: "/api/agents/openapi.json", Summary: "This API as OpenAPI 3",
		handler: func(h *Handler) http.HandlerFunc { return h.openAPI }},
}

type ctxKey int

const (
	callerKey ctxKey = iota
	sessionKey
)

// authed identifies the caller.
func (h *Handler) authed(next func(http.ResponseWriter, *http.Request, Caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := h.opts.Identify(r, "")
		if err != nil {
			err.Write(w)
			return
		}
		next(w, r, c)
	}
}

// owned identifies the caller and finds the session, which must be theirs.
func (h *Handler) owned(next func(http.ResponseWriter, *http.Request, Caller, *session.Session)) http.HandlerFunc {
	return h.authed(func(w http.ResponseWriter, r *http.Request, c Caller) {
		s, err := h.opts.Manager.Find(r.Context(), c.Owner, r.PathValue("id"))
		if err != nil {
			notFound(fmt.Sprintf("no session %q", r.PathValue("id"))).Write(w)
			return
		}
		next(w, r, c, s)
	})
}

func notFound(msg string) *openai.Error {
	e := openai.BadRequest(msg, "")
	e.Status = http.StatusNotFound
	e.Type = "not_found_error"
	return e
}

// launchRequest is the body of POST /api/agents/launch.
type launchRequest struct {
	ConfigID string            `json:"config_id"`
	Config   json.RawMessage   `json:"config"`
	Provider string            `json:"provider"`
	MCPEnv   map[string]string `json:"mcp_env"`
	APIKey   string            `json:"api_key"`
}

// SessionView is a session as this API shows it.
type SessionView struct {
	// SessionID identifies the session; send it as X-Session-ID to
	// /chat/completions to continue it.
	SessionID string `json:"session_id"`
	// AgentID is the provider's instance id.
	AgentID string `json:"agent_id"`
	// ConfigID names the configuration.
	ConfigID string `json:"config_id"`
	// Provider names the provider.
	Provider string `json:"provider"`
	// Status is "running", "busy" (a turn runs) or "sleeping" (its agent
	// is stopped with its workspace kept; the next turn wakes it).
	Status string `json:"status"`
	// CreatedAt is when the session started.
	CreatedAt time.Time `json:"created_at"`
	// LastActive is when its last turn ended.
	LastActive time.Time `json:"last_active"`
	// Turns counts its finished turns.
	Turns int64 `json:"turns"`
}

func view(s *session.Session) SessionView {
	return SessionView{SessionID: s.ID, AgentID: s.Instance().ID, ConfigID: s.ConfigID, Provider: s.Provider,
		Status: s.Status(), CreatedAt: s.Created, LastActive: s.LastUsed(), Turns: s.Turns()}
}

func (h *Handler) launch(w http.ResponseWriter, r *http.Request) {
	var req launchRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		openai.BadRequest("launch body must be JSON {config_id | config, provider?, mcp_env?, api_key?}: "+err.Error(), "").Write(w)
		return
	}
	c, oerr := h.opts.Identify(r, req.APIKey)
	if oerr != nil {
		oerr.Write(w)
		return
	}
	var cfg *agent.Config
	switch {
	case req.ConfigID != "" && len(req.Config) > 0:
		openai.BadRequest("send config_id or config, not both", "config").Write(w)
		return
	case req.ConfigID != "":
		var ok bool
		if cfg, ok = h.opts.Configs.Get(req.ConfigID); !ok {
			openai.BadRequest(fmt.Sprintf("unknown config_id %q; GET /api/configs lists them", req.ConfigID), "config_id").Write(w)
			return
		}
	case len(req.Config) > 0:
		var err error
		if cfg, err = agent.ParseConfig(req.Config); err != nil {
			openai.BadRequest(err.Error(), "config").Write(w)
			return
		}
		if cfg.ID == "" {
			cfg.ID = "custom"
		}
	default:
		openai.BadRequest("config_id or config is required", "config_id").Write(w)
		return
	}
	cfg, err := configs.ApplyMCPEnv(cfg, req.MCPEnv)
	if err != nil {
		openai.BadRequest(err.Error(), "mcp_env").Write(w)
		return
	}
	sreq, serr := SessionRequest(c.Owner, cfg)
	if serr != nil {
		serr.Write(w)
		return
	}
	if sreq.Provider, serr = h.opts.Provider(req.Provider, cfg); serr != nil {
		serr.Write(w)
		return
	}
	if oerr := h.admit(c, cfg.ID, true); oerr != nil {
		oerr.Write(w)
		return
	}
	s, err := h.opts.Manager.Launch(r.Context(), sreq)
	if err != nil {
		h.sessionError(r, err).Write(w)
		return
	}
	h.record(c, s, nil, 0, true)
	WriteJSON(w, http.StatusCreated, view(s))
}

// SessionRequest turns a configuration into a session request: its image
// and resources become the container's.
func SessionRequest(owner string, cfg *agent.Config) (session.Request, *openai.Error) {
	req := session.Request{Owner: owner, ConfigID: cfg.ID, Config: cfg, Image: cfg.Image}
	if rs := cfg.Resources; rs != nil {
		if rs.Memory != "" {
			n, err := units.RAMInBytes(rs.Memory)
			if err != nil || n <= 0 {
				return req, openai.BadRequest(fmt.Sprintf("resources.memory %q: want a size such as 2g", rs.Memory), "config")
			}
			req.Limits.MemoryBytes = n
		}
		req.Limits.NanoCPUs = int64(rs.CPUs * 1e9)
		req.Limits.Pids = rs.Pids
		if rs.IdleTimeout != "" {
			d, err := time.ParseDuration(rs.IdleTimeout)
			if err != nil || d < 0 {
				return req, openai.BadRequest(fmt.Sprintf("resources.idle_timeout %q: want a duration such as 30m", rs.IdleTimeout), "config")
			}
			req.IdleTimeout = d
		}
	}
	return req, nil
}

func (h *Handler) listSessions(w http.ResponseWriter, r *http.Request, c Caller) {
	h.opts.Manager.Sync(r.Context())
	out := []SessionView{}
	for _, s := range h.opts.Manager.List(c.Owner) {
		out = append(out, view(s))
	}
	WriteJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

func (h *Handler) getSession(w http.ResponseWriter, _ *http.Request, _ Caller, s *session.Session) {
	WriteJSON(w, http.StatusOK, view(s))
}

func (h *Handler) deleteSession(w http.ResponseWriter, r *http.Request, c Caller, s *session.Session) {
	if err := h.opts.Manager.Delete(c.Owner, s.ID); err != nil {
		h.sessionError(r, err).Write(w)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "deleted": true})
}

func (h *Handler) interrupt(w http.ResponseWriter, r *http.Request, _ Caller, s *session.Session) {
	if s.Asleep() { // no turn runs in a sleeping agent
		WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "interrupted": false})
		return
	}
	ok, err := s.Client().Interrupt(r.Context())
	if err != nil {
		h.unreachable(r, err).Write(w)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "interrupted": ok})
}

// chatBody is the body of POST /api/agents/sessions/{id}/chat.
type chatBody struct {
	// Prompt is the user's message.
	Prompt string `json:"prompt"`
	// Branch, when present, continues the conversation after the turn with
	// this id (a result event's result.turn_id) instead of after the
	// latest turn; "" starts over from the beginning. The turns after it
	// stay in the agent's tree.
	Branch *string `json:"branch,omitempty"`
}

// chat runs one turn and relays the agent's own typed events.
func (h *Handler) chat(w http.ResponseWriter, r *http.Request, c Caller, s *session.Session) {
	var body chatBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&body); err != nil || strings.TrimSpace(body.Prompt) == "" {
		openai.BadRequest(`chat body must be JSON {"prompt": "...", "branch"?: "<turn id>"} with a non-empty prompt`, "prompt").Write(w)
		return
	}
	if oerr := h.admit(c, s.ConfigID, false); oerr != nil {
		oerr.Write(w)
		return
	}
	started := time.Now()
	lease, err := h.opts.Manager.Acquire(r.Context(), session.Request{Owner: c.Owner, SessionID: s.ID})
	if err != nil {
		h.sessionError(r, err).Write(w)
		return
	}
	q := agent.QueryRequest{Prompt: body.Prompt, APIKey: c.Key}
	if body.Branch != nil {
		q.Branch = &agent.Branch{After: *body.Branch}
	}
	st, err := lease.Turn(r.Context(), q)
	if err != nil {
		lease.Done(session.TurnEnd{})
		QueryError(h.opts.Logger, r, err).Write(w)
		return
	}
	defer st.Close()
	h.relayTurn(w, r, st, func(turnID string, result *agent.Result) {
		lease.Done(session.TurnEnd{TurnID: turnID})
		h.record(c, s, result, time.Since(started), false)
	})
}

// admit asks Options.Admit, if set.
func (h *Handler) admit(c Caller, configID string, newConversation bool) *openai.Error {
	if h.opts.Admit == nil {
		return nil
	}
	return h.opts.Admit(c, configID, newConversation)
}

// record tells Options.Record, if set.
func (h *Handler) record(c Caller, s *session.Session, result *agent.Result, held time.Duration, newConversation bool) {
	if h.opts.Record != nil {
		h.opts.Record(c, s, result, held, newConversation)
	}
}

// usage serves the caller's usage.
func (h *Handler) usage(w http.ResponseWriter, r *http.Request, c Caller) {
	if h.opts.Usage == nil {
		notFound("usage is not recorded by this gateway").Write(w)
		return
	}
	out, oerr := h.opts.Usage(r, c)
	if oerr != nil {
		oerr.Write(w)
		return
	}
	WriteJSON(w, http.StatusOK, out)
}

// relayTurn relays the turn's events from st to the client as SSE. end
// is called once with the finished turn's id and its result (its usage;
// nil when it reported none): as soon as the turn's end is seen, before
// the client reads it (so the session takes the next turn at once, and
// what the turn leaves is recorded before the client can ask again), or
// after the relay when no end came (the client left, the stream broke).
func (h *Handler) relayTurn(w http.ResponseWriter, r *http.Request, st relay.Source[agent.Event], end func(turnID string, result *agent.Result)) {
	openai.SetStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	sink := &eventSink{w: w, flush: rc.Flush, end: end, log: h.opts.Logger, r: r}
	defer sink.finish()
	err := relay.Copy[agent.Event](r.Context(), sink, st, relay.Options{KeepAlive: h.opts.KeepAlive})
	var we *relay.WriteError
	if err == nil || errors.As(err, &we) || r.Context().Err() != nil {
		return
	}
	rid := sink.requestID()
	h.opts.Logger.Warn("agent stream broke", zap.String("request_id", rid), zap.Error(err))
	sink.finish()
	if sink.event(agent.Event{Type: agent.EventError, Code: agent.CodeInternal, Message: StreamBroke(rid)}) == nil {
		_ = sink.Flush()
	}
}

// eventSink writes agent events as SSE, one JSON event per data line, for
// the relay. It ends the turn (end) as soon as the turn's end is seen,
// before the client reads it, and conceals internal errors.
type eventSink struct {
	w      io.Writer
	flush  func() error
	end    func(turnID string, result *agent.Result)
	ended  bool
	log    *zap.Logger
	r      *http.Request
	rid    string
	buf    []byte
	turnID string        // the finished turn's id, from its result event
	result *agent.Result // the turn's usage, from its result (or error) event
}

// finish ends the turn with what the sink saw of it, once.
func (s *eventSink) finish() {
	if !s.ended {
		s.ended = true
		s.end(s.turnID, s.result)
	}
}

// requestID is the request's id, the same for every use.
func (s *eventSink) requestID() string {
	if s.rid == "" {
		s.rid = RequestID(s.r)
	}
	return s.rid
}

func (s *eventSink) Write(e agent.Event) error {
	if e.Type == agent.EventResult && e.Result != nil {
		s.turnID = e.Result.TurnID
	}
	if (e.Type == agent.EventResult || e.Type == agent.EventError) && e.Result != nil {
		s.result = e.Result
	}
	if e.Type == agent.EventResult || e.Type == agent.EventError {
		s.finish()
		ConcealAgentError(s.log, s.requestID, &e)
	}
	return s.event(e)
}

// event writes e as it is.
func (s *eventSink) event(e agent.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	s.buf = append(s.buf[:0], "data: "...)
	s.buf = append(s.buf, b...)
	s.buf = append(s.buf, "\n\n"...)
	_, err = s.w.Write(s.buf)
	return err
}

func (s *eventSink) KeepAlive() error {
	_, err := io.WriteString(s.w, ": keep-alive\n\n")
	return err
}

func (s *eventSink) Flush() error { return s.flush() }

func (h *Handler) tree(w http.ResponseWriter, r *http.Request, _ Caller, s *session.Session) {
	h.relay(w, r, s, http.MethodGet, "/files", r.URL.Query(), nil, nil)
}

func (h *Handler) readFile(w http.ResponseWriter, r *http.Request, _ Caller, s *session.Session) {
	q := url.Values{}
	if d := r.URL.Query().Get("download"); d != "" {
		q.Set("download", d)
	}
	h.relay(w, r, s, http.MethodGet, "/files/"+escapePath(r.PathValue("path")), q, nil, nil)
}

func (h *Handler) writeFile(w http.ResponseWriter, r *http.Request, _ Caller, s *session.Session) {
	q := url.Values{}
	if o := r.URL.Query().Get("overwrite"); o != "" {
		q.Set("overwrite", o)
	}
	if r.ContentLength > h.opts.MaxUploadBytes {
		openai.TooLarge(h.opts.MaxUploadBytes).Write(w)
		return
	}
	body := http.MaxBytesReader(w, r.Body, h.opts.MaxUploadBytes)
	h.relay(w, r, s, http.MethodPut, "/files/"+escapePath(r.PathValue("path")), q, body, nil)
}

func (h *Handler) archive(w http.ResponseWriter, r *http.Request, _ Caller, s *session.Session) {
	h.relay(w, r, s, http.MethodGet, "/archive", r.URL.Query(), nil, nil)
}

// upload writes each file part of a multipart body into the workspace,
// under the directory in the "path" form field (or query), with its
// filename. Nothing is overwritten unless overwrite=true.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request, _ Caller, s *session.Session) {
	if err := h.opts.Manager.Wake(r.Context(), s); err != nil {
		h.sessionError(r, err).Write(w)
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		openai.BadRequest("upload must be multipart/form-data with one or more file parts", "").Write(w)
		return
	}
	if r.ContentLength > h.opts.MaxUploadTotal {
		openai.TooLarge(h.opts.MaxUploadTotal).Write(w)
		return
	}
	mr := multipart.NewReader(http.MaxBytesReader(w, r.Body, h.opts.MaxUploadTotal), params["boundary"])
	dir := r.URL.Query().Get("path")
	overwrite := r.URL.Query().Get("overwrite")
	type written struct {
		Path string `json:"path"`
		Size int64  `json:"size"`
	}
	var files []written
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				openai.TooLarge(h.opts.MaxUploadTotal).Write(w)
				return
			}
			openai.BadRequest("malformed multipart body: "+err.Error(), "").Write(w)
			return
		}
		if part.FileName() == "" {
			if part.FormName() == "path" {
				b, _ := io.ReadAll(io.LimitReader(part, 4096))
				dir = string(b)
			}
			continue
		}
		if len(files) >= h.opts.MaxUploadFiles {
			e := openai.TooLarge(h.opts.MaxUploadTotal)
			e.Message = fmt.Sprintf("at most %d files per upload", h.opts.MaxUploadFiles)
			e.Write(w)
			return
		}
		name := path.Join(dir, part.FileName())
		q := url.Values{}
		if overwrite != "" {
			q.Set("overwrite", overwrite)
		}
		resp, err := s.Client().Forward(r.Context(), http.MethodPut, "/files/"+escapePath(name), q,
			io.LimitReader(part, h.opts.MaxUploadBytes+1), nil)
		if err != nil {
			h.unreachable(r, err).Write(w)
			return
		}
		var out written
		ok := resp.StatusCode == http.StatusCreated && json.NewDecoder(resp.Body).Decode(&out) == nil
		if !ok {
			h.agentError(r, resp).Write(w)
			resp.Body.Close()
			return
		}
		resp.Body.Close()
		files = append(files, out)
	}
	if len(files) == 0 {
		openai.BadRequest("no file parts in the upload", "").Write(w)
		return
	}
	WriteJSON(w, http.StatusCreated, map[string]any{"files": files})
}

func (h *Handler) resources(w http.ResponseWriter, r *http.Request, _ Caller, s *session.Session) {
	if s.Asleep() { // a sleeping agent uses no CPU or memory; do not wake it to say so
		WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "status": session.StatusSleeping, "cpu_percent": 0.0,
			"memory_used": 0, "memory_limit": 0, "pids": 0, "uptime_seconds": 0, "turns": s.Turns(), "busy": false})
		return
	}
	st, err := s.Client().Stats(r.Context())
	if err != nil {
		h.unreachable(r, err).Write(w)
		return
	}
	out := map[string]any{
		"session_id":     s.ID,
		"cpu_percent":    st.CPUPercent,
		"memory_used":    st.Agent.RSSBytes + st.Claude.RSSBytes,
		"memory_limit":   int64(0),
		"pids":           int64(0),
		"uptime_seconds": st.UptimeSeconds,
		"turns":          st.Turns,
		"busy":           st.Busy,
		"restarts":       st.Restarts,
	}
	if cg := st.Cgroup; cg != nil {
		out["memory_used"], out["memory_limit"], out["pids"] = cg.MemoryBytes, cg.MemoryLimitBytes, cg.Pids
	}
	WriteJSON(w, http.StatusOK, out)
}

func (h *Handler) listProviders(w http.ResponseWriter, r *http.Request, _ Caller) {
	WriteJSON(w, http.StatusOK, map[string]any{"providers": h.opts.Providers(r.Context())})
}

func (h *Handler) listConfigs(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]any{"configs": h.opts.Configs.List()})
}

func (h *Handler) getConfig(w http.ResponseWriter, r *http.Request) {
	c, ok := h.opts.Configs.Get(r.PathValue("id"))
	if !ok {
		notFound(fmt.Sprintf("no config %q", r.PathValue("id"))).Write(w)
		return
	}
	WriteJSON(w, http.StatusOK, c)
}

// relay forwards a request to the session's agent and copies the answer
// back, turning agent errors into this API's error shape.
func (h *Handler) relay(w http.ResponseWriter, r *http.Request, s *session.Session, method, agentPath string, q url.Values, body io.Reader, hdr http.Header) {
	if err := h.opts.Manager.Wake(r.Context(), s); err != nil { // files outlive sleep: wake to reach them
		h.sessionError(r, err).Write(w)
		return
	}
	resp, err := s.Client().Forward(r.Context(), method, agentPath, q, body, hdr)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			openai.TooLarge(mbe.Limit).Write(w)
			return
		}
		h.unreachable(r, err).Write(w)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		h.agentError(r, resp).Write(w)
		return
	}
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Disposition", "Last-Modified", "X-Content-Type-Options"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil && r.Context().Err() == nil {
		h.opts.Logger.Warn("relay from agent broke off", zap.String("path", agentPath), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
}

// escapePath escapes each element of a slash path for a URL.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// WriteJSON answers with status and v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
