package agentsapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/agenttest"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/session"
)

// Internal detail the failures below carry: none of it may reach a client.
var secrets = []string{"127.0.0.1", "32768", "dial tcp", "connection refused", "3f2a9c1b7e4d", "unix:///var/run/docker.sock",
	"/workspace/.git", "input/output error", "heap out of memory", "172.17.0.3", "connection reset", "bearer token"}

// requests are the two ways a request arrives: through Caddy (its
// {http.request.uuid} is the id) and outside it (a generated id).
func requests(t *testing.T) map[string]func() (*http.Request, string) {
	return map[string]func() (*http.Request, string){
		"through caddy": func() (*http.Request, string) {
			r := httptest.NewRequest(http.MethodPost, "http://gw/api/agents/launch", nil)
			repl := caddy.NewReplacer()
			r = caddyhttp.PrepareRequest(r, repl, nil, &caddyhttp.Server{})
			id, ok := repl.GetString("http.request.uuid")
			require.True(t, ok)
			return r, id
		},
		"outside caddy": func() (*http.Request, string) {
			return httptest.NewRequest(http.MethodPost, "http://gw/api/agents/launch", nil), ""
		},
	}
}

func agentResponse(status int, body string) *http.Response {
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(body))}
}

// TestInternalErrorsNameTheRequest: a provider, engine or agent failure
// gives the client a fixed message with the request id (also in
// X-Request-ID) and none of the detail, which is logged under that id.
func TestInternalErrorsNameTheRequest(t *testing.T) {
	dial := errors.New(`Post "http://127.0.0.1:32768/query": dial tcp 127.0.0.1:32768: connect: connection refused`)
	tests := []struct {
		name   string
		err    func(h *Handler, r *http.Request) *openai.Error
		status int
		says   string // part of the fixed message
	}{
		{"engine unreachable", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, fmt.Errorf("docker: engine unreachable at unix:///var/run/docker.sock (%w): %w", providers.ErrUnavailable, dial))
		}, http.StatusServiceUnavailable, "unreachable"},
		{"image missing", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, fmt.Errorf("%w: No such image: sha256:3f2a9c1b7e4d", providers.ErrImageMissing))
		}, http.StatusServiceUnavailable, "image"},
		{"agent never ready", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, fmt.Errorf("%w (last: container 3f2a9c1b7e4d exited: heap out of memory)", providers.ErrNotReady))
		}, http.StatusBadGateway, "did not start"},
		{"agent gone", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, fmt.Errorf("%w: container 3f2a9c1b7e4d", providers.ErrGone))
		}, http.StatusNotFound, "no longer exists"},
		{"any other session failure", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, fmt.Errorf("docker: create 3f2a9c1b7e4d: %w", dial))
		}, http.StatusInternalServerError, "could not get an agent"},
		{"query not answered", func(h *Handler, r *http.Request) *openai.Error {
			return QueryError(h.opts.Logger, r, dial)
		}, http.StatusBadGateway, "did not answer"},
		{"file call not answered", func(h *Handler, r *http.Request) *openai.Error {
			return h.unreachable(r, dial)
		}, http.StatusBadGateway, "did not answer"},
		{"agent failed a file call", func(h *Handler, r *http.Request) *openai.Error {
			return h.agentError(r, agentResponse(500, `{"error":{"code":"internal","message":"open /workspace/.git/index: input/output error"}}`))
		}, http.StatusInternalServerError, "failed to answer"},
		{"agent refused the gateway's token", func(h *Handler, r *http.Request) *openai.Error {
			return h.agentError(r, agentResponse(401, `{"error":{"code":"unauthorized","message":"missing or wrong bearer token"}}`))
		}, http.StatusBadGateway, "failed to answer"},
		{"an answer that is not the agent's", func(h *Handler, r *http.Request) *openai.Error {
			return h.agentError(r, agentResponse(404, "dial tcp 127.0.0.1:32768: connection refused"))
		}, http.StatusBadGateway, "failed to answer"},
	}
	for via, newRequest := range requests(t) {
		for _, tc := range tests {
			t.Run(via+"/"+tc.name, func(t *testing.T) {
				core, logs := observer.New(zapcore.InfoLevel)
				h := New(Options{Logger: zap.New(core)})
				r, caddyID := newRequest()
				rec := httptest.NewRecorder()
				tc.err(h, r).Write(rec)

				assert.Equal(t, tc.status, rec.Code)
				id := rec.Header().Get("X-Request-ID")
				require.NotEmpty(t, id)
				if caddyID != "" {
					assert.Equal(t, caddyID, id, "Caddy's request id")
				}
				var body struct{ Error map[string]any }
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
				assert.Len(t, body.Error, 4, "the OpenAI error shape")
				msg := body.Error["message"].(string)
				assert.Contains(t, msg, "(request id "+id+")")
				assert.Contains(t, msg, tc.says)
				for _, s := range secrets {
					assert.NotContains(t, rec.Body.String(), s)
				}

				entries := logs.FilterField(zap.String("request_id", id)).All()
				require.Len(t, entries, 1, "the detail is logged under the request id")
				assert.NotEmpty(t, entries[0].ContextMap()["error"])
			})
		}
	}
}

