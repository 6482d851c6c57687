package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// record is an agent as the Worker reports it (its AgentRecord).
type record struct {
	// ID is the agent's id (its Durable Object's name).
	ID string `json:"id"`
	// Provider is the configured name of the provider that made it.
	Provider string `json:"provider"`
	// SessionID is the session it serves.
	SessionID string `json:"session_id"`
	// Owner is the owner's opaque id.
	Owner string `json:"owner"`
	// Conversation is the client's conversation id.
	Conversation string `json:"conversation"`
	// ConfigID names the agent configuration.
	ConfigID string `json:"config_id"`
	// Pool is the warm-pool entry it was made for.
	Pool string `json:"pool"`
	// CreatedAt is when it was created (RFC 3339).
	CreatedAt string `json:"created_at"`
	// State is "running" or "stopped".
	State string `json:"state"`
	// ObjectID is its Durable Object's id.
	ObjectID string `json:"object_id"`
}

// createRequest is the body of PUT /v1/agents/{id}.
type createRequest struct {
	// Provider is this provider's name.
	Provider string `json:"provider"`
	// SessionID is the session the agent serves.
	SessionID string `json:"session_id"`
	// Owner is the owner's opaque id.
	Owner string `json:"owner"`
	// Conversation is the client's conversation id.
	Conversation string `json:"conversation"`
	// ConfigID names the agent configuration.
	ConfigID string `json:"config_id"`
	// Pool is the warm-pool entry.
	Pool string `json:"pool"`
	// Token is the agent's token (given to the container, not stored).
	Token string `json:"token"`
	// Config is the agent configuration as JSON.
	Config string `json:"config"`
	// Env is extra environment (never an API key).
	Env map[string]string `json:"env,omitempty"`
}

// binding is the session an agent serves, sent with a sleep.
type binding struct {
	// SessionID is the session.
	SessionID string `json:"session_id"`
	// Owner is the owner's opaque id.
	Owner string `json:"owner"`
	// Conversation is the client's conversation id.
	Conversation string `json:"conversation"`
}

// sleepRequest is the body of POST /v1/agents/{id}/sleep.
type sleepRequest struct {
	// Provider is this provider's name.
	Provider string `json:"provider"`
	// Token is the agent's token, for its snapshot.
	Token string `json:"token"`
	// Binding is the session the agent serves now.
	Binding *binding `json:"binding,omitempty"`
}

// wakeRequest is the body of POST /v1/agents/{id}/wake.
type wakeRequest struct {
	// Provider is this provider's name.
	Provider string `json:"provider"`
	// Token is the agent's token for its new container.
	Token string `json:"token"`
}

// apiErr is an answer of the Worker's own that is not a success.
type apiErr struct {
	// Status is the HTTP status.
	Status int
	// Code is the Worker's error code ("unauthorized", "not_found", ...).
	Code string
	// Message is the Worker's explanation.
	Message string
}

func (e *apiErr) Error() string {
	return fmt.Sprintf("the Worker answered HTTP %d (%s): %s", e.Status, e.Code, e.Message)
}

// codeOf is the Worker's error code of err ("" when it is not an answer).
func codeOf(err error) (int, string) {
	var ae *apiErr
	if errors.As(err, &ae) {
		return ae.Status, ae.Code
	}
	return 0, ""
}

// api is the Worker's HTTP client.
type api struct {
	base   string
	secret string
	conns  *http.Transport
	client *http.Client
}

func newAPI(base, secret string, logger *zap.Logger) *api {
	conns := http.DefaultTransport.(*http.Transport).Clone()
	return &api{base: base, secret: secret, conns: conns, client: &http.Client{
		// Cloudflare's 429s are waited out; the Worker answers everything
		// else itself.
		Transport: &providers.RetryTransport{Next: conns, Logger: logger, API: "cloudflare worker"},
	}}
}

// closeIdle releases idle connections.
func (a *api) closeIdle() { a.conns.CloseIdleConnections() }

// do sends a request with the secret and decodes a 2xx JSON answer into
// out (when not nil); any other answer is an *apiErr.
func (a *api) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.secret)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read the Worker's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var eb agent.ErrorBody
		_ = json.Unmarshal(raw, &eb)
		e := &apiErr{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		if e.Code == "" {
			e.Code, e.Message = "unexpected", truncate(string(raw), 200)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode the Worker's answer: %w", err)
	}
	return nil
}

// agentPath is the API path of agent id, with suffix.
func agentPath(id, suffix string) string {
	return "/v1/agents/" + url.PathEscape(id) + suffix
}

// apiError turns an error of the Worker's API for op (on agent id, when
// set) into a clear error wrapping the providers sentinel that fits: an
// unreachable Worker or a refused secret is [providers.ErrUnavailable], an
// agent that is not there (or whose snapshot is lost) [providers.ErrGone],
// an id taken by another agent [providers.ErrExists], a container that did
// not start [providers.ErrNotReady].
func (p *Provider) apiError(op, id string, err error) error {
	what := "cloudflare: " + op
	if id != "" {
		what += " agent " + id
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	status, code := codeOf(err)
	if status == 0 {
		var ne net.Error
		if errors.As(err, &ne) {
			return fmt.Errorf("%s: the Worker is unreachable at %s (%w): %w", what, p.opts.WorkerURL, providers.ErrUnavailable, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	p.logger.Warn("cloudflare worker error", zap.String("op", op), zap.String("instance_id", id),
		zap.Int("status", status), zap.String("code", code), zap.Error(err))
	switch {
	case status == http.StatusUnauthorized:
		return fmt.Errorf("%s: the Worker refused the secret: check the provider's secret against the Worker's AGCLUSTER_WORKER_SECRET (%w)",
			what, providers.ErrUnavailable)
	case status == http.StatusNotFound || code == "snapshot_lost":
		return fmt.Errorf("%s: %w: %w", what, providers.ErrGone, err)
	case code == "exists":
		// The agent's Durable Object is named by its id (the session id),
		// and its create refuses a second agent under the name.
		return fmt.Errorf("%s: the session has an agent already (%w)", what, providers.ErrExists)
	case code == "other_provider":
		return fmt.Errorf("%s: not an agent of provider %q", what, p.Name())
	case code == "start_failed":
		return fmt.Errorf("%s: %w: %w", what, providers.ErrNotReady, err)
	case status >= 500:
		return fmt.Errorf("%s: %w: %w", what, providers.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// parseTime reads the Worker's timestamps (RFC 3339; zero if absent).
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// truncate shortens s to at most n bytes for messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
