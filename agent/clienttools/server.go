package clienttools

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Result is the outcome of one call of a client function.
type Result struct {
	// Content is what the function returned, as text.
	Content string
	// IsError marks a failed call.
	IsError bool
}

// Reply sends a JSON-RPC message to the CLI: the mcp_response of the
// control response that answers the mcp_message carrying the request.
type Reply func(msg json.RawMessage)

// Server is the MCP server one CLI process talks to. It lists the running
// turn's functions and holds each tools/call until the turn answers it
// ([Server.Answer]) by the model's tool_use id. It is safe for concurrent
// use: the CLI's messages arrive on the process's stdout reader, answers
// from the turn.
type Server struct {
	mu        sync.Mutex
	tools     []agent.ClientTool
	names     map[string]bool
	sig       string            // Signature(tools)
	listed    bool              // the CLI listed the functions at least once
	listedSig string            // the set the CLI listed last
	listedCh  chan struct{}     // closed and replaced whenever the CLI lists
	refuse    string            // when set, calls are answered with this error at once
	calls     map[string]*call  // calls the CLI waits on, by tool_use id
	answers   map[string]Result // answers that came before their call
}

// call is one tools/call the CLI waits on.
type call struct {
	rpcID json.RawMessage
	reply Reply
}

// RefuseIdle answers calls that come while no turn runs (a sub-agent that
// outlived its turn).
const RefuseIdle = "No turn is running, so the client cannot run this function now."

// NewServer returns a server with no functions that refuses calls until a
// turn sets its functions.
func NewServer() *Server {
	return &Server{
		names:    map[string]bool{},
		listedCh: make(chan struct{}),
		refuse:   RefuseIdle,
		calls:    map[string]*call{},
		answers:  map[string]Result{},
	}
}

// SetTools makes tools the functions of the turn that begins, and reports
// whether the CLI must be told that the list changed (it listed another
// set before; a CLI that never listed lists with its next message).
func (s *Server) SetTools(tools []agent.ClientTool) (notify bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tools = tools
	s.names = make(map[string]bool, len(tools))
	for _, t := range tools {
		s.names[t.Name] = true
	}
	s.sig = Signature(tools)
	s.refuse = ""
	return s.listed && s.listedSig != s.sig
}

// WaitListed returns once the CLI has listed the functions SetTools set,
// or ctx ends.
func (s *Server) WaitListed(ctx context.Context) error {
	for {
		s.mu.Lock()
		done, ch := s.listed && s.listedSig == s.sig, s.listedCh
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("the CLI did not list the client's functions again: %w", ctx.Err())
		}
	}
}

// Answer answers the call with the model's tool_use id: at once if the CLI
// waits on it, else as soon as it asks.
func (s *Server) Answer(id string, r Result) {
	s.mu.Lock()
	c := s.calls[id]
	if c == nil {
		s.answers[id] = r
		s.mu.Unlock()
		return
	}
	delete(s.calls, id)
	s.mu.Unlock()
	c.reply(callResult(c.rpcID, r))
}

// End ends the turn: calls still waiting get an error result saying why,
// later ones are refused with it, and answers for calls that never came are
// forgotten. The functions stay listed (the CLI keeps them until the next
// turn changes them).
func (s *Server) End(why string) {
	s.mu.Lock()
	calls := s.calls
	s.calls = map[string]*call{}
	s.answers = map[string]Result{}
	s.refuse = why
	s.mu.Unlock()
	for _, c := range calls {
		c.reply(callResult(c.rpcID, Result{Content: why, IsError: true}))
	}
}

// rpcMessage is a JSON-RPC request, notification or response.
type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// JSON-RPC error codes.
const (
	codeParseError     = -32700
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
)

// emptyResult answers notifications: the CLI wants a response with an
// empty result even for them.
var emptyResult = json.RawMessage(`{}`)

// Handle takes one JSON-RPC message the CLI sent to the server and answers
// it through reply: at once, or for tools/call when the turn answers the
// call.
func (s *Server) Handle(raw json.RawMessage, reply Reply) {
	var m rpcMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		reply(response(json.RawMessage("null"), nil, &rpcError{Code: codeParseError, Message: "not a JSON-RPC message: " + err.Error()}))
		return
	}
	if len(m.ID) == 0 || m.Method == "" {
		// A notification (or a stray response): acknowledged.
		if m.Method == "notifications/cancelled" {
			s.cancel(m.Params)
		}
		reply(response(json.RawMessage("0"), emptyResult, nil))
		return
	}
	switch m.Method {
	case "initialize":
		reply(response(m.ID, initializeResult(m.Params), nil))
	case "ping":
		reply(response(m.ID, emptyResult, nil))
	case "tools/list":
		reply(response(m.ID, s.list(), nil))
	case "tools/call":
		s.call(m.ID, m.Params, reply)
	default:
		reply(response(m.ID, nil, &rpcError{Code: codeMethodNotFound, Message: "method not found: " + m.Method}))
	}
}

