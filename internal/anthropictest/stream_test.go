package anthropictest_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

func mockSignature(thinking string) string {
	sum := sha256.Sum256([]byte(thinking))
	return "mock-signature-" + hex.EncodeToString(sum[:])[:16]
}

func TestStreamEvents(t *testing.T) {
	const (
		thinking = "The user wants a listing; I will run ls."
		answer   = "Let me look <at> the files & more."
	)
	input := `{"command": "ls -la", "description": "List files", "nested": {"b": [1, 2], "a": null}}`
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
		Blocks: []anthropictest.Block{
			{Type: "thinking", Thinking: thinking},
			{Type: "text", Text: answer},
			{Type: "tool_use", Name: "Bash", Input: json.RawMessage(input)},
		},
	}})

	resp, evs := streamEvents(t, srv, request(true, "List the files"))
	assert.Equal(t, "text/event-stream; charset=utf-8", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	assert.Regexp(t, `^req_011Mock\d{16}$`, resp.Header.Get("request-id"))

	delta := func(n int) []string { return slicesRepeat("content_block_delta", n) }
	var want []string
	want = append(want, "message_start")
	want = append(want, "content_block_start", "ping")
	want = append(want, delta(4+1)...) // 41 runes in chunks of 12, then the signature
	want = append(want, "content_block_stop", "content_block_start")
	want = append(want, delta(3)...) // 34 runes
	want = append(want, "content_block_stop", "content_block_start")
	want = append(want, delta(len(input)/12+1)...)
	want = append(want, "content_block_stop", "message_delta", "message_stop")
	require.Equal(t, want, names(evs))

	start := evs[0].Data["message"].(map[string]any)
	assert.Regexp(t, `^msg_01Mock\d{16}$`, start["id"])
	assert.Equal(t, "message", start["type"])
	assert.Equal(t, "assistant", start["role"])
	assert.Equal(t, "claude-test-1", start["model"])
	assert.Equal(t, []any{}, start["content"])
	assert.Nil(t, start["stop_reason"])
	assert.Contains(t, start, "stop_sequence")
	// len(`[{"role": "user", "content": "List the files"}]`) / 4
	assert.Equal(t, map[string]any{
		"input_tokens": 11.0, "cache_creation_input_tokens": 0.0, "cache_read_input_tokens": 0.0,
		"output_tokens": 1.0, "service_tier": "standard",
	}, start["usage"])

	blocks := reassemble(t, evs)
	require.Len(t, blocks, 3)
	assert.Equal(t, map[string]any{"type": "thinking", "thinking": "", "signature": ""}, blocks[0].Start)
	assert.Equal(t, thinking, blocks[0].Text)
	assert.Equal(t, mockSignature(thinking), blocks[0].Signature)
	assert.Equal(t, map[string]any{"type": "text", "text": ""}, blocks[1].Start)
	assert.Equal(t, answer, blocks[1].Text)
	assert.Equal(t, "tool_use", blocks[2].Start["type"])
	assert.Equal(t, "Bash", blocks[2].Start["name"])
	assert.Equal(t, map[string]any{}, blocks[2].Start["input"])
	assert.Regexp(t, `^toolu_01Mock\d{16}$`, blocks[2].Start["id"])
	assert.Equal(t, input, blocks[2].Text, "partial_json is the Python encoding, key order kept")

	md := evs[len(evs)-2].Data
	assert.Equal(t, map[string]any{"stop_reason": "tool_use", "stop_sequence": nil}, md["delta"])
	// 41/4 + 34/4 + 84/4 output tokens; no service_tier in the final usage.
	assert.Equal(t, map[string]any{
		"input_tokens": 11.0, "cache_creation_input_tokens": 0.0, "cache_read_input_tokens": 0.0,
		"output_tokens": float64(10 + 8 + len(input)/4),
	}, md["usage"])
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestStreamStopReasonAndUsageOverride(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
		Text:       "short",
		StopReason: "max_tokens",
		Usage:      map[string]any{"output_tokens": 99, "input_tokens": 5, "server_tool_use": map[string]any{"web_search_requests": 1}},
	}})
	_, evs := streamEvents(t, srv, request(true, "hi"))
	usage := evs[0].Data["message"].(map[string]any)["usage"].(map[string]any)
	assert.EqualValues(t, 5, usage["input_tokens"])
	assert.EqualValues(t, 99, usage["output_tokens"])
	assert.Equal(t, map[string]any{"web_search_requests": 1.0}, usage["server_tool_use"])
	md := evs[len(evs)-2].Data
	assert.Equal(t, "max_tokens", md["delta"].(map[string]any)["stop_reason"])
	assert.EqualValues(t, 99, md["usage"].(map[string]any)["output_tokens"])
	assert.NotContains(t, md["usage"], "service_tier")
}

