package anthropictest_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// ask sends body to path and returns the answer's text (all text blocks)
// and the step the mock says answered it.
func ask(t *testing.T, srv *anthropictest.Server, path string, body map[string]any) (string, int) {
	t.Helper()
	var text string
	if stream, _ := body["stream"].(bool); stream {
		resp := post(t, testContext(t), srv.URL()+path, body)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		for _, b := range reassemble(t, readAllEvents(t, resp.Body)) {
			if b.Start["type"] == "text" {
				text += b.Text
			}
		}
	} else {
		resp := post(t, testContext(t), srv.URL()+path, body)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		msg := decodeJSON(t, resp)
		for _, c := range msg["content"].([]any) {
			if c := c.(map[string]any); c["type"] == "text" {
				text += c["text"].(string)
			}
		}
	}
	reqs := srv.Requests()
	require.NotEmpty(t, reqs)
	return text, reqs[len(reqs)-1].MatchedStep
}

func text(s string) anthropictest.Response { return anthropictest.Response{Text: s} }

func toolResult(content any, userTexts ...string) map[string]any {
	blocks := []any{map[string]any{"type": "tool_result", "tool_use_id": "toolu_1", "content": content}}
	for _, s := range userTexts {
		blocks = append(blocks, map[string]any{"type": "text", "text": s})
	}
	return map[string]any{
		"model": "claude-test-1", "stream": false,
		"messages": []any{
			map[string]any{"role": "user", "content": "Run it"},
			map[string]any{"role": "assistant", "content": []any{map[string]any{
				"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": map[string]any{"command": "ls"},
			}}},
			map[string]any{"role": "user", "content": blocks},
		},
	}
}

