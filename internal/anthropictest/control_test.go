package anthropictest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

func TestRemoteControl(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{})
	ctx := testContext(t)
	remote := &anthropictest.Remote{BaseURL: srv.URL() + "/"}
	require.NoError(t, remote.WaitHealthy(ctx))

	require.NoError(t, remote.SetScript(ctx, anthropictest.Script{
		Steps: []anthropictest.Step{
			{Match: anthropictest.Match{LastUserTextContains: "tool", Stream: new(true)}, Response: anthropictest.Response{
				Blocks: []anthropictest.Block{anthropictest.ToolUse("Bash", map[string]any{"command": "ls"})},
			}},
			{Match: anthropictest.Match{HasToolResult: new(true)}, Response: anthropictest.Response{
				Error: &anthropictest.ErrorResponse{Status: 529, Headers: map[string]string{"retry-after": "0"}},
			}, Times: anthropictest.Unlimited},
		},
		Default: &anthropictest.Response{Text: "remote default"},
	}))

	_, evs := streamEvents(t, srv, request(true, "use a tool"))
	blocks := reassemble(t, evs)
	require.Len(t, blocks, 1)
	assert.Equal(t, "Bash", blocks[0].Start["name"])
	assert.JSONEq(t, `{"command":"ls"}`, blocks[0].Text)
	got, step := ask(t, srv, "/v1/messages", request(false, "anything"))
	assert.Equal(t, "remote default", got)
	assert.Equal(t, -1, step)
	resp := post(t, ctx, srv.URL()+"/v1/messages", toolResult("out"))
	assert.Equal(t, 529, resp.StatusCode)
	assert.Equal(t, "0", resp.Header.Get("Retry-After"))

	require.NoError(t, remote.WaitForRequests(ctx, 3))
	reqs, err := remote.Requests(ctx)
	require.NoError(t, err)
	require.Len(t, reqs, 3, "control requests are not recorded")
	local := srv.Requests()
	for i := range reqs {
		assert.Equal(t, local[i].Seq, reqs[i].Seq)
		assert.Equal(t, local[i].MatchedStep, reqs[i].MatchedStep)
		assert.JSONEq(t, string(local[i].Body), string(reqs[i].Body))
		assert.Equal(t, local[i].Header, reqs[i].Header)
		assert.True(t, local[i].Time.Equal(reqs[i].Time))
		assert.Equal(t, local[i].Duration, reqs[i].Duration)
	}
	assert.Equal(t, []int{0, -1, 1}, []int{reqs[0].MatchedStep, reqs[1].MatchedStep, reqs[2].MatchedStep})
	assert.Equal(t, 529, reqs[2].Status)
	assert.Equal(t, []string{"out"}, reqs[2].ToolResultTexts())
	assert.Equal(t, "use a tool", reqs[0].LastUserText())

	require.NoError(t, remote.Reset(ctx))
	reqs, err = remote.Requests(ctx)
	require.NoError(t, err)
	assert.NotNil(t, reqs)
	assert.Empty(t, reqs)

	_, evs = streamEvents(t, srv, request(true, "tool again"))
	assert.Equal(t, "tool_use", reassemble(t, evs)[0].Start["type"], "Reset restores step uses")
}

func TestControlErrors(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{})
	ctx := testContext(t)
	tests := []struct {
		method, path, body string
		wantStatus         int
		wantMsg            string
	}{
		{"PUT", "/_mock/script", `{"steps":[{"match":{"last_user_txt":"x"},"response":{}}]}`, 400, `unknown field "last_user_txt"`},
		{"PUT", "/_mock/script", `{"default":{"blocks":[{"type":"image"}]}}`, 400, `unknown block type "image"`},
		{"PUT", "/_mock/script", `{"steps":[{"response":{"blocks":[{"type":"tool_use"}]}}]}`, 400, "tool_use without a name"},
		{"PUT", "/_mock/script", `{} {}`, 400, "trailing data"},
		{"GET", "/_mock/script", ``, 405, "not allowed"},
		{"POST", "/_mock/requests", ``, 405, "not allowed"},
		{"GET", "/_mock/nope", ``, 404, "no such control endpoint"},
	}
	for _, tt := range tests {
		req, err := http.NewRequestWithContext(ctx, tt.method, srv.URL()+tt.path, strings.NewReader(tt.body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		_ = resp.Body.Close()
		assert.Equal(t, tt.wantStatus, resp.StatusCode, "%s %s", tt.method, tt.path)
		assert.Contains(t, body["error"].(map[string]any)["message"], tt.wantMsg)
	}
	assert.Empty(t, srv.Requests(), "control requests are not recorded")

	remote := &anthropictest.Remote{BaseURL: srv.URL()}
	err := remote.SetScript(ctx, anthropictest.Script{Default: &anthropictest.Response{Blocks: []anthropictest.Block{{Type: "bogus"}}}})
	var se *anthropictest.StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusBadRequest, se.Status)
	assert.Equal(t, "/_mock/script", se.Path)
}

