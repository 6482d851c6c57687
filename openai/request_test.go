package openai

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseChatCompletionRequest(t *testing.T) {
	const user = `{"role":"user","content":"hi"}`
	body := func(msgs ...string) string {
		return `{"model":"agent","messages":[` + strings.Join(msgs, ",") + `]}`
	}
	tests := []struct {
		name   string
		body   string
		max    int64
		status int    // 0 = valid
		param  string // expected param of the error ("" = null)
		msg    string // substring of the error message
		check  func(t *testing.T, r *ChatCompletionRequest)
	}{
		// Valid requests.
		{name: "minimal", body: body(user), check: func(t *testing.T, r *ChatCompletionRequest) {
			assert.Equal(t, "agent", r.Model)
			assert.Equal(t, "hi", r.LastUserText())
			assert.False(t, r.Stream)
			assert.False(t, r.IncludeUsage())
		}},
		{name: "librechat streaming request", body: `{"model":"agent","messages":[{"role":"system","content":"Be brief."},` + user + `],
			"stream":true,"user":"u-123","stream_options":{"include_usage":true},"temperature":0.7,"top_p":1,"max_tokens":1000,
			"presence_penalty":0,"frequency_penalty":0,"n":1,"stop":["\n\n"],"seed":4,"some_future_field":{"x":[1]}}`,
			check: func(t *testing.T, r *ChatCompletionRequest) {
				assert.True(t, r.Stream)
				assert.True(t, r.IncludeUsage())
				assert.Equal(t, "u-123", r.User)
				require.NotNil(t, r.Temperature)
				assert.Equal(t, 0.7, *r.Temperature)
				assert.Equal(t, "Be brief.", r.SystemText())
			}},
		{name: "content parts", body: body(`{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}`),
			check: func(t *testing.T, r *ChatCompletionRequest) {
				assert.Equal(t, "a\nb", r.LastUserText())
				require.Len(t, r.Messages[0].Content.Parts, 2)
			}},
		{name: "null content for assistant with tool calls", body: body(user,
			`{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}`,
			`{"role":"tool","tool_call_id":"c1","content":"42"}`, `{"role":"user","content":"and?"}`),
			check: func(t *testing.T, r *ChatCompletionRequest) {
				assert.True(t, r.Messages[1].Content.IsNull())
				assert.Equal(t, "c1", r.Messages[2].ToolCallID)
				assert.Len(t, r.History(), 3)
				assert.Equal(t, "and?", r.LastUserText())
			}},
		{name: "absent content for assistant with tool calls", body: body(user,
			`{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}`, user)},
		{name: "developer and system messages", body: body(`{"role":"developer","content":"dev"}`, `{"role":"system","content":[{"type":"text","text":"sys"}]}`, user),
			check: func(t *testing.T, r *ChatCompletionRequest) { assert.Equal(t, "dev\n\nsys", r.SystemText()) }},
		{name: "assistant refusal part", body: body(user, `{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]}`, user)},
		{name: "empty assistant content", body: body(user, `{"role":"assistant","content":""}`, user)},
		{name: "whitespace around body", body: "\n " + body(user) + "\n"},

		// Size.
		{name: "over size", body: body(`{"role":"user","content":"` + strings.Repeat("a", 200) + `"}`), max: 100, status: 413},
		{name: "exactly at size", body: body(user), max: int64(len(body(user)))},

		// Not JSON / wrong shapes.
		{name: "empty body", body: "", status: 400, msg: "empty"},
		{name: "not JSON", body: "model=agent", status: 400, msg: "JSON object"},
		{name: "truncated JSON", body: `{"model":"agent","messages":[`, status: 400, msg: "not valid JSON"},
		{name: "trailing garbage", body: body(user) + "x", status: 400, msg: "not valid JSON"},
		{name: "array body", body: `[` + body(user) + `]`, status: 400, msg: "JSON object"},
		{name: "messages is a string", body: `{"model":"agent","messages":"hi"}`, status: 400, param: "messages", msg: "expected an array"},
		{name: "stream is a string", body: `{"model":"agent","messages":[` + user + `],"stream":"yes"}`, status: 400, param: "stream", msg: "expected a boolean"},
		{name: "model is a number", body: `{"model":4,"messages":[` + user + `]}`, status: 400, param: "model"},
		{name: "include_usage is a string", body: `{"model":"agent","messages":[` + user + `],"stream":true,"stream_options":{"include_usage":"yes"}}`, status: 400, param: "stream_options.include_usage"},
		{name: "temperature is a string", body: `{"model":"agent","messages":[` + user + `],"temperature":"hot"}`, status: 400, param: "temperature"},
		{name: "max_tokens is fractional", body: `{"model":"agent","messages":[` + user + `],"max_tokens":1.5}`, status: 400, param: "max_tokens"},
		{name: "user is a number", body: `{"model":"agent","messages":[` + user + `],"user":7}`, status: 400, param: "user"},

		// Model and messages.
		{name: "missing model", body: `{"messages":[` + user + `]}`, status: 400, param: "model"},
		{name: "blank model", body: `{"model":"  ","messages":[` + user + `]}`, status: 400, param: "model"},
		{name: "NUL in model", body: `{"model":"a\u0000b","messages":[` + user + `]}`, status: 400, param: "model"},
		{name: "missing messages", body: `{"model":"agent"}`, status: 400, param: "messages", msg: "required"},
		{name: "null messages", body: `{"model":"agent","messages":null}`, status: 400, param: "messages"},
		{name: "empty messages", body: `{"model":"agent","messages":[]}`, status: 400, param: "messages", msg: "at least one"},
		{name: "message is a string", body: body(`"hi"`), status: 400, param: "messages[0]", msg: "message object"},
		{name: "message is null", body: body(user, `null`), status: 400, param: "messages[1]"},

		// Roles.
		{name: "unknown role", body: body(`{"role":"robot","content":"x"}`, user), status: 400, param: "messages[0].role", msg: `"robot"`},
		{name: "missing role", body: body(`{"content":"x"}`), status: 400, param: "messages[0].role", msg: "required"},
		{name: "role is a number", body: body(`{"role":1,"content":"x"}`), status: 400, param: "messages[0].role"},
		{name: "legacy function role", body: body(`{"role":"function","name":"f","content":"x"}`, user), status: 400, param: "messages[0].role"},

		// Content.
		{name: "content is a number", body: body(`{"role":"user","content":5}`), status: 400, param: "messages[0].content", msg: "string, an array"},
		{name: "content is an object", body: body(`{"role":"user","content":{"text":"x"}}`), status: 400, param: "messages[0].content"},
		{name: "null user content", body: body(`{"role":"user","content":null}`), status: 400, param: "messages[0].content", msg: "null"},
		{name: "absent user content", body: body(`{"role":"user"}`), status: 400, param: "messages[0].content"},
		{name: "null assistant content without tool calls", body: body(user, `{"role":"assistant","content":null}`, user), status: 400, param: "messages[1].content"},
		{name: "null assistant content with empty tool calls", body: body(user, `{"role":"assistant","content":null,"tool_calls":[]}`, user), status: 400, param: "messages[1].content"},
		{name: "tool_calls not an array", body: body(user, `{"role":"assistant","content":"x","tool_calls":{"a":1}}`, user), status: 400, param: "messages[1].tool_calls"},
		{name: "empty user content", body: body(`{"role":"user","content":""}`), status: 400, param: "messages[0].content", msg: "empty"},
		{name: "whitespace user content", body: body(`{"role":"user","content":" \n\t"}`), status: 400, param: "messages[0].content", msg: "empty"},
		{name: "empty parts array", body: body(`{"role":"user","content":[]}`), status: 400, param: "messages[0].content"},
		{name: "part is a string", body: body(`{"role":"user","content":["hi"]}`), status: 400, param: "messages[0].content[0]"},
		{name: "part text is a number", body: body(`{"role":"user","content":[{"type":"text","text":1}]}`), status: 400, param: "messages[0].content[0].text"},
		{name: "part without type", body: body(`{"role":"user","content":[{"text":"x"}]}`), status: 400, param: "messages[0].content[0].type"},
		{name: "image part with no image data", body: body(`{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}`),
			status: 400, param: "messages[0].content[1].image_url.url", msg: "not a PNG, JPEG, GIF or WebP image"},
		{name: "audio part", body: body(`{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}`), status: 400, param: "messages[0].content[0]", msg: "not supported"},
		{name: "refusal part from the user", body: body(`{"role":"user","content":[{"type":"refusal","refusal":"x"}]}`), status: 400, param: "messages[0].content[0]"},
		{name: "NUL in string content", body: body(`{"role":"user","content":"a\u0000b"}`), status: 400, param: "messages[0].content", msg: "NUL"},
		{name: "NUL in a text part", body: body(`{"role":"user","content":[{"type":"text","text":"a\u0000"}]}`), status: 400, param: "messages[0].content[0]", msg: "NUL"},
		{name: "NUL in an earlier message", body: body(`{"role":"system","content":"\u0000"}`, user), status: 400, param: "messages[0].content"},
		{name: "raw control byte", body: body("{\"role\":\"user\",\"content\":\"a\x00b\"}"), status: 400, msg: "not valid JSON"},

		// Order.
		{name: "last message from assistant", body: body(user, `{"role":"assistant","content":"hello"}`), status: 400, param: "messages", msg: "last message"},
		{name: "last message a tool result without tool calls", body: body(user, `{"role":"assistant","content":"hello"}`, `{"role":"tool","tool_call_id":"c1","content":"r"}`),
			status: 400, param: "messages", msg: "tool_calls"},
		{name: "only a system message", body: body(`{"role":"system","content":"x"}`), status: 400, param: "messages"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, e := ParseChatCompletionRequest(strings.NewReader(tc.body), tc.max)
			if tc.status == 0 {
				require.Nil(t, e, "%v", e)
				require.NotNil(t, req)
				assert.Equal(t, RoleUser, req.Messages[len(req.Messages)-1].Role)
				if tc.check != nil {
					tc.check(t, req)
				}
				return
			}
			require.NotNil(t, e)
			assert.Nil(t, req)
			assert.Equal(t, tc.status, e.Status, e.Message)
			if tc.param == "" {
				assert.Nil(t, e.Param, "param")
			} else if assert.NotNil(t, e.Param, "param") {
				assert.Equal(t, tc.param, *e.Param)
			}
			assert.Contains(t, e.Message, tc.msg)
			if tc.status == 400 {
				assert.Equal(t, TypeInvalidRequest, e.Type)
			}
			if tc.status == 413 {
				require.NotNil(t, e.Code)
				assert.Equal(t, "request_too_large", *e.Code)
			}
		})
	}
}