func TestStreamNoBlocks(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{Blocks: []anthropictest.Block{}}})
	_, evs := streamEvents(t, srv, request(true, "hi"))
	assert.Equal(t, []string{"message_start", "message_delta", "message_stop"}, names(evs))
}

func TestStreamChunkingUTF8(t *testing.T) {
	const s = "Grüße 😀 日本語のテキスト, ñ and 🇩🇪 flags: done."
	runes := utf8.RuneCountInString(s)
	tests := []struct {
		name   string
		text   string
		chunk  int
		deltas int
	}{
		{"one rune per delta", s, 1, runes},
		{"two", s, 2, (runes + 1) / 2},
		{"three", s, 3, (runes + 2) / 3},
		{"default of 12", s, 0, (runes + 11) / 12},
		{"whole text in one delta", s, 1000, 1},
		{"empty text gives one empty delta", "", 5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
				Blocks:     []anthropictest.Block{{Type: "text", Text: tt.text}, {Type: "thinking", Thinking: tt.text}},
				ChunkChars: tt.chunk,
			}})
			_, evs := streamEvents(t, srv, request(true, "hi"))
			blocks := reassemble(t, evs)
			require.Len(t, blocks, 2)
			chunk := tt.chunk
			if chunk == 0 {
				chunk = 12
			}
			for _, b := range blocks {
				assert.Equal(t, tt.text, b.Text)
				require.Len(t, b.Deltas, tt.deltas)
				for i, d := range b.Deltas {
					assert.True(t, utf8.ValidString(d), "delta %d %q is not valid UTF-8", i, d)
					if i < len(b.Deltas)-1 {
						assert.Equal(t, chunk, utf8.RuneCountInString(d), "delta %d %q", i, d)
					}
				}
			}
		})
	}
}

