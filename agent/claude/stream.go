package claude

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// line is one stdout line of the CLI in stream-json mode. Only the fields
// the agent uses are decoded.
type line struct {
	Type            string  `json:"type"`
	Subtype         string  `json:"subtype"`
	SessionID       string  `json:"session_id"`
	ParentToolUseID *string `json:"parent_tool_use_id"`
	// UUID identifies assistant and user lines in the session's message
	// chain (the transcript holds them under the same uuid), which
	// --resume-session-at accepts.
	UUID string `json:"uuid"`

	// stream_event
	Event *streamEvent `json:"event"`

	// assistant and user lines carry a message object; system lines such as
	// permission_denied carry a message string.
	Message json.RawMessage `json:"message"`

	// control_request (from the CLI) and control_response
	RequestID string           `json:"request_id"`
	Request   json.RawMessage  `json:"request"`
	Response  *controlResponse `json:"response"`

	// system/api_retry, system/permission_denied
	Attempt     int    `json:"attempt"`
	MaxRetries  int    `json:"max_retries"`
	RetryDelay  int64  `json:"retry_delay_ms"`
	ErrorStatus *int   `json:"error_status"`
	Error       string `json:"error"`
	ToolName    string `json:"tool_name"`
	ToolUseID   string `json:"tool_use_id"`

	// result
	IsError        bool                  `json:"is_error"`
	Result         *string               `json:"result"`
	Errors         []string              `json:"errors"`
	NumTurns       int                   `json:"num_turns"`
	DurationMS     int64                 `json:"duration_ms"`
	StopReason     string                `json:"stop_reason"`
	TerminalReason string                `json:"terminal_reason"`
	APIErrorStatus *int                  `json:"api_error_status"`
	Usage          *agent.Usage          `json:"usage"`
	TurnModelUsage map[string]modelUsage `json:"model_usage_since_last_result"`
}

type modelUsage struct {
	CostUSD float64 `json:"costUSD"`
}

type streamEvent struct {
	Type  string `json:"type"`
	Index int    `json:"index"`
	Delta *struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		Thinking string `json:"thinking"`
	} `json:"delta"`
}

type message struct {
	Model   string          `json:"model"`
	Content json.RawMessage `json:"content"`
}

type contentBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Thinking  string          `json:"thinking"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

type controlResponse struct {
	Subtype   string          `json:"subtype"`
	RequestID string          `json:"request_id"`
	Response  json.RawMessage `json:"response"`
	Error     string          `json:"error"`
}

// messageObject decodes the message of assistant and user lines.
func (l *line) messageObject() (*message, error) {
	raw := bytes.TrimSpace(l.Message)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil
	}
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// messageText decodes the message string of system lines.
func (l *line) messageText() string {
	var s string
	if err := json.Unmarshal(l.Message, &s); err != nil {
		return ""
	}
	return s
}

// blocks decodes message content, which is a string or a list of blocks.
func (m *message) blocks() ([]contentBlock, error) {
	c := bytes.TrimSpace(m.Content)
	if len(c) == 0 || c[0] == '"' {
		var s string
		if err := json.Unmarshal(c, &s); err != nil && len(c) > 0 {
			return nil, err
		}
		return []contentBlock{{Type: "text", Text: s}}, nil
	}
	var bs []contentBlock
	if err := json.Unmarshal(c, &bs); err != nil {
		return nil, err
	}
	return bs, nil
}

// toolResultText flattens tool_result content (a string or text blocks).
func toolResultText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	if raw[0] == '"' {
		var s string
		_ = json.Unmarshal(raw, &s)
		return s
	}
	var bs []contentBlock
	if err := json.Unmarshal(raw, &bs); err != nil {
		return string(raw)
	}
	var sb strings.Builder
	for _, b := range bs {
		switch b.Type {
		case "text":
			if sb.Len() > 0 {
				sb.WriteByte('\n')
			}
			sb.WriteString(b.Text)
		case "image":
			if sb.Len() > 0 {
				sb.WriteByte('\n')
			}
			sb.WriteString("[image]")
		}
	}
	return sb.String()
}

// Translator turns the CLI's stdout lines of one turn into agent events.
// It is not safe for concurrent use; one turn uses one Translator.
type Translator struct {
	seq  int
	done bool
	// SessionID is the CLI session id seen on the turn's lines.
	SessionID string
	// End is the uuid of the last main-thread assistant or user (tool
	// result) line seen: the turn's last entry in the session's message
	// chain so far. Synthetic assistant messages (API errors) and
	// sub-agent lines are not counted.
	End string
	// TurnID is reported in the result (and error) event's Result.
	TurnID string
	// ClassifyInterrupt picks the error code of an interrupted turn; the
	// runner knows why it interrupted (client gone, auth failure, timeout).
	ClassifyInterrupt func() (code, message string)
	// ClientTool tells whether the model's tool name is one of the turn's
	// client functions, and its name as the client knows it (nil: the turn
	// has none). The main agent's calls of them are not tool_use events:
	// they are gathered per message and reported together as one
	// client_tool_calls event at the message's end (the message_stop
	// stream event, which the CLI writes after every block's assistant
	// line), and their tool_result lines are not reported at all.
	ClientTool func(name string) (string, bool)

	calls     []agent.ToolCall // client calls of the current message, not yet reported
	clientIDs map[string]bool  // tool_use ids of the turn's client calls
	// OnToolUse, if set, is told every tool call of the turn, sub-agents'
	// included.
	OnToolUse func(name string, input json.RawMessage)
}

// Done reports whether the turn's result line has been seen.
func (t *Translator) Done() bool { return t.done }

func (t *Translator) event(e agent.Event, parent *string) agent.Event {
	t.seq++
	e.Seq = t.seq
	if parent != nil {
		e.ParentToolUseID = *parent
	}
	return e
}

// Translate decodes one stdout line and appends the events it yields to
// out. Lines that carry nothing for the client (status, init, message
// boundaries) yield nothing.
func (t *Translator) Translate(raw []byte, out []agent.Event) ([]agent.Event, error) {
	if out, ok := t.translateDelta(raw, out); ok {
		return out, nil
	}
	var l line
	if err := json.Unmarshal(raw, &l); err != nil {
		return out, fmt.Errorf("decode CLI output line: %w", err)
	}
	return t.translateLine(&l, out)
}

func (t *Translator) translateLine(l *line, out []agent.Event) ([]agent.Event, error) {
	if l.SessionID != "" {
		t.SessionID = l.SessionID
	}
	switch l.Type {
	case "stream_event":
		if l.Event != nil && l.Event.Type == "message_stop" && l.ParentToolUseID == nil && len(t.calls) > 0 {
			out = append(out, t.event(agent.Event{Type: agent.EventClientToolCalls, Calls: t.calls}, nil))
			t.calls = nil
			return out, nil
		}
		if l.Event == nil || l.Event.Type != "content_block_delta" || l.Event.Delta == nil {
			return out, nil
		}
		switch l.Event.Delta.Type {
		case "text_delta":
			if l.Event.Delta.Text != "" {
				out = append(out, t.event(agent.Event{Type: agent.EventTextDelta, Text: l.Event.Delta.Text}, l.ParentToolUseID))
			}
		case "thinking_delta":
			if l.Event.Delta.Thinking != "" {
				out = append(out, t.event(agent.Event{Type: agent.EventThinkingDelta, Text: l.Event.Delta.Thinking}, l.ParentToolUseID))
			}
		}
	case "assistant":
		m, err := l.messageObject()
		if err != nil {
			return out, fmt.Errorf("decode assistant message: %w", err)
		}
		if m == nil || m.Model == "<synthetic>" {
			// Synthetic messages carry API errors; the result line reports them.
			return out, nil
		}
		t.noteEntry(l)
		blocks, err := m.blocks()
		if err != nil {
			return out, fmt.Errorf("decode assistant content: %w", err)
		}
		for _, b := range blocks {
			switch b.Type {
			case "text":
				out = append(out, t.event(agent.Event{Type: agent.EventText, Text: b.Text}, l.ParentToolUseID))
			case "thinking":
				out = append(out, t.event(agent.Event{Type: agent.EventThinking, Text: b.Thinking}, l.ParentToolUseID))
			case "tool_use":
				if t.clientCall(b, l.ParentToolUseID) {
					continue // the client's function: runs on the client, not in the workspace
				}
				if t.OnToolUse != nil {
					t.OnToolUse(b.Name, b.Input)
				}
				out = append(out, t.event(agent.Event{Type: agent.EventToolUse, ToolUseID: b.ID, Name: b.Name, Input: b.Input}, l.ParentToolUseID))
				if b.Name == "TodoWrite" {
					if todos, ok := decodeTodos(b.Input); ok {
						out = append(out, t.event(agent.Event{Type: agent.EventTodo, Todos: todos}, l.ParentToolUseID))
					}
				}
			}
		}
	case "user":
		m, err := l.messageObject()
		if err != nil {
			return out, fmt.Errorf("decode user message: %w", err)
		}
		if m == nil {
			return out, nil
		}
		t.noteEntry(l)
		blocks, err := m.blocks()
		if err != nil {
			return out, fmt.Errorf("decode user content: %w", err)
		}
		for _, b := range blocks {
			if b.Type == "tool_result" && !t.clientIDs[b.ToolUseID] {
				out = append(out, t.event(agent.Event{
					Type: agent.EventToolResult, ToolUseID: b.ToolUseID,
					Output: toolResultText(b.Content), IsError: b.IsError,
				}, l.ParentToolUseID))
			}
		}
	case "system":
		switch l.Subtype {
		case "api_retry":
			status := "no response"
			if l.ErrorStatus != nil {
				status = fmt.Sprintf("HTTP %d", *l.ErrorStatus)
			}
			out = append(out, t.event(agent.Event{
				Type: agent.EventNotice, Code: agent.CodeAPIRetry,
				Message: fmt.Sprintf("Anthropic API call failed (%s, %s); retry %d of %d in %d ms",
					status, l.Error, l.Attempt, l.MaxRetries, l.RetryDelay),
			}, nil))
		case "permission_denied":
			out = append(out, t.event(agent.Event{
				Type: agent.EventNotice, Code: agent.CodePermissionDenied, ToolUseID: l.ToolUseID,
				Name: l.ToolName, Message: l.messageText(),
			}, nil))
		}
	case "result":
		t.done = true
		out = append(out, t.resultEvent(l))
	}
	return out, nil
}

// clientCall gathers b when it is the main agent's call of a client
// function, and reports whether it was.
func (t *Translator) clientCall(b contentBlock, parent *string) bool {
	if parent != nil || t.ClientTool == nil {
		return false
	}
	name, ok := t.ClientTool(b.Name)
	if !ok {
		return false
	}
	args := string(bytes.TrimSpace(b.Input))
	if args == "" {
		args = "{}"
	}
	t.calls = append(t.calls, agent.ToolCall{ID: b.ID, Name: name, Arguments: args})
	if t.clientIDs == nil {
		t.clientIDs = map[string]bool{}
	}
	t.clientIDs[b.ID] = true
	return true
}

// noteEntry records a main-thread message line as the turn's last chain
// entry so far.
func (t *Translator) noteEntry(l *line) {
	if l.ParentToolUseID == nil && l.UUID != "" {
		t.End = l.UUID
	}
}

func (t *Translator) resultEvent(l *line) agent.Event {
	res := &agent.Result{
		TurnID:     t.TurnID,
		SessionID:  l.SessionID,
		StopReason: l.StopReason,
		NumTurns:   l.NumTurns,
		DurationMS: l.DurationMS,
	}
	if l.Result != nil {
		res.Text = *l.Result
	}
	if l.Usage != nil {
		res.Usage = *l.Usage
	}
	for _, mu := range l.TurnModelUsage {
		res.CostUSD += mu.CostUSD
	}
	if l.Subtype == "success" && !l.IsError {
		return t.event(agent.Event{Type: agent.EventResult, Result: res}, nil)
	}
	code, msg := agent.CodeInternal, strings.Join(l.Errors, "; ")
	switch {
	case l.Subtype == "success": // an API failure the CLI gave up on
		msg = res.Text
		code = classifyAPIStatus(l.APIErrorStatus)
	case l.Subtype == "error_max_turns":
		code = agent.CodeMaxTurns
		if msg == "" {
			msg = "the agent reached its maximum number of turns"
		}
	case strings.HasPrefix(l.TerminalReason, "aborted"):
		code, msg = agent.CodeInterrupted, "the turn was interrupted"
		if t.ClassifyInterrupt != nil {
			code, msg = t.ClassifyInterrupt()
		}
	}
	if msg == "" {
		msg = fmt.Sprintf("the agent turn failed (%s)", l.Subtype)
	}
	return t.event(agent.Event{Type: agent.EventError, Code: code, Message: msg, Result: res}, nil)
}

func classifyAPIStatus(status *int) string {
	if status == nil {
		return agent.CodeUpstream // no HTTP answer at all
	}
	return agent.CodeForHTTPStatus(*status)
}

func decodeTodos(input json.RawMessage) ([]agent.Todo, bool) {
	var in struct {
		Todos []struct {
			Content    string `json:"content"`
			Status     string `json:"status"`
			ActiveForm string `json:"activeForm"`
		} `json:"todos"`
	}
	if err := json.Unmarshal(input, &in); err != nil || in.Todos == nil {
		return nil, false
	}
	todos := make([]agent.Todo, len(in.Todos))
	for i, td := range in.Todos {
		todos[i] = agent.Todo{Content: td.Content, Status: td.Status, ActiveForm: td.ActiveForm}
	}
	return todos, true
}
