package module

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/internal/anthropic"
	"github.com/agcluster/caddy-agcluster/openai"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler serves the OpenAI-compatible API: POST /chat/completions and
// GET /models (also under /v1), and GET /health. Each conversation runs in
// its own agent container, provisioned by the agcluster app. Other paths
// go to the next handler.
type Handler struct {
	// Owner is who owns a conversation, as a placeholder such as
	// "{http.auth.user.id}" when Caddy authenticates users. Empty means
	// the bearer key itself identifies the owner (its SHA-256 is used; the
	// key is never stored).
	Owner string `json:"owner,omitempty"`
	// ConversationHeaders are the request headers that carry a
	// conversation id, tried in order. Default X-Conversation-ID,
	// X-Session-ID, X-OpenWebUI-Chat-Id.
	ConversationHeaders []string `json:"conversation_headers,omitempty"`
	// APIKey is the Anthropic key used when a request brings none (a
	// placeholder such as "{env.ANTHROPIC_API_KEY}"). Empty means every
	// request must bring its own key (BYOK).
	APIKey string `json:"api_key,omitempty"`
	// Reasoning sends the agent's thinking as delta.reasoning_content.
	// Default true.
	Reasoning *bool `json:"reasoning,omitempty"`
	// Tools renders the agent's tool calls into the answer: "off",
	// "summary" (default) or "full".
	Tools string `json:"tools,omitempty"`
	// TaskModels are model names that mark background requests (titles,
	// tags) such as LibreChat's titleModel. They, and requests with an
	// X-OpenWebUI-Task header, are answered by a one-shot API call, never
	// by the conversation's agent.
	TaskModels []string `json:"task_models,omitempty"`
	// TaskPrompts are the beginnings of messages that mark background
	// requests whatever their model: a request whose last user message
	// starts with one is answered one-shot too. Default: LibreChat's two
	// title prompts (titleMethod "completion" and "structured"), so its
	// titles never reach an agent even when titleModel is the chat's own
	// model. Set to a single "off" to match by model and header only.
	TaskPrompts []string `json:"task_prompts,omitempty"`
	// DirectModel is the Anthropic model for those one-shot calls.
	// Default claude-haiku-4-5.
	DirectModel string `json:"direct_model,omitempty"`
	// MaxRequestBody caps a request body in bytes. Default 32 MiB (the
	// Anthropic API's own request limit), room for images and files.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`
	// FetchImageHosts are the hosts whose https image URLs the gateway
	// fetches for the model ("*.example.com" for its subdomains). Empty
	// (the default): image URLs are refused; clients send data: URLs.
	FetchImageHosts []string `json:"fetch_image_hosts,omitempty"`
	// KeepAlive is the silence after which a ": keep-alive" comment is
	// sent on a stream. Default 10s.
	KeepAlive caddy.Duration `json:"keep_alive,omitempty"`
	// Dashboard is the path of the operator dashboard (e.g. "/ops"): a
	// live page of every owner's sessions, the providers' health, the warm
	// pool and the usage, with actions to stop a session or interrupt its
	// turn. It is not protected by the gateway: put Caddy's own auth in
	// front of the path. Default: no dashboard.
	Dashboard string `json:"dashboard,omitempty"`

	app    *App
	api    *agentsapi.Handler
	tools  openai.ToolRendering
	direct *anthropic.Client
	logger *zap.Logger
	dash   *dashLook // the dashboard's slow figures, shared by its open pages
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.agcluster",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Defaults.
const (
	defaultDirectModel = "claude-haiku-4-5"
	defaultMaxBody     = 32 << 20
	defaultKeepAlive   = 10 * time.Second
)

var defaultConversationHeaders = []string{"X-Conversation-ID", "X-Session-ID", "X-OpenWebUI-Chat-Id"}

// Provision finds the agcluster app and applies defaults.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	appIface, err := ctx.App("agcluster")
	if err != nil {
		return fmt.Errorf("loading agcluster app: %w", err)
	}
	h.app = appIface.(*App)
	h.dash = new(dashLook)
	if len(h.ConversationHeaders) == 0 {
		h.ConversationHeaders = defaultConversationHeaders
	}
	if h.DirectModel == "" {
		h.DirectModel = defaultDirectModel
	}
	if len(h.TaskPrompts) == 0 {
		h.TaskPrompts = defaultTaskPrompts
	}
	if h.MaxRequestBody <= 0 {
		h.MaxRequestBody = defaultMaxBody
	}
	if h.KeepAlive <= 0 {
		h.KeepAlive = caddy.Duration(defaultKeepAlive)
	}
	h.tools, err = openai.ParseToolRendering(h.Tools)
	if err != nil {
		return fmt.Errorf("agcluster tools: %w", err)
	}
	h.direct = &anthropic.Client{BaseURL: h.app.AnthropicBaseURL}
	h.api = agentsapi.New(agentsapi.Options{
		Manager:   h.app.Manager(),
		Configs:   h.app.Configs(),
		Provider:  h.app.ResolveProvider,
		Providers: func(ctx context.Context) any { return h.app.state.status(ctx) },
		Identify:  h.identify,
		Admit: func(c agentsapi.Caller, config string, isNew bool) *openai.Error {
			return h.app.admit(c.Owner, config, isNew)
		},
		Record:    h.app.recordAPITurn,
		Usage:     func(r *http.Request, c agentsapi.Caller) (any, *openai.Error) { return h.app.ownerUsage(r, c.Owner) },
		KeepAlive: time.Duration(h.KeepAlive),
		Logger:    h.logger.Named("api"),
	})
	return registerMetrics(ctx.GetMetricsRegistry())
}