func TestNonStreaming(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
		Blocks: []anthropictest.Block{
			{Type: "thinking", Thinking: "hmm"},
			{Type: "text", Text: "Here you go."},
			anthropictest.ToolUse("Write", map[string]any{"file_path": "/tmp/x", "content": "hi\n"}),
			{Type: "tool_use", ID: "toolu_given", Name: "Bash"},
		},
		Usage: map[string]any{"cache_read_input_tokens": 7},
	}})
	resp := post(t, testContext(t), srv.URL()+"/v1/messages", request(false, "hi"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.NotEmpty(t, resp.Header.Get("Content-Length"))
	assert.Regexp(t, `^req_011Mock\d{16}$`, resp.Header.Get("request-id"))

	msg := decodeJSON(t, resp)
	assert.Regexp(t, `^msg_01Mock\d{16}$`, msg["id"])
	content := msg["content"].([]any)
	require.Len(t, content, 4)
	toolID := content[2].(map[string]any)["id"]
	assert.Regexp(t, `^toolu_01Mock\d{16}$`, toolID)
	// Output tokens: est(json.dumps(block)) per block, as in the Python mock.
	assert.Equal(t, map[string]any{
		"id": msg["id"], "type": "message", "role": "assistant", "model": "claude-test-1",
		"content": []any{
			map[string]any{"type": "thinking", "thinking": "hmm", "signature": mockSignature("hmm")},
			map[string]any{"type": "text", "text": "Here you go."},
			map[string]any{"type": "tool_use", "id": toolID, "name": "Write", "input": map[string]any{"content": "hi\n", "file_path": "/tmp/x"}},
			map[string]any{"type": "tool_use", "id": "toolu_given", "name": "Bash", "input": map[string]any{}},
		},
		"stop_reason": "tool_use", "stop_sequence": nil,
		"usage": map[string]any{
			"input_tokens": 8.0, "cache_creation_input_tokens": 0.0, "cache_read_input_tokens": 7.0,
			"output_tokens": float64(21 + 10 + 32 + 17), "service_tier": "standard",
		},
	}, msg)
}

func TestErrorResponses(t *testing.T) {
	tests := []struct {
		name        string
		err         anthropictest.ErrorResponse
		wantStatus  int
		wantType    string
		wantMessage string
		wantHeaders map[string]string
	}{
		{"400", anthropictest.ErrorResponse{Status: 400}, 400, "invalid_request_error", "mock error", nil},
		{"401", anthropictest.ErrorResponse{Status: 401, Message: "invalid x-api-key"}, 401, "authentication_error", "invalid x-api-key", nil},
		{"403", anthropictest.ErrorResponse{Status: 403}, 403, "permission_error", "mock error", nil},
		{"404", anthropictest.ErrorResponse{Status: 404}, 404, "not_found_error", "mock error", nil},
		{"413", anthropictest.ErrorResponse{Status: 413}, 413, "request_too_large", "mock error", nil},
		{"429 with retry-after", anthropictest.ErrorResponse{Status: 429, Headers: map[string]string{"retry-after": "1"}},
			429, "rate_limit_error", "mock error", map[string]string{"Retry-After": "1"}},
		{"500", anthropictest.ErrorResponse{Status: 500}, 500, "api_error", "mock error", nil},
		{"529", anthropictest.ErrorResponse{Status: 529, Message: "Overloaded"}, 529, "overloaded_error", "Overloaded", nil},
		{"status defaults to 500", anthropictest.ErrorResponse{}, 500, "api_error", "mock error", nil},
		{"unlisted status is api_error", anthropictest.ErrorResponse{Status: 502}, 502, "api_error", "mock error", nil},
		{"explicit type", anthropictest.ErrorResponse{Status: 400, Type: "custom_error", Message: "m",
			Headers: map[string]string{"x-should-retry": "false"}}, 400, "custom_error", "m", map[string]string{"X-Should-Retry": "false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{Error: &tt.err}})
			for _, stream := range []bool{true, false} {
				resp := post(t, testContext(t), srv.URL()+"/v1/messages?beta=true", request(stream, "hi"))
				assert.Equal(t, tt.wantStatus, resp.StatusCode)
				assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				for k, v := range tt.wantHeaders {
					assert.Equal(t, v, resp.Header.Get(k))
				}
				reqID := resp.Header.Get("request-id")
				assert.Regexp(t, `^req_011Mock\d{16}$`, reqID)
				assert.Equal(t, map[string]any{
					"type":       "error",
					"error":      map[string]any{"type": tt.wantType, "message": tt.wantMessage},
					"request_id": reqID,
				}, decodeJSON(t, resp))
			}
			reqs := srv.Requests()
			require.Len(t, reqs, 2)
			assert.Equal(t, tt.wantStatus, reqs[0].Status)
		})
	}
}

func TestStreamErrorAfterDeltas(t *testing.T) {
	tests := []struct {
		name  string
		after int
		want  []string
	}{
		{"after 0", 0, []string{"message_start", "content_block_start", "ping", "error"}},
		{"after 1", 1, []string{"message_start", "content_block_start", "ping", "content_block_delta", "error"}},
		{"after 2, checked at the next delta", 2, []string{
			"message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
			"content_block_stop", "content_block_start", "error",
		}},
		{"after 3, in the second block", 3, []string{
			"message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
			"content_block_stop", "content_block_start", "content_block_delta", "error",
		}},
		{"more than there are", 5, []string{
			"message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
			"content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
			"content_block_stop", "message_delta", "message_stop",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
				Blocks:                 []anthropictest.Block{{Type: "text", Text: "abcd"}, {Type: "text", Text: "efgh"}},
				ChunkChars:             2,
				StreamErrorAfterDeltas: new(tt.after),
			}})
			_, evs := streamEvents(t, srv, request(true, "hi"))
			require.Equal(t, tt.want, names(evs))
			if last := evs[len(evs)-1]; last.Name == "error" {
				assert.Equal(t, map[string]any{
					"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"},
				}, last.Data)
			}
			reqs := srv.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, http.StatusOK, reqs[0].Status)
			assert.False(t, reqs[0].ClientAborted)
		})
	}
}

func TestFirstByteAndChunkDelay(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
		Text: "abc", ChunkChars: 1, ChunkDelayMS: 20, FirstByteDelayMS: 60,
	}})
	began := time.Now()
	resp := post(t, testContext(t), srv.URL()+"/v1/messages", request(true, "hi"))
	require.Equal(t, http.StatusOK, resp.StatusCode, "headers come before the first-byte delay")
	r := bufio.NewReader(resp.Body)
	ev, err := readEvent(r)
	require.NoError(t, err)
	assert.Equal(t, "message_start", ev.Name)
	assert.GreaterOrEqual(t, time.Since(began), 60*time.Millisecond)
	rest := readAllEvents(t, r)
	assert.Len(t, rest, 8)
	assert.GreaterOrEqual(t, time.Since(began), 120*time.Millisecond)
}

