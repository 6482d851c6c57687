package openai

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

const weatherTool = `{"type":"function","function":{"name":"get_weather","description":"Weather of a city.",
	"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}`

// withTools is a one-message request with the given extra top-level fields.
func withTools(fields string) string {
	return `{"model":"agent","messages":[{"role":"user","content":"hi"}],` + fields + `}`
}

func TestParseTools(t *testing.T) {
	many := make([]string, MaxTools+1)
	for i := range many {
		many[i] = `{"type":"function","function":{"name":"f` + strconv.Itoa(i) + `"}}`
	}
	tests := []struct {
		name   string
		body   string
		param  string // "" = valid
		msg    string
		tools  []Tool
		choice *ToolChoice
	}{
		{name: "no tools", body: withTools(`"tools":null,"tool_choice":null`)},
		{name: "a function", body: withTools(`"tools":[` + weatherTool + `]`),
			tools: []Tool{{Type: "function", Function: FunctionDefinition{Name: "get_weather", Description: "Weather of a city.",
				Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}}}},
		{name: "parameters default", body: withTools(`"tools":[{"type":"function","function":{"name":"now"}},{"type":"function","function":{"name":"n2","parameters":{}}},
			{"type":"function","function":{"name":"n-3","parameters":null,"strict":true}}]`),
			tools: []Tool{{Type: "function", Function: FunctionDefinition{Name: "now", Parameters: json.RawMessage(`{"type":"object"}`)}},
				{Type: "function", Function: FunctionDefinition{Name: "n2", Parameters: json.RawMessage(`{"type":"object"}`)}},
				{Type: "function", Function: FunctionDefinition{Name: "n-3", Parameters: json.RawMessage(`{"type":"object"}`), Strict: new(true)}}}},
		{name: "schema without a type", body: withTools(`"tools":[{"type":"function","function":{"name":"f","parameters":{ "properties" : {"a":{}} }}}]`),
			tools: []Tool{{Type: "function", Function: FunctionDefinition{Name: "f", Parameters: json.RawMessage(`{"type":"object","properties":{"a":{}}}`)}}}},
		{name: "tool_choice modes", body: withTools(`"tools":[` + weatherTool + `],"tool_choice":"required","parallel_tool_calls":false`),
			choice: &ToolChoice{Mode: "required"}},
		{name: "tool_choice none without tools", body: withTools(`"tool_choice":"none"`), choice: &ToolChoice{Mode: "none"}},
		{name: "tool_choice auto without tools", body: withTools(`"tool_choice":"auto"`), choice: &ToolChoice{Mode: "auto"}},
		{name: "tool_choice a function", body: withTools(`"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_weather"}}`),
			choice: &ToolChoice{Name: "get_weather"}},

		{name: "tools not an array", body: withTools(`"tools":{"type":"function"}`), param: "tools", msg: "must be an array"},
		{name: "too many tools", body: withTools(`"tools":[` + strings.Join(many, ",") + `]`), param: "tools", msg: "at most 128"},
		{name: "tool not an object", body: withTools(`"tools":["get_weather"]`), param: "tools[0]", msg: "tool object"},
		{name: "tool type missing", body: withTools(`"tools":[` + weatherTool + `,{"function":{"name":"x"}}]`), param: "tools[1].type", msg: "required"},
		{name: "tool type custom", body: withTools(`"tools":[{"type":"custom","custom":{"name":"x"}}]`), param: "tools[0].type", msg: `"custom"`},
		{name: "tool type a number", body: withTools(`"tools":[{"type":1}]`), param: "tools[0].type", msg: "expected a string"},
		{name: "function missing", body: withTools(`"tools":[{"type":"function"}]`), param: "tools[0].function", msg: "function object"},
		{name: "function a string", body: withTools(`"tools":[{"type":"function","function":"f"}]`), param: "tools[0].function"},
		{name: "name missing", body: withTools(`"tools":[{"type":"function","function":{}}]`), param: "tools[0].function.name"},
		{name: "name with a space", body: withTools(`"tools":[{"type":"function","function":{"name":"get weather"}}]`), param: "tools[0].function.name", msg: `"get weather"`},
		{name: "name too long", body: withTools(`"tools":[{"type":"function","function":{"name":"` + strings.Repeat("a", 65) + `"}}]`), param: "tools[0].function.name"},
		{name: "name a number", body: withTools(`"tools":[{"type":"function","function":{"name":7}}]`), param: "tools[0].function.name", msg: "expected a string"},
		{name: "description a number", body: withTools(`"tools":[{"type":"function","function":{"name":"f","description":1}}]`), param: "tools[0].function.description"},
		{name: "parameters an array", body: withTools(`"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]`), param: "tools[0].function.parameters", msg: "JSON Schema object"},
		{name: "parameters a string schema", body: withTools(`"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"string"}}}]`),
			param: "tools[0].function.parameters.type", msg: `"object"`},
		{name: "duplicate names", body: withTools(`"tools":[` + weatherTool + `,` + weatherTool + `]`), param: "tools[1].function.name", msg: "declared twice"},
		{name: "tool_choice unknown mode", body: withTools(`"tools":[` + weatherTool + `],"tool_choice":"sometimes"`), param: "tool_choice", msg: `"sometimes"`},
		{name: "tool_choice required without tools", body: withTools(`"tool_choice":"required"`), param: "tool_choice", msg: "needs tools"},
		{name: "tool_choice undeclared function", body: withTools(`"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_time"}}`),
			param: "tool_choice.function.name", msg: `"get_time"`},
		{name: "tool_choice function without name", body: withTools(`"tools":[` + weatherTool + `],"tool_choice":{"type":"function"}`),
			param: "tool_choice.function.name", msg: "required"},
		{name: "tool_choice allowed_tools", body: withTools(`"tools":[` + weatherTool + `],"tool_choice":{"type":"allowed_tools","allowed_tools":{}}`),
			param: "tool_choice.type"},
		{name: "tool_choice name a number", body: withTools(`"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":1}}`),
			param: "tool_choice.function.name"},
		{name: "tool_choice a number", body: withTools(`"tool_choice":1`), param: "tool_choice"},
		{name: "parallel_tool_calls a string", body: withTools(`"parallel_tool_calls":"no"`), param: "parallel_tool_calls", msg: "expected a boolean"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, ok := parseOrRefused(t, tc.body, tc.param, tc.msg)
			if !ok {
				return
			}
			if tc.tools != nil {
				assert.Equal(t, tc.tools, req.Tools)
			}
			assert.Equal(t, tc.choice, req.ToolChoice)
		})
	}
}

