package module

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/agenttest"
	"github.com/agcluster/caddy-agcluster/internal/anthropic"
	"github.com/agcluster/caddy-agcluster/openai"
)

// Internal detail the failures below carry: none of it may reach a client.
var secrets = []string{"172.17.0.3", "connection reset", "heap out of memory", "signal: killed", "dial tcp", "connection refused", "127.0.0.1"}

// requestIDIn returns the id in a "(request id <id>)" note, or "".
func requestIDIn(s string) string {
	_, after, ok := strings.Cut(s, "(request id ")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(after, ")")
	return id
}

// TestTurnErrorsNameTheRequest: a broken agent stream and an internal
// agent error end the client's answer (streamed or not) with a fixed note
// naming the request id, and none of the detail, which is logged under
// that id. Errors meant for the user pass as they are.
func TestTurnErrorsNameTheRequest(t *testing.T) {
	hello := agent.Event{Type: agent.EventTextDelta, Seq: 1, Text: "Hello"}
	broken := func(events ...agent.Event) io.Reader {
		return agenttest.BrokenAfter(strings.NewReader(agenttest.SSE(events...)), errors.New("read tcp 172.17.0.1:40000->172.17.0.3:8080: read: connection reset by peer"))
	}
	internal := agent.Event{Type: agent.EventError, Seq: 2, Code: agent.CodeInternal,
		Message: "the Claude Code process exited during the turn (signal: killed: FATAL ERROR: heap out of memory)"}
	auth := agent.Event{Type: agent.EventError, Seq: 2, Code: agent.CodeAuth, Message: "the Anthropic API rejected the API key (HTTP 401)"}
	tests := []struct {
		name      string
		body      func() io.Reader
		stream    bool
		status    int    // of a non-streamed answer
		says      string // in the answer
		concealed bool
		released  bool // by the sink, on the turn's end
	}{
		{"streamed, agent stream broke off", func() io.Reader { return broken(hello) }, true, 200, "broke off", true, false},
		{"streamed, internal agent error", func() io.Reader { return strings.NewReader(agenttest.SSE(hello, internal)) }, true, 200, "The agent failed during this turn", true, true},
		{"streamed, an error meant for the user", func() io.Reader { return strings.NewReader(agenttest.SSE(hello, auth)) }, true, 200, "rejected the API key", false, true},
		{"complete, agent stream broke off", func() io.Reader { return broken(hello) }, false, 200, "broke off", true, false},
		{"complete, broke off before any output", func() io.Reader { return broken() }, false, 500, "broke off", true, false},
		{"complete, internal agent error first", func() io.Reader { return strings.NewReader(agenttest.SSE(internal)) }, false, 500, "The agent failed during this turn", true, true},
		{"complete, an error meant for the user", func() io.Reader { return strings.NewReader(agenttest.SSE(auth)) }, false, 401, "rejected the API key", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			h := &Handler{logger: zap.New(core)}
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
			st := agentclient.NewStream(io.NopCloser(tc.body()))
			releases := 0
			release := func() { releases++ }
			opts := openai.Options{Model: "agent"}
			var content string
			if tc.stream {
				content = h.streamTurn(rec, r, st, relayedTurn{release: release, opts: opts}).content
				assert.True(t, strings.HasSuffix(rec.Body.String(), "data: [DONE]\n\n"), "the stream ends cleanly")
			} else {
				content = h.completeTurn(rec, r, st, relayedTurn{release: release, opts: opts}).content
				releases-- // completeTurn releases once more, after the turn
				assert.Equal(t, tc.status, rec.Code)
			}
			body := rec.Body.String()
			assert.Contains(t, body, tc.says)
			for _, s := range secrets {
				assert.NotContains(t, body, s)
				assert.NotContains(t, content, s)
			}
			id := requestIDIn(body)
			if tc.concealed {
				require.NotEmpty(t, id, body)
				assert.Equal(t, 1, logs.FilterField(zap.String("request_id", id)).Len(), "the detail is logged under the id")
				if rec.Code != http.StatusOK {
					assert.Equal(t, id, rec.Header().Get("X-Request-ID"))
				}
			} else {
				assert.Empty(t, id)
				assert.Zero(t, logs.Len())
			}
			if tc.released {
				assert.Equal(t, 1, releases, "released when the turn's end was seen")
			} else {
				assert.Zero(t, releases)
			}
		})
	}
}

// TestTaskCallFailureNamesTheRequest: a background task whose API call
// fails (here: nothing listens) gets a fixed message with the request id.
func TestTaskCallFailureNamesTheRequest(t *testing.T) {
	initMetrics()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	core, logs := observer.New(zapcore.InfoLevel)
	h := &Handler{logger: zap.New(core), direct: &anthropic.Client{BaseURL: "http://" + addr}, DirectModel: "m"}
	req, perr := openai.ParseChatCompletionRequest(strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Title?"}]}`), 1<<20)
	require.Nil(t, perr)
	rec := httptest.NewRecorder()
	h.task(rec, httptest.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil), req, "sk-ant-test")

	assert.Equal(t, http.StatusBadGateway, rec.Code)
	for _, s := range append(secrets, addr) {
		assert.NotContains(t, rec.Body.String(), s)
	}
	id := rec.Header().Get("X-Request-ID")
	require.NotEmpty(t, id)
	assert.Equal(t, id, requestIDIn(rec.Body.String()))
	assert.Equal(t, 1, logs.FilterField(zap.String("request_id", id)).Len())
}

// TestIsTask: background requests are told by header, by model and by the
// beginning of their message; conversation turns are not.
func TestIsTask(t *testing.T) {
	title := "Provide a concise, 5-word-or-less title for the conversation, using title case conventions. Only return the title itself.\n\nConversation:\nUser: hi\nAI: hello"
	tests := []struct {
		name    string
		header  string
		model   string
		message string
		prompts []string
		want    bool
	}{
		{"a turn", "", "agent", "Write a title for my essay", nil, false},
		{"Open WebUI's task header", "title_generation", "agent", "anything", nil, true},
		{"a task model", "", "haiku-title", "anything", nil, true},
		{"LibreChat's title prompt on the chat's model", "", "agent", title, nil, true},
		{"the prompt quoted inside a message is a turn", "", "agent", "Why does LibreChat send \"" + title + "\"?", nil, false},
		{"recognition by content off", "", "agent", title, []string{"off"}, false},
		{"an operator's own prompt", "", "agent", "Summarise in 3 tags: x", []string{"Summarise in 3 tags"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{TaskModels: []string{"haiku-title"}, TaskPrompts: tt.prompts}
			if h.TaskPrompts == nil {
				h.TaskPrompts = defaultTaskPrompts
			}
			body := `{"model":` + strconv.Quote(tt.model) + `,"messages":[{"role":"user","content":` + strconv.Quote(tt.message) + `}]}`
			req, perr := openai.ParseRequest(strings.NewReader(body), openai.ParseOptions{})
			require.Nil(t, perr)
			r := httptest.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
			if tt.header != "" {
				r.Header.Set("X-OpenWebUI-Task", tt.header)
			}
			assert.Equal(t, tt.want, h.isTask(r, req))
		})
	}
}
