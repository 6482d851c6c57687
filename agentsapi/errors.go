package agentsapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/session"
)

// Errors carry no internal detail (an agent's log lines, container ids,
// engine messages, Go errors) to clients: the detail is logged with the
// request's id under "request_id", and the client gets a fixed message
// that says what to do and names that id. Messages about the caller's own
// request (validation, its sessions, its limits) are not internal and are
// sent as they are.

// RequestID returns the id of r: Caddy's {http.request.uuid}, which
// Caddy's access log also shows (as "uuid"), or outside Caddy a new
// random id. Outside Caddy every call makes a new id: call it once per
// failure.
func RequestID(r *http.Request) string {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok && repl != nil {
		if id, ok := repl.GetString("http.request.uuid"); ok && id != "" {
			return id
		}
	}
	return rand.Text()
}

// Internal returns e for a failure whose detail is internal: err is logged
// with msg under the request's id, and e (whose message says what to do)
// names that id.
func Internal(log *zap.Logger, r *http.Request, e *openai.Error, msg string, err error) *openai.Error {
	id := RequestID(r)
	log.Error(msg, zap.String("request_id", id), zap.Error(err))
	return e.WithRequestID(id)
}

// SessionError maps a session manager error to an HTTP error. Busy, limit
// and not-found errors are about the caller's own sessions and keep their
// message; provider and engine failures are internal (see [Internal]). A
// client error the request's session.Request.Admit refused with is
// answered as is.
func SessionError(log *zap.Logger, r *http.Request, err error) *openai.Error {
	var refused *openai.Error
	switch {
	case errors.As(err, &refused):
		return refused
	case errors.Is(err, session.ErrBusy):
		return openai.Busy(err.Error())
	case errors.Is(err, session.ErrLimit):
		return openai.RateLimited(err.Error())
	case errors.Is(err, session.ErrNotFound):
		return notFound(err.Error())
	case errors.Is(err, providers.ErrGone):
		return Internal(log, r, notFound("The session's agent no longer exists; start a new conversation."), "agent gone", err)
	case errors.Is(err, context.Canceled):
		return openai.Internal("the request was cancelled")
	case errors.Is(err, session.ErrClosed):
		return openai.Unavailable("The gateway is shutting down; try again in a moment.")
	case errors.Is(err, providers.ErrUnavailable):
		return Internal(log, r, openai.Unavailable("The platform that runs the agents is unreachable or refused the gateway; try again in a moment, or tell its operator."),
			"provider unavailable", err)
	case errors.Is(err, providers.ErrImageMissing):
		return Internal(log, r, openai.Unavailable("The agent image cannot be found by the platform that runs the agents; tell the gateway's operator."),
			"agent image missing", err)
	case errors.Is(err, providers.ErrNotReady):
		return Internal(log, r, openai.Upstream("The conversation's agent did not start; try again."),
			"agent not ready", err)
	}
	return Internal(log, r, openai.Internal("The gateway could not get an agent for this conversation; try again, or tell its operator."),
		"session failed", err)
}

// QueryError maps a failure to start a turn on an agent to an HTTP error:
// 409 when a turn is already running, else an internal 502.
func QueryError(log *zap.Logger, r *http.Request, err error) *openai.Error {
	if errors.Is(err, agentclient.ErrBusy) {
		return openai.Busy("a turn is already running in this conversation")
	}
	return Internal(log, r, openai.Upstream("The conversation's agent did not answer; try again."), "agent query failed", err)
}

// StreamBroke is the note that ends a client's stream when the agent's
// stream broke off; the detail is logged under id.
func StreamBroke(id string) string {
	return openai.WithRequestID("The connection to the agent broke off; send your message again.", id)
}

// ConcealAgentError hides the message of an agent error event with code
// "internal" (the CLI's exit status and stderr, the agent's Go errors):
// it is logged under id and replaced by a fixed message naming id. Other
// codes carry messages meant for the user (the API refused the key, rate
// limits, interruptions, timeouts) and are left as they are. id is called
// only when needed.
func ConcealAgentError(log *zap.Logger, id func() string, e *agent.Event) {
	if e.Type != agent.EventError || e.Code != agent.CodeInternal {
		return
	}
	rid := id()
	log.Error("agent turn failed", zap.String("request_id", rid), zap.String("agent_message", e.Message))
	e.Message = openai.WithRequestID("The agent failed during this turn; send your message again.", rid)
}

// agentError turns an agent's error answer into this API's shape. A 4xx
// answer with the agent's JSON error body is about the caller's request
// (no such file, the file exists, a bad path, too large) and keeps its
// status and message; anything else (5xx, the agent refusing the
// gateway's token, a body that is not the agent's) is internal.
func (h *Handler) agentError(r *http.Request, resp *http.Response) *openai.Error {
	var eb agent.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ok := json.Unmarshal(b, &eb) == nil && eb.Error.Message != ""
	if !ok || resp.StatusCode >= 500 || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode < 400 {
		status := resp.StatusCode
		if status < 500 {
			status = http.StatusBadGateway
		}
		e := Internal(h.opts.Logger, r, openai.Upstream("The session's agent failed to answer this request; try again."),
			"agent request failed", errors.New(strings.TrimSpace(string(b))))
		e.Status = status
		return e
	}
	code := eb.Error.Code
	e := openai.BadRequest(eb.Error.Message, "")
	e.Status = resp.StatusCode
	e.Code = &code
	switch resp.StatusCode {
	case http.StatusNotFound:
		e.Type = "not_found_error"
	case http.StatusConflict:
		e.Type = "conflict_error"
	case http.StatusRequestEntityTooLarge:
		e.Type = "request_too_large"
	}
	return e
}

// unreachable is the error for an agent that did not answer a request.
func (h *Handler) unreachable(r *http.Request, err error) *openai.Error {
	return Internal(h.opts.Logger, r, openai.Upstream("The session's agent did not answer; try again."), "agent did not answer", err)
}

func (h *Handler) sessionError(r *http.Request, err error) *openai.Error {
	return SessionError(h.opts.Logger, r, err)
}