func TestToolChoiceJSON(t *testing.T) {
	for _, tc := range []struct {
		c    ToolChoice
		want string
	}{
		{ToolChoice{Mode: "auto"}, `"auto"`},
		{ToolChoice{Name: "f"}, `{"type":"function","function":{"name":"f"}}`},
	} {
		b, err := json.Marshal(tc.c)
		require.NoError(t, err)
		assert.Equal(t, tc.want, string(b))
		// What it writes parses back to the same choice.
		got, e := parseToolChoice(b, []Tool{{Type: "function", Function: FunctionDefinition{Name: "f"}}})
		require.Nil(t, e)
		assert.Equal(t, tc.c, *got)
	}
}

func TestApplyTools(t *testing.T) {
	weather := agent.ClientTool{Name: "get_weather", Description: "Weather of a city.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}
	tests := []struct {
		name   string
		fields string
		want   agent.QueryRequest
	}{
		{name: "no tools", fields: `"tool_choice":"auto"`},
		{name: "auto", fields: `"tools":[` + weatherTool + `]`, want: agent.QueryRequest{Tools: []agent.ClientTool{weather}}},
		{name: "explicit auto, parallel", fields: `"tools":[` + weatherTool + `],"tool_choice":"auto","parallel_tool_calls":true`,
			want: agent.QueryRequest{Tools: []agent.ClientTool{weather}}},
		{name: "required", fields: `"tools":[` + weatherTool + `],"tool_choice":"required"`,
			want: agent.QueryRequest{Tools: []agent.ClientTool{weather}, ToolChoice: "required"}},
		{name: "named", fields: `"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_weather"}}`,
			want: agent.QueryRequest{Tools: []agent.ClientTool{weather}, ToolChoice: "get_weather"}},
		{name: "one at a time", fields: `"tools":[` + weatherTool + `],"parallel_tool_calls":false`,
			want: agent.QueryRequest{Tools: []agent.ClientTool{weather}, OneToolAtATime: true}},
		{name: "none", fields: `"tools":[` + weatherTool + `],"tool_choice":"none","parallel_tool_calls":false`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, e := ParseChatCompletionRequest(strings.NewReader(withTools(tc.fields)), 0)
			require.Nil(t, e, "%v", e)
			q := agent.QueryRequest{Prompt: "hi", Tools: []agent.ClientTool{{Name: "stale"}}, ToolChoice: "stale", OneToolAtATime: true}
			req.ApplyTools(&q)
			tc.want.Prompt = "hi"
			assert.Equal(t, tc.want, q)
			assert.Equal(t, len(tc.want.Tools) > 0, req.ToolsEnabled())
		})
	}
}