// initializeResult accepts the protocol version the CLI asks for and
// offers tools whose list changes.
func initializeResult(params json.RawMessage) json.RawMessage {
	var p struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	_ = json.Unmarshal(params, &p)
	if p.ProtocolVersion == "" {
		p.ProtocolVersion = "2025-06-18"
	}
	b, _ := json.Marshal(map[string]any{
		"protocolVersion": p.ProtocolVersion,
		"capabilities":    map[string]any{"tools": map[string]any{"listChanged": true}},
		"serverInfo":      map[string]any{"name": ServerName, "version": "1"},
		"instructions":    "The client's own functions: the client runs them and returns their results.",
	})
	return b
}

// toolDef is one entry of a tools/list result.
type toolDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"inputSchema"`
	// Annotations: readOnlyHint lets the CLI run the calls of one message
	// together (and allows them in plan mode).
	Annotations map[string]bool `json:"annotations"`
	// Meta: anthropic/alwaysLoad sends the definition to the API in full
	// rather than behind tool search.
	Meta map[string]any `json:"_meta"`
}

// list answers tools/list with the turn's functions and records that the
// CLI has them.
func (s *Server) list() json.RawMessage {
	s.mu.Lock()
	defs := make([]toolDef, 0, len(s.tools))
	for _, t := range s.tools {
		schema, err := inputSchema(t.Parameters)
		if err != nil { // Validate refuses such queries; never list a schema the API would reject
			schema, _ = inputSchema(nil)
		}
		defs = append(defs, toolDef{
			Name: t.Name, Description: t.Description, InputSchema: schema,
			Annotations: map[string]bool{"readOnlyHint": true},
			Meta:        map[string]any{"anthropic/alwaysLoad": true},
		})
	}
	s.listed, s.listedSig = true, s.sig
	close(s.listedCh)
	s.listedCh = make(chan struct{})
	s.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"tools": defs})
	return b
}

// call holds a tools/call until the turn answers it, or answers at once a
// call that cannot go to the client.
func (s *Server) call(rpcID, params json.RawMessage, reply Reply) {
	var p struct {
		Name string `json:"name"`
		Meta struct {
			ToolUseID string `json:"claudecode/toolUseId"`
		} `json:"_meta"`
	}
	if err := json.Unmarshal(params, &p); err != nil {
		reply(response(rpcID, nil, &rpcError{Code: codeInvalidParams, Message: "tools/call params: " + err.Error()}))
		return
	}
	id := p.Meta.ToolUseID
	s.mu.Lock()
	var refusal string
	switch {
	case s.refuse != "":
		refusal = s.refuse
	case !s.names[p.Name]:
		refusal = fmt.Sprintf("The client's function %q is not available now.", p.Name)
	case id == "":
		refusal = "The call carries no tool_use id, so its result cannot come from the client."
	}
	r, answered := s.answers[id]
	switch {
	case refusal != "":
		r, answered = Result{Content: refusal, IsError: true}, true
	case answered:
		delete(s.answers, id)
	default:
		s.calls[id] = &call{rpcID: rpcID, reply: reply}
	}
	s.mu.Unlock()
	if answered {
		reply(callResult(rpcID, r))
	}
}

// cancel forgets the call the CLI gave up on (an interrupted turn).
func (s *Server) cancel(params json.RawMessage) {
	var p struct {
		RequestID json.RawMessage `json:"requestId"`
	}
	if json.Unmarshal(params, &p) != nil || len(p.RequestID) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.calls {
		if bytes.Equal(c.rpcID, p.RequestID) {
			delete(s.calls, id)
		}
	}
}

// callResult is the JSON-RPC response carrying a call's outcome.
func callResult(rpcID json.RawMessage, r Result) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"content": []map[string]string{{"type": "text", "text": r.Content}},
		"isError": r.IsError,
	})
	return response(rpcID, b, nil)
}

// response encodes a JSON-RPC response.
func response(id, result json.RawMessage, e *rpcError) json.RawMessage {
	b, _ := json.Marshal(rpcMessage{JSONRPC: "2.0", ID: id, Result: result, Error: e})
	return b
}