func TestRemoteWaitHealthyGivesUp(t *testing.T) {
	srv := anthropictest.New(anthropictest.Script{})
	require.NoError(t, srv.Start(""))
	url := srv.URL()
	srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := (&anthropictest.Remote{BaseURL: url}).WaitHealthy(ctx)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.DeadlineExceeded))
}

func TestScriptJSON(t *testing.T) {
	// The b_partial script of record.sh, in the Python mock's format.
	const pyScript = `{"steps": [
	 {"match": {"last_user_text_contains": "List"}, "response": {"blocks": [
	   {"type": "thinking", "thinking": "The user wants a listing; I will run ls."},
	   {"type": "text", "text": "Let me look."},
	   {"type": "tool_use", "name": "Bash", "input": {"command": "ls", "description": "List files"}}]}},
	 {"match": {"has_tool_result": true, "stream": false, "min_messages": 3}, "response": {"blocks": [
	   {"type": "text", "text": ""}], "chunk_chars": 10, "chunk_delay_ms": 200, "first_byte_delay_ms": 5,
	   "usage": {"output_tokens": 3}, "stream_error_after_deltas": 0, "hang_after_deltas": 4}, "times": -1},
	 {"match": {}, "response": {"error": {"status": 429, "type": "rate_limit_error", "message": "slow down", "headers": {"retry-after": "1"}}}, "times": 2},
	 {"match": {"path_prefix": "/v1/messages", "model_contains": "haiku", "any_text_contains": "x"}, "response": {"blocks": [], "stop_reason": "end_turn"}}],
	 "default": {"text": "DEFAULT"}}`
	script, err := anthropictest.ParseScript([]byte(pyScript))
	require.NoError(t, err)
	require.Len(t, script.Steps, 4)
	assert.Equal(t, "List", script.Steps[0].Match.LastUserTextContains)
	assert.Equal(t, 0, script.Steps[0].Times, "absent times: once")
	assert.JSONEq(t, `{"command": "ls", "description": "List files"}`, string(script.Steps[0].Response.Blocks[2].Input))
	s1 := script.Steps[1]
	assert.Equal(t, new(true), s1.Match.HasToolResult)
	assert.Equal(t, new(false), s1.Match.Stream)
	assert.Equal(t, 3, s1.Match.MinMessages)
	assert.Equal(t, anthropictest.Unlimited, s1.Times)
	assert.Equal(t, 10, s1.Response.ChunkChars)
	assert.Equal(t, new(0), s1.Response.StreamErrorAfterDeltas)
	assert.Equal(t, new(4), s1.Response.HangAfterDeltas)
	assert.Equal(t, &anthropictest.ErrorResponse{Status: 429, Type: "rate_limit_error", Message: "slow down",
		Headers: map[string]string{"retry-after": "1"}}, script.Steps[2].Response.Error)
	assert.NotNil(t, script.Steps[3].Response.Blocks)
	assert.Empty(t, script.Steps[3].Response.Blocks)
	assert.Equal(t, "DEFAULT", script.Default.Text)

	// A round trip keeps everything, including the empty text block and
	// the empty block list.
	data, err := json.Marshal(script)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"blocks":[{"type":"text","text":""}]`)
	assert.Contains(t, string(data), `"blocks":[]`)
	again, err := anthropictest.ParseScript(data)
	require.NoError(t, err)
	data2, err := json.Marshal(again)
	require.NoError(t, err)
	assert.Equal(t, string(data), string(data2))
	assert.Equal(t, script.Steps[1], again.Steps[1])
}