func TestToolResults(t *testing.T) {
	const (
		user  = `{"role":"user","content":"weather in Oslo and Rome?"}`
		calls = `{"role":"assistant","content":"Checking.","tool_calls":[
			{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}},
			{"id":"c2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]}`
	)
	body := func(msgs ...string) string {
		return `{"model":"agent","tools":[` + weatherTool + `],"messages":[` + strings.Join(msgs, ",") + `]}`
	}
	wantCalls := []ToolCall{
		{ID: "c1", Type: "function", Function: FunctionCall{Name: "get_weather", Arguments: `{"city":"Oslo"}`}},
		{ID: "c2", Type: "function", Function: FunctionCall{Name: "get_weather", Arguments: `{"city":"Rome"}`}},
	}
	tests := []struct {
		name    string
		body    string
		param   string // "" = valid
		msg     string
		results []agent.ToolResult // nil: ToolResults is nil
	}{
		{name: "all answered", body: body(user, calls, `{"role":"tool","tool_call_id":"c2","content":"sunny"}`,
			`{"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"rain"},{"type":"text","text":"5 C"}]}`),
			results: []agent.ToolResult{{ID: "c2", Content: "sunny"}, {ID: "c1", Content: "rain\n5 C"}}},
		{name: "one answered", body: body(user, calls, `{"role":"tool","tool_call_id":"c1","content":"rain"}`),
			results: []agent.ToolResult{{ID: "c1", Content: "rain"}}},
		{name: "empty result", body: body(user, calls, `{"role":"tool","tool_call_id":"c1","content":""}`),
			results: []agent.ToolResult{{ID: "c1", Content: ""}}},
		{name: "ends with the user", body: body(user, calls, `{"role":"tool","tool_call_id":"c1","content":"rain"}`, `{"role":"user","content":"thanks"}`)},
		{name: "a call without type", body: body(user, `{"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"f","arguments":""}}]}`,
			`{"role":"tool","tool_call_id":"c1","content":"ok"}`),
			results: []agent.ToolResult{{ID: "c1", Content: "ok"}}},

		{name: "unknown id", body: body(user, calls, `{"role":"tool","tool_call_id":"c3","content":"?"}`), param: "messages[2].tool_call_id", msg: `"c3"`},
		{name: "answered twice", body: body(user, calls, `{"role":"tool","tool_call_id":"c1","content":"a"}`, `{"role":"tool","tool_call_id":"c1","content":"b"}`),
			param: "messages[3].tool_call_id", msg: "twice"},
		{name: "no tool_call_id", body: body(user, calls, `{"role":"tool","content":"a"}`), param: "messages[2].tool_call_id", msg: "required"},
		{name: "tool_call_id a number", body: body(user, calls, `{"role":"tool","tool_call_id":1,"content":"a"}`), param: "messages[2].tool_call_id"},
		{name: "null tool content", body: body(user, calls, `{"role":"tool","tool_call_id":"c1","content":null}`), param: "messages[2].content"},
		{name: "after a user message", body: body(user, `{"role":"tool","tool_call_id":"c1","content":"a"}`), param: "messages", msg: "tool_calls"},
		{name: "only tool messages", body: body(`{"role":"tool","tool_call_id":"c1","content":"a"}`), param: "messages"},
		{name: "call without id", body: body(user, `{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}`,
			`{"role":"tool","tool_call_id":"c1","content":"a"}`), param: "messages[1].tool_calls[0].id", msg: "required"},
		{name: "call without name", body: body(user, `{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"arguments":"{}"}}]}`,
			`{"role":"tool","tool_call_id":"c1","content":"a"}`), param: "messages[1].tool_calls[0].function.name", msg: "required"},
		{name: "duplicate call ids", body: body(user, `{"role":"assistant","content":null,"tool_calls":[{"id":"c1","function":{"name":"f"}},{"id":"c1","function":{"name":"g"}}]}`,
			`{"role":"tool","tool_call_id":"c1","content":"a"}`), param: "messages[1].tool_calls[1].id", msg: "twice"},
		{name: "call not an object", body: body(user, `{"role":"assistant","content":null,"tool_calls":["c1"]}`, user),
			param: "messages[1].tool_calls[0]", msg: "tool call object"},
		{name: "call of another type", body: body(user, `{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"custom","function":{"name":"f"}}]}`, user),
			param: "messages[1].tool_calls[0].type", msg: `"custom"`},
		{name: "arguments an object", body: body(user, `{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":{}}}]}`, user),
			param: "messages[1].tool_calls[0].function.arguments", msg: "expected a string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, ok := parseOrRefused(t, tc.body, tc.param, tc.msg)
			if !ok {
				return
			}
			tr := req.ToolResults()
			if tc.results == nil {
				assert.Nil(t, tr)
				return
			}
			require.NotNil(t, tr)
			assert.Equal(t, tc.results, tr.Results)
			assert.Equal(t, req.Messages[tr.Assistant].ToolCalls, tr.Calls)
			if tr.Assistant == 1 && len(tr.Calls) == 2 {
				assert.Equal(t, wantCalls, tr.Calls)
			}
			assert.True(t, req.Attachments().Empty())
		})
	}
}

