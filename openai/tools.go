package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/agcluster/caddy-agcluster/agent"
)

// MaxTools caps a request's tools, as OpenAI does.
const MaxTools = 128

// Tool choice modes.
const (
	// ToolChoiceNone: the model must not call the client's functions.
	ToolChoiceNone = "none"
	// ToolChoiceAuto: the model may call them (the default).
	ToolChoiceAuto = "auto"
	// ToolChoiceRequired: the model must call at least one.
	ToolChoiceRequired = "required"
)

// ToolTypeFunction is the only tool and tool call type.
const ToolTypeFunction = "function"

// Tool is one of a request's tools: a function the client runs itself.
type Tool struct {
	// Type is always "function".
	Type string `json:"type"`
	// Function declares the function.
	Function FunctionDefinition `json:"function"`
}

// FunctionDefinition declares a client function.
type FunctionDefinition struct {
	// Name is the function's name, [a-zA-Z0-9_-]{1,64}.
	Name string `json:"name"`
	// Description tells the model what the function does.
	Description string `json:"description,omitempty"`
	// Parameters is the JSON Schema of the arguments, an object schema;
	// after parsing it is compact and has "type": "object" ({"type":
	// "object"} when the client sent none).
	Parameters json.RawMessage `json:"parameters,omitempty"`
	// Strict is accepted and ignored.
	Strict *bool `json:"strict,omitempty"`
}

// ToolChoice is a request's tool_choice: a mode, or the one function the
// model must call.
type ToolChoice struct {
	// Mode is "none", "auto" or "required"; empty when Name is set.
	Mode string
	// Name is the function named by {"type":"function","function":{"name":...}}.
	Name string
}

// MarshalJSON writes the mode as a string and a named function as an
// object, as the client sent them.
func (c ToolChoice) MarshalJSON() ([]byte, error) {
	if c.Name == "" {
		return json.Marshal(c.Mode)
	}
	return json.Marshal(toolChoiceWire{Type: ToolTypeFunction, Function: &struct {
		Name string `json:"name"`
	}{c.Name}})
}

// toolChoiceWire is the object form of tool_choice.
type toolChoiceWire struct {
	Type     string `json:"type"`
	Function *struct {
		Name string `json:"name"`
	} `json:"function,omitempty"`
}

// ToolCall is a call of a client function: in an assistant message of a
// request, and in a response's message.tool_calls.
type ToolCall struct {
	// ID identifies the call; the tool message with its result names it.
	ID string `json:"id"`
	// Type is "function".
	Type string `json:"type"`
	// Function is the called function and its arguments.
	Function FunctionCall `json:"function"`
}

// FunctionCall is the function and arguments of a [ToolCall].
type FunctionCall struct {
	// Name is the function's name.
	Name string `json:"name"`
	// Arguments is a JSON object as text.
	Arguments string `json:"arguments"`
}

// ToolCallDelta is a tool call in a chunk's delta.tool_calls. The gateway
// sends each call whole, in one chunk, so every field is always set.
type ToolCallDelta struct {
	// Index is the call's position among the message's calls.
	Index int `json:"index"`
	// ID identifies the call.
	ID string `json:"id"`
	// Type is "function".
	Type string `json:"type"`
	// Function is the called function and its arguments.
	Function FunctionCall `json:"function"`
}

// validFunctionName reports whether s matches ^[a-zA-Z0-9_-]{1,64}$.
func validFunctionName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// parseTools decodes and validates the tools array.
func parseTools(raw json.RawMessage) ([]Tool, *Error) {
	if isNull(raw) {
		return nil, nil
	}
	raws, e := rawArray(raw, "tools")
	if e != nil {
		return nil, e
	}
	if len(raws) > MaxTools {
		return nil, BadRequest(fmt.Sprintf("tools: at most %d tools are allowed, got %d", MaxTools, len(raws)), "tools")
	}
	tools := make([]Tool, len(raws))
	seen := make(map[string]int, len(raws))
	for j, tr := range raws {
		param := "tools[" + strconv.Itoa(j) + "]"
		if e := parseTool(tr, param, &tools[j]); e != nil {
			return nil, e
		}
		name := tools[j].Function.Name
		if k, dup := seen[name]; dup {
			return nil, BadRequest(fmt.Sprintf("%s.function.name: %q is declared twice (also tools[%d])", param, name, k), param+".function.name")
		}
		seen[name] = j
	}
	return tools, nil
}

// rawArray splits a JSON array into its raw elements; param names it.
func rawArray(raw json.RawMessage, param string) ([]json.RawMessage, *Error) {
	raw = bytes.TrimSpace(raw)
	var raws []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &raws) != nil {
		return nil, BadRequest(param+" must be an array", param)
	}
	return raws, nil
}