func TestParseChatCompletionRequestMaxBytesReader(t *testing.T) {
	body := `{"model":"agent","messages":[{"role":"user","content":"` + strings.Repeat("a", 100) + `"}]}`
	rec := httptest.NewRecorder()
	r := http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(body)), 50)
	_, e := ParseChatCompletionRequest(r, 1000)
	require.NotNil(t, e)
	assert.Equal(t, http.StatusRequestEntityTooLarge, e.Status)
	assert.Contains(t, e.Message, "50 bytes")
}

// failingReader fails as a timed-out connection does.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) {
	return 0, errors.New("read tcp 10.0.0.5:8080->10.0.0.9:51515: i/o timeout")
}

func TestParseChatCompletionRequestReadError(t *testing.T) {
	_, e := ParseChatCompletionRequest(failingReader{}, 1000)
	require.NotNil(t, e)
	assert.Equal(t, http.StatusBadRequest, e.Status)
	assert.Contains(t, e.Message, "send it again")
	assert.NotContains(t, e.Message, "10.0.0.5", "the server's address is not for the client")
}

func TestContentJSON(t *testing.T) {
	for _, raw := range []string{`"hi"`, `[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}}]`, `null`, `[]`} {
		var c Content
		require.NoError(t, json.Unmarshal([]byte(raw), &c), raw)
		out, err := json.Marshal(c)
		require.NoError(t, err)
		assert.JSONEq(t, raw, string(out))
	}
	var c Content
	assert.Error(t, json.Unmarshal([]byte(`5`), &c))
	assert.Equal(t, "x", TextContent("x").Text())
	assert.True(t, Content{}.IsNull())
	assert.Equal(t, "", Content{}.Text())

	var m Message
	require.NoError(t, json.Unmarshal([]byte(`{"role":"user","content":[{"type":"text","text":"p"}]}`), &m))
	assert.Equal(t, "p", m.Content.Text())
}

func TestRequestHelpersWithoutUser(t *testing.T) {
	r := &ChatCompletionRequest{Messages: []Message{{Role: RoleAssistant, Content: TextContent("x")}}}
	assert.Equal(t, "", r.LastUserText())
	assert.Len(t, r.History(), 1)
	assert.Equal(t, "", r.SystemText())
}