func TestToolResultsWithoutParse(t *testing.T) {
	call := []ToolCall{{ID: "c1", Type: "function", Function: FunctionCall{Name: "f"}}}
	tests := []struct {
		name string
		msgs []Message
		want *ToolResults
	}{
		{"empty", nil, nil},
		{"user last", []Message{msg(RoleUser, "x")}, nil},
		{"tool first", []Message{{Role: RoleTool, ToolCallID: "c1", Content: TextContent("r")}}, nil},
		{"assistant without calls", []Message{msg(RoleAssistant, "x"), {Role: RoleTool, ToolCallID: "c1", Content: TextContent("r")}}, nil},
		{"results", []Message{msg(RoleUser, "x"), {Role: RoleAssistant, ToolCalls: call}, {Role: RoleTool, ToolCallID: "c1", Content: TextContent("r")}},
			&ToolResults{Assistant: 1, Calls: call, Results: []agent.ToolResult{{ID: "c1", Content: "r"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &ChatCompletionRequest{Messages: tc.msgs}
			assert.Equal(t, tc.want, r.ToolResults())
		})
	}
}

// parseOrRefused parses body; with param set it must be refused with a
// 400 naming param and saying msg (ok false), else it must parse.
func parseOrRefused(t *testing.T, body, param, msg string) (req *ChatCompletionRequest, ok bool) {
	t.Helper()
	req, e := ParseChatCompletionRequest(strings.NewReader(body), 0)
	if param != "" {
		require.NotNil(t, e, "accepted")
		assert.Equal(t, 400, e.Status)
		require.NotNil(t, e.Param, e.Message)
		assert.Equal(t, param, *e.Param, e.Message)
		assert.Contains(t, e.Message, msg)
		return nil, false
	}
	require.Nil(t, e, "%v", e)
	return req, true
}