// refuse answers with an error before any turn ran.
func (h *Handler) refuse(w http.ResponseWriter, e *openai.Error) {
	metrics.requestErrors.WithLabelValues(strconv.Itoa(e.Status)).Inc()
	e.Write(w)
}

// ServeHTTP routes the API's paths and passes the rest on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	path := strings.TrimPrefix(r.URL.Path, "/v1")
	switch {
	case h.dashboardHandles(r.URL.Path):
		h.serveDashboard(w, r)
		return nil
	case path == "/chat/completions":
		if r.Method != http.MethodPost {
			return h.methodNotAllowed(w, http.MethodPost)
		}
		h.chat(w, r)
		return nil
	case path == "/models":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return h.methodNotAllowed(w, http.MethodGet)
		}
		openai.WriteModels(w, h.models())
		return nil
	case r.URL.Path == "/health" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.health(w, r)
		return nil
	case agentsapi.Handles(r.URL.Path):
		h.api.ServeHTTP(w, r)
		return nil
	}
	return next.ServeHTTP(w, r)
}

func (h *Handler) methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	e := openai.BadRequest("method not allowed; use "+allow, "")
	e.Status = http.StatusMethodNotAllowed
	e.Write(w)
	return nil
}

func (h *Handler) models() []openai.Model {
	created := time.Now().Unix()
	var out []openai.Model
	for _, id := range h.app.ModelIDs() {
		out = append(out, openai.Model{ID: id, Object: "model", Created: created, OwnedBy: "agcluster"})
	}
	return out
}

// identify returns the caller of a management API request: the owner and
// the key (bearer, then the body's api_key, then the operator's key).
func (h *Handler) identify(r *http.Request, bodyKey string) (agentsapi.Caller, *openai.Error) {
	repl := replacerOf(r)
	key := requestKey(r, repl, bodyKey, h.APIKey)
	if key == "" {
		return agentsapi.Caller{}, openai.MissingAPIKey()
	}
	owner, err := h.owner(repl, key)
	if err != nil {
		return agentsapi.Caller{}, err
	}
	return agentsapi.Caller{Owner: owner, Key: key}, nil
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	sessions := len(h.app.Manager().List(""))
	_, _ = fmt.Fprintf(w, `{"status":"ok","sessions":%d}`+"\n", sessions)
}

