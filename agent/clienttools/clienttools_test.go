package clienttools

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

func TestNames(t *testing.T) {
	tests := []struct {
		model  string
		client string
		ok     bool
	}{
		{"mcp__client__get_weather", "get_weather", true},
		{"mcp__client__a-b", "a-b", true},
		{"mcp__client__with__underscores", "with__underscores", true},
		{"mcp__client__", "", false},
		{"mcp__github__get_weather", "", false},
		{"Bash", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			name, ok := ClientName(tt.model)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.client, name)
			if ok {
				assert.Equal(t, tt.model, ModelName(name), "the names map both ways")
			}
		})
	}
	assert.Equal(t, "mcp__client", AllowRule)
}

func TestValidate(t *testing.T) {
	weather := agent.ClientTool{Name: "get_weather", Parameters: json.RawMessage(`{"type":"object","properties":{}}`)}
	tests := []struct {
		name   string
		tools  []agent.ClientTool
		choice string
		want   string // "" = valid
	}{
		{name: "no tools"},
		{name: "auto", tools: []agent.ClientTool{weather}, choice: "auto"},
		{name: "required", tools: []agent.ClientTool{weather}, choice: "required"},
		{name: "by name", tools: []agent.ClientTool{weather}, choice: "get_weather"},
		{name: "no parameters", tools: []agent.ClientTool{{Name: "f"}}},
		{name: "schema without type", tools: []agent.ClientTool{{Name: "f", Parameters: json.RawMessage(`{"properties":{}}`)}}},
		{name: "64 characters", tools: []agent.ClientTool{{Name: "a123456789b123456789c123456789d123456789e123456789f123456789_-gh"}}},
		{name: "65 characters", tools: []agent.ClientTool{{Name: "a123456789b123456789c123456789d123456789e123456789f123456789_-ghi"}}, want: "must be 1-64"},
		{name: "space in name", tools: []agent.ClientTool{{Name: "get weather"}}, want: `tools[0].name "get weather"`},
		{name: "empty name", tools: []agent.ClientTool{{}}, want: "tools[0].name"},
		{name: "twice", tools: []agent.ClientTool{weather, weather}, want: "tools[1].name \"get_weather\" is used twice"},
		{name: "array schema", tools: []agent.ClientTool{{Name: "f", Parameters: json.RawMessage(`[]`)}}, want: "tools[0].parameters: must be a JSON Schema object"},
		{name: "string type", tools: []agent.ClientTool{{Name: "f", Parameters: json.RawMessage(`{"type":"string"}`)}}, want: `type must be "object"`},
		{name: "required without tools", choice: "required", want: `"required" needs tools`},
		{name: "unknown name", tools: []agent.ClientTool{weather}, choice: "get_time", want: `tool_choice "get_time"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.tools, tt.choice)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestInstructions(t *testing.T) {
	tools := []agent.ClientTool{{Name: "a"}, {Name: "b"}}
	tests := []struct {
		name    string
		q       agent.QueryRequest
		changed bool
		want    []string // lines, in order; nil = no instructions
	}{
		{name: "nothing to say", q: agent.QueryRequest{Tools: tools, ToolChoice: "auto"}},
		{name: "no tools at all", q: agent.QueryRequest{OneToolAtATime: true, ToolChoice: "required"}},
		{name: "required", q: agent.QueryRequest{Tools: tools, ToolChoice: "required"},
			want: []string{"Your reply to this message must begin with a call of one of the client's functions: mcp__client__a, mcp__client__b."}},
		{name: "by name", q: agent.QueryRequest{Tools: tools, ToolChoice: "b"},
			want: []string{"Your reply to this message must begin with a call of the client's function mcp__client__b."}},
		{name: "one at a time", q: agent.QueryRequest{Tools: tools, OneToolAtATime: true},
			want: []string{"Call at most one of the client's functions per reply, and wait for its result before you call another."}},
		{name: "changed", q: agent.QueryRequest{Tools: tools}, changed: true,
			want: []string{"The client's functions you can call now are: mcp__client__a, mcp__client__b. Call them directly, without searching for them; no other mcp__client__ function is available now."}},
		{name: "changed to none", changed: true,
			want: []string{"None of the client's functions (mcp__client__...) are available now; do not call them."}},
		{name: "all of it", q: agent.QueryRequest{Tools: tools[:1], ToolChoice: "required", OneToolAtATime: true}, changed: true,
			want: []string{
				"The client's functions you can call now are: mcp__client__a. Call them directly, without searching for them; no other mcp__client__ function is available now.",
				"Your reply to this message must begin with a call of one of the client's functions: mcp__client__a.",
				"Call at most one of the client's functions per reply, and wait for its result before you call another.",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Instructions(tt.q, tt.changed)
			if tt.want == nil {
				assert.Empty(t, got)
				return
			}
			want := "\n\n<system-reminder>\n"
			for i, l := range tt.want {
				if i > 0 {
					want += "\n"
				}
				want += l
			}
			assert.Equal(t, want+"\n</system-reminder>", got)
		})
	}
}

func TestSignature(t *testing.T) {
	a := []agent.ClientTool{{Name: "a", Description: "x"}}
	assert.Empty(t, Signature(nil))
	assert.Equal(t, Signature(a), Signature([]agent.ClientTool{{Name: "a", Description: "x"}}))
	assert.NotEqual(t, Signature(a), Signature([]agent.ClientTool{{Name: "a", Description: "y"}}), "a new description changes the set")
	assert.NotEqual(t, Signature(a), Signature([]agent.ClientTool{{Name: "ax"}}))
}

// replies collects what a Server answers, in order.
type replies struct {
	mu   sync.Mutex
	msgs []map[string]any
	got  chan struct{}
}

func newReplies() *replies { return &replies{got: make(chan struct{}, 100)} }

func (r *replies) reply(msg json.RawMessage) {
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func (r *replies) all() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.msgs...)
}

// handle sends one JSON-RPC message (as the CLI writes it) to s.
func handle(s *Server, r *replies, msg string) { s.Handle(json.RawMessage(msg), r.reply) }

func callMsg(rpcID int, name, toolUseID string) string {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": rpcID, "method": "tools/call",
		"params": map[string]any{"name": name, "arguments": map[string]any{"city": "Paris"},
			"_meta": map[string]any{"claudecode/toolUseId": toolUseID, "progressToken": rpcID}}})
	return string(b)
}

// callReply is the outcome in a tools/call reply.
func callReply(t *testing.T, m map[string]any) (id float64, text string, isError bool) {
	t.Helper()
	res, ok := m["result"].(map[string]any)
	require.True(t, ok, "a result: %v", m)
	content := res["content"].([]any)
	require.Len(t, content, 1)
	return m["id"].(float64), content[0].(map[string]any)["text"].(string), res["isError"].(bool)
}

func TestServerHandshakeAndList(t *testing.T) {
	s, r := NewServer(), newReplies()
	handle(s, r, `{"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"claude-code"}},"jsonrpc":"2.0","id":0}`)
	handle(s, r, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	handle(s, r, `{"jsonrpc":"2.0","id":"p","method":"ping"}`)
	handle(s, r, `{"jsonrpc":"2.0","id":7,"method":"resources/list"}`)
	handle(s, r, `not json`)
	got := r.all()
	require.Len(t, got, 5)
	assert.Equal(t, map[string]any{"jsonrpc": "2.0", "id": 0.0, "result": map[string]any{
		"protocolVersion": "2025-11-25",
		"capabilities":    map[string]any{"tools": map[string]any{"listChanged": true}},
		"serverInfo":      map[string]any{"name": "client", "version": "1"},
		"instructions":    "The client's own functions: the client runs them and returns their results.",
	}}, got[0])
	assert.Equal(t, map[string]any{"jsonrpc": "2.0", "id": 0.0, "result": map[string]any{}}, got[1], "a notification gets an empty result")
	assert.Equal(t, map[string]any{"jsonrpc": "2.0", "id": "p", "result": map[string]any{}}, got[2])
	assert.Equal(t, -32601.0, got[3]["error"].(map[string]any)["code"])
	assert.Equal(t, 7.0, got[3]["id"])
	assert.Equal(t, -32700.0, got[4]["error"].(map[string]any)["code"])

	// Listing: the turn's functions, with the schema made an object one.
	assert.False(t, s.SetTools([]agent.ClientTool{{Name: "f", Description: "F.", Parameters: json.RawMessage(`{"properties":{"x":{"type":"number"}}}`)}}),
		"nothing to tell a CLI that never listed")
	handle(s, r, `{"method":"tools/list","jsonrpc":"2.0","id":1}`)
	list := r.all()[5]["result"].(map[string]any)["tools"].([]any)
	assert.Equal(t, []any{map[string]any{
		"name": "f", "description": "F.",
		"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"x": map[string]any{"type": "number"}}},
		"annotations": map[string]any{"readOnlyHint": true},
		"_meta":       map[string]any{"anthropic/alwaysLoad": true},
	}}, list)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, s.WaitListed(ctx), "the current set is listed")
	assert.False(t, s.SetTools([]agent.ClientTool{{Name: "f", Description: "F.", Parameters: json.RawMessage(`{"properties":{"x":{"type":"number"}}}`)}}),
		"the same set again needs no new listing")
	assert.True(t, s.SetTools(nil), "another set must be listed again")
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	assert.Error(t, s.WaitListed(short), "not listed yet")
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		handle(s, r, `{"method":"tools/list","jsonrpc":"2.0","id":2}`)
	}()
	require.NoError(t, s.WaitListed(ctx))
	<-answered // WaitListed may return before the reply is written
	assert.Empty(t, r.all()[6]["result"].(map[string]any)["tools"])
}

func TestServerCalls(t *testing.T) {
	tools := []agent.ClientTool{{Name: "get_weather"}}
	t.Run("refused while no turn runs", func(t *testing.T) {
		s, r := NewServer(), newReplies()
		handle(s, r, callMsg(2, "get_weather", "toolu_1"))
		_, text, isErr := callReply(t, r.all()[0])
		assert.True(t, isErr)
		assert.Equal(t, RefuseIdle, text)
	})
	t.Run("held until answered, by tool_use id", func(t *testing.T) {
		s, r := NewServer(), newReplies()
		s.SetTools(tools)
		handle(s, r, callMsg(2, "get_weather", "toolu_1"))
		handle(s, r, callMsg(3, "get_weather", "toolu_2"))
		assert.Empty(t, r.all(), "the CLI waits")
		s.Answer("toolu_2", Result{Content: "rainy", IsError: true})
		s.Answer("toolu_1", Result{Content: "sunny"})
		got := r.all()
		require.Len(t, got, 2)
		id, text, isErr := callReply(t, got[0])
		assert.Equal(t, []any{3.0, "rainy", true}, []any{id, text, isErr})
		id, text, isErr = callReply(t, got[1])
		assert.Equal(t, []any{2.0, "sunny", false}, []any{id, text, isErr})
	})
	t.Run("an answer before the call is kept for it", func(t *testing.T) {
		s, r := NewServer(), newReplies()
		s.SetTools(tools)
		s.Answer("toolu_1", Result{Content: "early"})
		handle(s, r, callMsg(4, "get_weather", "toolu_1"))
		_, text, _ := callReply(t, r.all()[0])
		assert.Equal(t, "early", text)
	})
	t.Run("a function the turn does not offer is refused", func(t *testing.T) {
		s, r := NewServer(), newReplies()
		s.SetTools(tools)
		handle(s, r, callMsg(5, "get_time", "toolu_1"))
		_, text, isErr := callReply(t, r.all()[0])
		assert.True(t, isErr)
		assert.Contains(t, text, `"get_time" is not available`)
	})
	t.Run("a call without a tool_use id is refused", func(t *testing.T) {
		s, r := NewServer(), newReplies()
		s.SetTools(tools)
		handle(s, r, `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"get_weather","arguments":{}}}`)
		_, _, isErr := callReply(t, r.all()[0])
		assert.True(t, isErr)
	})
	t.Run("a cancelled call is forgotten", func(t *testing.T) {
		s, r := NewServer(), newReplies()
		s.SetTools(tools)
		handle(s, r, callMsg(2, "get_weather", "toolu_1"))
		handle(s, r, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2,"reason":"AbortError"}}`)
		require.Len(t, r.all(), 1, "the notification is acknowledged")
		s.Answer("toolu_1", Result{Content: "late"})
		assert.Len(t, r.all(), 1, "nothing is sent for a call the CLI gave up on")
	})
	t.Run("the turn's end answers waiting calls and refuses later ones", func(t *testing.T) {
		s, r := NewServer(), newReplies()
		s.SetTools(tools)
		handle(s, r, callMsg(2, "get_weather", "toolu_1"))
		s.Answer("toolu_never", Result{Content: "x"})
		s.End(TurnOver)
		handle(s, r, callMsg(3, "get_weather", "toolu_never"))
		got := r.all()
		require.Len(t, got, 2)
		for i, m := range got {
			_, text, isErr := callReply(t, m)
			assert.True(t, isErr, i)
			assert.Equal(t, TurnOver, text, "an answer kept for a call that never came is forgotten")
		}
		s.SetTools(tools)
		handle(s, r, callMsg(4, "get_weather", "toolu_3"))
		assert.Len(t, r.all(), 2, "the next turn holds its calls again")
	})
}