// parseTool decodes and validates one tool.
func parseTool(raw json.RawMessage, param string, t *Tool) *Error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return BadRequest(param+" must be a tool object", param)
	}
	var w struct {
		Type     string          `json:"type"`
		Function json.RawMessage `json:"function"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return decodeError(err, param+".")
	}
	switch w.Type {
	case ToolTypeFunction:
	case "":
		return BadRequest(param+".type is required", param+".type")
	default:
		return BadRequest(fmt.Sprintf("%s.type: tools of type %q are not supported; declare functions (type \"function\")", param, w.Type), param+".type")
	}
	fparam := param + ".function"
	if fr := bytes.TrimSpace(w.Function); len(fr) == 0 || fr[0] != '{' {
		return BadRequest(fparam+" must be a function object", fparam)
	}
	t.Type = w.Type
	f := &t.Function
	if err := json.Unmarshal(w.Function, f); err != nil {
		return decodeError(err, fparam+".")
	}
	if !validFunctionName(f.Name) {
		return BadRequest(fmt.Sprintf("%s.name must be 1 to 64 letters, digits, underscores or dashes, not %q", fparam, f.Name), fparam+".name")
	}
	params, e := objectSchema(f.Parameters, fparam+".parameters")
	if e != nil {
		return e
	}
	f.Parameters = params
	return nil
}

// objectSchema validates a function's parameters, an object schema, and
// returns it compact, with "type": "object" added when it has no type.
func objectSchema(raw json.RawMessage, param string) (json.RawMessage, *Error) {
	if isNull(raw) {
		return json.RawMessage(`{"type":"object"}`), nil
	}
	var fields map[string]json.RawMessage
	raw = bytes.TrimSpace(raw)
	if raw[0] != '{' || json.Unmarshal(raw, &fields) != nil {
		return nil, BadRequest(param+" must be a JSON Schema object", param)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, BadRequest(param+" must be a JSON Schema object", param)
	}
	typ, ok := fields["type"]
	if !ok {
		if len(fields) == 0 {
			return json.RawMessage(`{"type":"object"}`), nil
		}
		return append(json.RawMessage(`{"type":"object",`), buf.Bytes()[1:]...), nil
	}
	var s string
	if json.Unmarshal(typ, &s) != nil || s != "object" {
		return nil, BadRequest(param+`.type must be "object"`, param+".type")
	}
	return buf.Bytes(), nil
}

// parseToolChoice decodes and validates tool_choice against the tools.
func parseToolChoice(raw json.RawMessage, tools []Tool) (*ToolChoice, *Error) {
	if isNull(raw) {
		return nil, nil
	}
	raw = bytes.TrimSpace(raw)
	const param = "tool_choice"
	switch raw[0] {
	case '"':
		var mode string
		if json.Unmarshal(raw, &mode) != nil {
			return nil, BadRequest(param+" is not a valid string", param)
		}
		switch mode {
		case ToolChoiceNone, ToolChoiceAuto:
		case ToolChoiceRequired:
			if len(tools) == 0 {
				return nil, BadRequest(`tool_choice "required" needs tools`, param)
			}
		default:
			return nil, BadRequest(fmt.Sprintf(`tool_choice must be "none", "auto", "required" or a function object, not %q`, mode), param)
		}
		return &ToolChoice{Mode: mode}, nil
	case '{':
		var w toolChoiceWire
		if err := json.Unmarshal(raw, &w); err != nil {
			return nil, decodeError(err, param+".")
		}
		if w.Type != ToolTypeFunction {
			return nil, BadRequest(fmt.Sprintf(`tool_choice.type must be "function", not %q`, w.Type), param+".type")
		}
		if w.Function == nil || w.Function.Name == "" {
			return nil, BadRequest("tool_choice.function.name is required", param+".function.name")
		}
		for _, t := range tools {
			if t.Function.Name == w.Function.Name {
				return &ToolChoice{Name: w.Function.Name}, nil
			}
		}
		return nil, BadRequest(fmt.Sprintf("tool_choice.function.name: %q is not one of the request's tools", w.Function.Name), param+".function.name")
	}
	return nil, BadRequest(param+` must be "none", "auto", "required" or a function object`, param)
}

// parseToolCalls decodes an assistant message's tool_calls (param names
// them) into m.ToolCalls.
func parseToolCalls(raw json.RawMessage, param string, m *Message) *Error {
	if isNull(raw) {
		return nil
	}
	raws, e := rawArray(raw, param)
	if e != nil {
		return e
	}
	m.ToolCalls = make([]ToolCall, len(raws))
	for j, cr := range raws {
		cparam := param + "[" + strconv.Itoa(j) + "]"
		cr = bytes.TrimSpace(cr)
		if len(cr) == 0 || cr[0] != '{' {
			return BadRequest(cparam+" must be a tool call object", cparam)
		}
		c := &m.ToolCalls[j]
		if err := json.Unmarshal(cr, c); err != nil {
			return decodeError(err, cparam+".")
		}
		if c.Type != "" && c.Type != ToolTypeFunction {
			return BadRequest(fmt.Sprintf(`%s.type must be "function", not %q`, cparam, c.Type), cparam+".type")
		}
	}
	return nil
}

// validateToolEnding checks a request that ends in tool messages: they
// follow an assistant message with tool_calls, each call has an id and a
// name, and each tool message answers one of the calls, once.
func validateToolEnding(msgs []Message) *Error {
	start := trailingTools(msgs)
	if start == 0 || msgs[start-1].Role != RoleAssistant || len(msgs[start-1].ToolCalls) == 0 {
		return BadRequest("messages: the last message must be from the user, or tool results that answer the tool_calls of the assistant message before them", "messages")
	}
	a := start - 1
	calls := make(map[string]bool, len(msgs[a].ToolCalls))
	for j, c := range msgs[a].ToolCalls {
		cparam := "messages[" + strconv.Itoa(a) + "].tool_calls[" + strconv.Itoa(j) + "]"
		if c.ID == "" {
			return BadRequest(cparam+".id is required", cparam+".id")
		}
		if c.Function.Name == "" {
			return BadRequest(cparam+".function.name is required", cparam+".function.name")
		}
		if calls[c.ID] {
			return BadRequest(fmt.Sprintf("%s.id: %q is used twice", cparam, c.ID), cparam+".id")
		}
		calls[c.ID] = true
	}
	answered := make(map[string]bool, len(calls))
	for i := start; i < len(msgs); i++ {
		param := "messages[" + strconv.Itoa(i) + "].tool_call_id"
		id := msgs[i].ToolCallID
		switch {
		case id == "":
			return BadRequest(param+" is required", param)
		case !calls[id]:
			return BadRequest(fmt.Sprintf("%s: %q is not one of the tool_calls of messages[%d]", param, id, a), param)
		case answered[id]:
			return BadRequest(fmt.Sprintf("%s: %q is answered twice", param, id), param)
		}
		answered[id] = true
	}
	return nil
}

// trailingTools returns the index of the first of the tool messages that
// end msgs (len(msgs) when the last message is not a tool message).
func trailingTools(msgs []Message) int {
	i := len(msgs)
	for i > 0 && msgs[i-1].Role == RoleTool {
		i--
	}
	return i
}

// ToolResults are the client's answers to its functions' calls: a
// request that ends in tool messages after an assistant message with
// tool_calls.
type ToolResults struct {
	// Assistant is the index in Messages of the assistant message.
	Assistant int
	// Calls are its tool calls.
	Calls []ToolCall
	// Results are the tool messages after it, in order: ID is the
	// tool_call_id, Content the message's text.
	Results []agent.ToolResult
}

// ToolResults returns the tool results the request ends in, or nil when
// its last message is not a tool message that follows an assistant
// message with tool_calls. Calls without a tool message are left out of
// Results (the agent answers them as not run).
func (r *ChatCompletionRequest) ToolResults() *ToolResults {
	start := trailingTools(r.Messages)
	if start == len(r.Messages) || start == 0 {
		return nil
	}
	a := &r.Messages[start-1]
	if a.Role != RoleAssistant || len(a.ToolCalls) == 0 {
		return nil
	}
	tr := &ToolResults{Assistant: start - 1, Calls: a.ToolCalls, Results: make([]agent.ToolResult, 0, len(r.Messages)-start)}
	for _, m := range r.Messages[start:] {
		tr.Results = append(tr.Results, agent.ToolResult{ID: m.ToolCallID, Content: m.Content.Text()})
	}
	return tr
}

// ToolsEnabled reports whether the model may call the client's functions:
// the request declares tools and tool_choice is not "none".
func (r *ChatCompletionRequest) ToolsEnabled() bool {
	return len(r.Tools) > 0 && (r.ToolChoice == nil || r.ToolChoice.Mode != ToolChoiceNone)
}

// ApplyTools sets the client tool fields of an agent query from the
// request: Tools from tools (none when tool_choice is "none"), ToolChoice
// "required" or the named function ("" for auto), and OneToolAtATime from
// parallel_tool_calls false.
func (r *ChatCompletionRequest) ApplyTools(q *agent.QueryRequest) {
	q.Tools, q.ToolChoice, q.OneToolAtATime = nil, "", false
	if !r.ToolsEnabled() {
		return
	}
	q.Tools = make([]agent.ClientTool, len(r.Tools))
	for i, t := range r.Tools {
		q.Tools[i] = agent.ClientTool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters}
	}
	if c := r.ToolChoice; c != nil {
		if c.Name != "" {
			q.ToolChoice = c.Name
		} else if c.Mode == ToolChoiceRequired {
			q.ToolChoice = ToolChoiceRequired
		}
	}
	q.OneToolAtATime = r.ParallelToolCalls != nil && !*r.ParallelToolCalls
}