func TestStepMatching(t *testing.T) {
	type call struct {
		path     string // default /v1/messages
		body     map[string]any
		want     string
		wantStep int
	}
	withModel := func(model string) map[string]any {
		b := request(false, "hi")
		b["model"] = model
		return b
	}
	blocksBody := map[string]any{"model": "m", "messages": []any{
		map[string]any{"role": "user", "content": "first question"},
		map[string]any{"role": "assistant", "content": "answer"},
		map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "text", "text": "List the"},
			map[string]any{"type": "image", "source": map[string]any{}},
			map[string]any{"type": "text", "text": "files"},
		}},
	}}
	tests := []struct {
		name   string
		script anthropictest.Script
		calls  []call
	}{
		{
			name:  "empty script answers OK",
			calls: []call{{body: request(false, "hi"), want: "OK", wantStep: -1}},
		},
		{
			name:   "custom default",
			script: anthropictest.Script{Default: &anthropictest.Response{Text: "Hi!"}},
			calls:  []call{{body: request(true, "hi"), want: "Hi!", wantStep: -1}},
		},
		{
			name: "empty match fits any messages request, once",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Response: text("first")},
			}},
			calls: []call{
				{body: request(false, "a"), want: "first", wantStep: 0},
				{body: request(false, "a"), want: "OK", wantStep: -1},
			},
		},
		{
			name: "path_prefix",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{PathPrefix: "/v1/messages/special"}, Response: text("special")},
			}},
			calls: []call{
				{body: request(false, "a"), want: "OK", wantStep: -1},
				{path: "/v1/messages/special", body: request(false, "a"), want: "special", wantStep: 0},
			},
		},
		{
			name: "stream",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{Stream: new(true)}, Response: text("streamed"), Times: anthropictest.Unlimited},
				{Match: anthropictest.Match{Stream: new(false)}, Response: text("whole"), Times: anthropictest.Unlimited},
			}},
			calls: []call{
				{body: request(true, "a"), want: "streamed", wantStep: 0},
				{body: request(false, "a"), want: "whole", wantStep: 1},
				{body: map[string]any{"messages": []any{}}, want: "whole", wantStep: 1}, // no stream key
			},
		},
		{
			name: "model_contains",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{ModelContains: "haiku"}, Response: text("small")},
			}},
			calls: []call{
				{body: withModel("claude-opus-5-5"), want: "OK", wantStep: -1},
				{body: withModel("claude-haiku-4-5"), want: "small", wantStep: 0},
			},
		},
		{
			name: "last_user_text_contains",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{LastUserTextContains: "first"}, Response: text("one")},
				{Match: anthropictest.Match{LastUserTextContains: "the\nfiles"}, Response: text("joined")},
			}},
			calls: []call{
				// "first" is only in an earlier user message.
				{body: blocksBody, want: "joined", wantStep: 1},
				{body: request(false, "the first"), want: "one", wantStep: 0},
			},
		},
		{
			name: "any_text_contains sees Python-style JSON",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{AnyTextContains: `"max_tokens": 1024`}, Response: text("python style")},
			}},
			calls: []call{
				{body: withModel("x"), want: "python style", wantStep: 0},
				{body: map[string]any{"messages": []any{}}, want: "OK", wantStep: -1},
			},
		},
		{
			name: "has_tool_result",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{HasToolResult: new(false)}, Response: text("no result")},
				{Match: anthropictest.Match{HasToolResult: new(true)}, Response: text("result")},
			}},
			calls: []call{
				{body: toolResult("out"), want: "result", wantStep: 1},
				{body: request(false, "hi"), want: "no result", wantStep: 0},
			},
		},
		{
			name: "min_messages",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{MinMessages: 3}, Response: text("long")},
			}},
			calls: []call{
				{body: request(false, "a", "b"), want: "OK", wantStep: -1},
				{body: request(false, "a", "b", "c"), want: "long", wantStep: 0},
			},
		},
		{
			name: "all conditions must hold",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Match: anthropictest.Match{ModelContains: "test", LastUserTextContains: "go", MinMessages: 2}, Response: text("all")},
			}},
			calls: []call{
				{body: request(false, "go"), want: "OK", wantStep: -1},
				{body: request(false, "x", "y", "stop"), want: "OK", wantStep: -1},
				{body: request(false, "x", "y", "go"), want: "all", wantStep: 0},
			},
		},
		{
			name: "times, then the next matching step, then the default",
			script: anthropictest.Script{Steps: []anthropictest.Step{
				{Response: text("twice"), Times: 2},
				{Response: text("once")},
			}},
			calls: []call{
				{body: request(false, "a"), want: "twice", wantStep: 0},
				{body: request(true, "a"), want: "twice", wantStep: 0},
				{body: request(false, "a"), want: "once", wantStep: 1},
				{body: request(false, "a"), want: "OK", wantStep: -1},
			},
		},
		{
			name: "unlimited",
			script: anthropictest.Script{
				Steps:   []anthropictest.Step{{Match: anthropictest.Match{LastUserTextContains: "again"}, Response: text("always"), Times: -1}},
				Default: &anthropictest.Response{Text: "default"},
			},
			calls: []call{
				{body: request(false, "again"), want: "always", wantStep: 0},
				{body: request(false, "again"), want: "always", wantStep: 0},
				{body: request(false, "other"), want: "default", wantStep: -1},
				{body: request(false, "again"), want: "always", wantStep: 0},
				{body: request(true, "again"), want: "always", wantStep: 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := anthropictest.NewServer(t, tt.script)
			for i, c := range tt.calls {
				path := c.path
				if path == "" {
					path = "/v1/messages"
				}
				got, step := ask(t, srv, path, c.body)
				assert.Equal(t, c.want, got, "call %d", i)
				assert.Equal(t, c.wantStep, step, "call %d", i)
			}
		})
	}
}

func TestSetScriptAndReset(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Steps: []anthropictest.Step{{Response: text("one")}}})
	got, _ := ask(t, srv, "/v1/messages", request(false, "a"))
	assert.Equal(t, "one", got)
	got, _ = ask(t, srv, "/v1/messages", request(false, "a"))
	assert.Equal(t, "OK", got)

	srv.Reset()
	assert.Empty(t, srv.Requests())
	got, _ = ask(t, srv, "/v1/messages", request(false, "a"))
	assert.Equal(t, "one", got, "Reset restores the step's uses")
	assert.Equal(t, 1, srv.Requests()[0].Seq, "Reset restarts numbering")

	script := anthropictest.Script{Steps: []anthropictest.Step{{Response: text("two")}}}
	srv.SetScript(script)
	script.Steps[0].Response.Text = "changed afterwards"
	got, _ = ask(t, srv, "/v1/messages", request(false, "a"))
	assert.Equal(t, "two", got, "SetScript copies the script")
	assert.Len(t, srv.Requests(), 2, "SetScript keeps recorded requests")
}