// isTask tells background requests (titles, tags) from conversation turns.
func (h *Handler) isTask(r *http.Request, req *openai.ChatCompletionRequest) bool {
	if r.Header.Get("X-OpenWebUI-Task") != "" {
		return true
	}
	for _, m := range h.TaskModels {
		if strings.EqualFold(m, req.Model) {
			return true
		}
	}
	msg := strings.TrimSpace(req.LastUserText())
	for _, p := range h.TaskPrompts {
		if p != taskPromptsOff && strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// taskPromptsOff as the only task prompt turns recognition by content off.
const taskPromptsOff = "off"

// defaultTaskPrompts are LibreChat's title prompts (@librechat/agents:
// defaultCompletionPrompt and the structured title runnable's prompt).
var defaultTaskPrompts = []string{
	"Provide a concise, 5-word-or-less title for the conversation",
	"Analyze this conversation and provide:\n1. The detected language of the conversation\n2. A concise title",
}

// task answers a background request with a one-shot API call.
func (h *Handler) task(w http.ResponseWriter, r *http.Request, req *openai.ChatCompletionRequest, key string) {
	var msgs []anthropic.Message
	for _, m := range req.Messages {
		role := m.Role
		switch role {
		case "system", "developer":
			continue
		case "tool":
			role = "user"
		}
		text := m.Content.Text()
		if strings.TrimSpace(text) == "" {
			continue
		}
		if n := len(msgs); n > 0 && msgs[n-1].Role == role {
			msgs[n-1].Content += "\n\n" + text
			continue
		}
		msgs = append(msgs, anthropic.Message{Role: role, Content: text})
	}
	if len(msgs) == 0 || msgs[0].Role != "user" {
		msgs = append([]anthropic.Message{{Role: "user", Content: "(no message)"}}, msgs...)
	}
	// The new message's images go with the last user message (a title for
	// a conversation that opens with an image needs it).
	if images := req.Attachments().AgentImages(); len(images) > 0 {
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i].Role == "user" {
				msgs[i].Images = images
				break
			}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	resp, err := h.direct.Complete(ctx, key, anthropic.Request{
		Model: h.DirectModel, System: req.SystemText(), Messages: msgs, MaxTokens: 512,
	})
	if err != nil {
		var ae *anthropic.APIError
		if errors.As(err, &ae) {
			code := agent.CodeForHTTPStatus(ae.Status)
			metrics.tasks.WithLabelValues(outcomeError).Inc()
			openai.FromAgentError(agent.Event{Type: agent.EventError, Code: code, Message: ae.Message}).Write(w)
			return
		}
		metrics.tasks.WithLabelValues(outcomeError).Inc()
		agentsapi.Internal(h.logger, r, openai.Upstream("The background task's API call failed; try again."),
			"background task call failed", err).Write(w)
		return
	}
	metrics.tasks.WithLabelValues(outcomeOK).Inc()
	events := []agent.Event{
		{Type: agent.EventText, Text: resp.Text},
		{Type: agent.EventResult, Result: &agent.Result{StopReason: resp.StopReason, Text: resp.Text,
			Usage: agent.Usage{InputTokens: resp.InputTokens, OutputTokens: resp.OutputTokens}}},
	}
	opts := openai.Options{Model: req.Model, IncludeUsage: req.IncludeUsage(), Tools: openai.ToolsOff}
	if req.Stream {
		openai.SetStreamHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		sw := openai.NewStreamWriter(w, rc.Flush, opts)
		_ = sw.Start()
		for _, e := range events {
			_ = sw.Event(e)
		}
		_ = sw.Finish()
		return
	}
	col := openai.NewCollector(opts)
	for _, e := range events {
		col.Event(e)
	}
	openai.WriteCompletion(w, col.Completion())
}

// owner derives the conversation owner (ownerID, which agcluster_owner
// shares): the configured placeholder, or the key's hash.
func (h *Handler) owner(repl *caddy.Replacer, key string) (string, *openai.Error) {
	return ownerID(repl, h.Owner, key)
}

// maxConversationID bounds a conversation id (it becomes a container label).
const maxConversationID = 256

// conversationID reads the first conversation header present. Ids longer
// than 256 bytes or holding control characters are refused.
func (h *Handler) conversationID(r *http.Request) (string, *openai.Error) {
	for _, name := range h.ConversationHeaders {
		v := strings.TrimSpace(r.Header.Get(name))
		if v == "" {
			continue
		}
		if len(v) > maxConversationID {
			return "", openai.BadRequest(fmt.Sprintf("%s is longer than %d bytes", name, maxConversationID), name)
		}
		if strings.ContainsFunc(v, func(c rune) bool { return c < 0x20 || c == 0x7f }) || !utf8.ValidString(v) {
			return "", openai.BadRequest(name+" must be printable UTF-8 text", name)
		}
		return v, nil
	}
	return "", nil
}

func (h *Handler) acquireError(r *http.Request, err error) *openai.Error {
	return agentsapi.SessionError(h.logger, r, err)
}

func (h *Handler) queryError(r *http.Request, err error) *openai.Error {
	return agentsapi.QueryError(h.logger, r, err)
}

// bearerKey returns the request's API key (Authorization: Bearer, or
// x-api-key as Anthropic clients send it).
func bearerKey(r *http.Request) string {
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(r.Header.Get("X-Api-Key"))
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