func TestCountTokens(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Steps: []anthropictest.Step{{Response: text("step")}}})
	body := map[string]any{"model": "m", "messages": []any{map[string]any{"role": "user", "content": "hi"}}}
	resp := post(t, testContext(t), srv.URL()+"/v1/messages/count_tokens?beta=true", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("request-id"))
	// len(`[{"role": "user", "content": "hi"}]`) / 4
	assert.Equal(t, map[string]any{"input_tokens": 8.0}, decodeJSON(t, resp))

	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, -1, reqs[0].MatchedStep)
	got, step := ask(t, srv, "/v1/messages", request(false, "hi"))
	assert.Equal(t, "step", got, "count_tokens does not use up steps")
	assert.Equal(t, 0, step)
}

func TestUnknownEndpointsAndBadBodies(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{})
	tests := []struct {
		method, path, body string
		wantStatus         int
		wantType, wantMsg  string
	}{
		{"GET", "/v1/models", "", 404, "not_found_error", "mock: no such endpoint GET /v1/models"},
		{"POST", "/v1/complete", `{"prompt":"x"}`, 404, "not_found_error", "mock: no such endpoint POST /v1/complete"},
		{"GET", "/v1/messages", "", 404, "not_found_error", "mock: no such endpoint GET /v1/messages"},
		{"HEAD", "/api/hello", "", 404, "", ""},
		{"POST", "/v1/messages", `not json`, 400, "invalid_request_error", "mock: request body is not a JSON object"},
		{"POST", "/v1/messages", `[1,2]`, 400, "invalid_request_error", "mock: request body is not a JSON object"},
	}
	for i, tt := range tests {
		req, err := http.NewRequestWithContext(testContext(t), tt.method, srv.URL()+tt.path, strings.NewReader(tt.body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, tt.wantStatus, resp.StatusCode, "%s %s", tt.method, tt.path)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		if tt.method != http.MethodHead {
			var got map[string]any
			require.NoError(t, json.Unmarshal(data, &got))
			assert.Equal(t, "error", got["type"])
			assert.Equal(t, map[string]any{"type": tt.wantType, "message": tt.wantMsg}, got["error"])
		}
		reqs := srv.Requests()
		require.Len(t, reqs, i+1, "every request is recorded")
		assert.Equal(t, tt.path, reqs[i].Path)
		assert.Equal(t, tt.wantStatus, reqs[i].Status)
		assert.Equal(t, -1, reqs[i].MatchedStep)
	}
	reqs := srv.Requests()
	assert.JSONEq(t, `"not json"`, string(reqs[4].Body), "a body that is not JSON is kept as a JSON string")
	assert.Nil(t, reqs[0].Body)
}

func TestInvalidScriptedResponse(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
		Blocks: []anthropictest.Block{{Type: "image"}},
	}})
	for _, stream := range []bool{true, false} {
		resp := post(t, testContext(t), srv.URL()+"/v1/messages", request(stream, "hi"))
		assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		got := decodeJSON(t, resp)
		assert.Contains(t, got["error"].(map[string]any)["message"], `unknown block type "image"`)
	}
}

func TestStampDeltas(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
		Text: "abcd", ChunkChars: 1, ChunkDelayMS: 2, StampDeltas: true,
	}})
	before := time.Now().UnixMicro()
	resp := post(t, testContext(t), srv.URL()+"/v1/messages", request(true, "hi"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var stamps []int64
	for _, ev := range readAllEvents(t, bufio.NewReader(resp.Body)) {
		if ev.Name != "content_block_delta" {
			continue
		}
		delta, _ := ev.Data["delta"].(map[string]any)
		text, _ := delta["text"].(string)
		require.True(t, strings.HasSuffix(text, " "), text)
		n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		require.NoError(t, err, text)
		stamps = append(stamps, n)
	}
	require.Len(t, stamps, 4, "one delta per chunk of Text")
	assert.GreaterOrEqual(t, stamps[0], before)
	assert.True(t, slices.IsSorted(stamps), "stamps are send times: %v", stamps)
	assert.LessOrEqual(t, stamps[3], time.Now().UnixMicro())
}