// TestCallerErrorsKeepTheirMessage: errors about the caller's own request
// or sessions are not internal: their message is sent as it is, without a
// request id, and nothing is logged.
func TestCallerErrorsKeepTheirMessage(t *testing.T) {
	tests := []struct {
		name   string
		err    func(h *Handler, r *http.Request) *openai.Error
		status int
		want   string
	}{
		{"busy", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, fmt.Errorf("%w: a turn is already running in this conversation; wait for it to finish", session.ErrBusy))
		}, http.StatusConflict, "a turn is already running in this conversation; wait for it to finish"},
		{"limit", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, fmt.Errorf("%w: you already have 3 conversations, the most allowed; delete one to start another", session.ErrLimit))
		}, http.StatusTooManyRequests, "you already have 3 conversations"},
		{"not found", func(h *Handler, r *http.Request) *openai.Error {
			return h.sessionError(r, session.ErrNotFound)
		}, http.StatusNotFound, "session not found"},
		{"agent busy", func(h *Handler, r *http.Request) *openai.Error {
			return QueryError(h.opts.Logger, r, &agentclient.APIError{Status: http.StatusConflict, Code: "busy"})
		}, http.StatusConflict, "a turn is already running"},
		{"no such file", func(h *Handler, r *http.Request) *openai.Error {
			return h.agentError(r, agentResponse(404, `{"error":{"code":"not_found","message":"notes.txt does not exist"}}`))
		}, http.StatusNotFound, "notes.txt does not exist"},
		{"file exists", func(h *Handler, r *http.Request) *openai.Error {
			return h.agentError(r, agentResponse(409, `{"error":{"code":"exists","message":"a.txt already exists; PUT with ?overwrite=true to replace it"}}`))
		}, http.StatusConflict, "a.txt already exists"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			h := New(Options{Logger: zap.New(core)})
			rec := httptest.NewRecorder()
			tc.err(h, httptest.NewRequest(http.MethodGet, "http://gw/", nil)).Write(rec)
			assert.Equal(t, tc.status, rec.Code)
			assert.Contains(t, rec.Body.String(), tc.want)
			assert.NotContains(t, rec.Body.String(), "request id")
			assert.Empty(t, rec.Header().Get("X-Request-ID"))
			assert.Zero(t, logs.Len())
		})
	}
}

// TestChatStreamConcealsInternalErrors: the management API's event stream
// ends cleanly when the agent's stream breaks off, and carries no internal
// detail: neither the connection's error nor an internal agent error's
// message, which are logged under the request id the stream names.
func TestChatStreamConcealsInternalErrors(t *testing.T) {
	hello := agent.Event{Type: agent.EventTextDelta, Seq: 1, Text: "Hello"}
	tests := []struct {
		name      string
		body      io.Reader
		lastCode  string
		lastMsg   string // part of the final event's message
		concealed bool
	}{
		{"agent stream broke off", agenttest.BrokenAfter(strings.NewReader(agenttest.SSE(hello)), errors.New("read tcp 172.17.0.1:40000->172.17.0.3:8080: read: connection reset by peer")),
			agent.CodeInternal, "broke off", true},
		{"internal agent error", strings.NewReader(agenttest.SSE(hello, agent.Event{Type: agent.EventError, Seq: 2, Code: agent.CodeInternal,
			Message: "the Claude Code process exited during the turn (signal: killed: FATAL ERROR: heap out of memory)"})),
			agent.CodeInternal, "The agent failed during this turn", true},
		{"an error meant for the user", strings.NewReader(agenttest.SSE(hello, agent.Event{Type: agent.EventError, Seq: 2, Code: agent.CodeAuth,
			Message: "the Anthropic API rejected the API key (HTTP 401)"})),
			agent.CodeAuth, "rejected the API key", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			h := New(Options{Logger: zap.New(core)})
			ends, bodyAtEnd := 0, ""
			rec := httptest.NewRecorder()
			st := agentclient.NewStream(io.NopCloser(tc.body))
			h.relayTurn(rec, httptest.NewRequest(http.MethodPost, "http://gw/api/agents/sessions/s/chat", nil), st, func(string, *agent.Result) { ends, bodyAtEnd = ends+1, rec.Body.String() })

			out := agentclient.NewStream(io.NopCloser(strings.NewReader(rec.Body.String())))
			var got []agent.Event
			for {
				e, err := out.Next()
				if err != nil {
					require.ErrorIs(t, err, io.EOF, "the client's stream ends cleanly")
					break
				}
				got = append(got, e)
			}
			require.Len(t, got, 2)
			assert.Equal(t, hello, got[0])
			last := got[1]
			assert.Equal(t, agent.EventError, last.Type)
			assert.Equal(t, tc.lastCode, last.Code)
			assert.Contains(t, last.Message, tc.lastMsg)
			for _, s := range secrets {
				assert.NotContains(t, rec.Body.String(), s)
			}
			if tc.concealed {
				i := strings.Index(last.Message, "(request id ")
				require.GreaterOrEqual(t, i, 0, last.Message)
				id := strings.TrimSuffix(last.Message[i+len("(request id "):], ").")
				assert.Equal(t, 1, logs.FilterField(zap.String("request_id", id)).Len(), "the detail is logged under the id")
			} else {
				assert.Zero(t, logs.Len())
			}
			assert.Equal(t, 1, ends, "the turn is ended once")
			assert.Contains(t, rec.Body.String(), `"type":"error"`)
			assert.NotContains(t, bodyAtEnd, `"type":"error"`, "and before its last event is written")
		})
	}
}
