package anthropictest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// RecordedRequest is one request the mock received, other than control API
// requests. Its JSON form is what GET /_mock/requests returns.
type RecordedRequest struct {
	// Seq numbers the requests from 1 in the order they arrived.
	Seq int `json:"seq"`
	// Time is when the request arrived.
	Time time.Time `json:"time"`
	// Method is the HTTP method.
	Method string `json:"method"`
	// Path is the URL path, such as "/v1/messages".
	Path string `json:"path"`
	// Query is the raw URL query without "?", such as "beta=true".
	Query string `json:"query"`
	// Header holds the request headers.
	Header http.Header `json:"headers"`
	// Body is the complete request body as sent when it is valid JSON, a
	// JSON string of it when it is not, and nil when it is empty.
	Body json.RawMessage `json:"body"`
	// MatchedStep is the index of the script step that answered, or -1 for
	// the default response and for requests no script applies to.
	MatchedStep int `json:"matched_step"`
	// Done reports that the response has finished; the fields below are
	// only final then.
	Done bool `json:"done"`
	// Status is the HTTP status of the response (200 for streams, even
	// those ended by an error event).
	Status int `json:"status"`
	// ClientAborted reports that the client went away before the response
	// was complete.
	ClientAborted bool `json:"client_aborted"`
	// Duration is the time from arrival to the end of the response.
	Duration time.Duration `json:"duration_ns"`
}

// clone returns a deep copy of r.
func (r RecordedRequest) clone() RecordedRequest {
	c := r
	c.Header = r.Header.Clone()
	if r.Body != nil {
		c.Body = append(json.RawMessage(nil), r.Body...)
	}
	return c
}

// Message is one entry of a request's "messages" array.
type Message struct {
	// Role is "user" or "assistant".
	Role string `json:"role"`
	// Content is a JSON string or an array of content blocks.
	Content json.RawMessage `json:"content"`
}

// ContentBlock is one content block of a request message. Only the fields
// of its Type are set.
type ContentBlock struct {
	// Type is the block type, such as "text", "tool_use" or "tool_result".
	Type string `json:"type"`
	// Text is the text of a text block.
	Text string `json:"text,omitempty"`
	// Thinking is the text of a thinking block.
	Thinking string `json:"thinking,omitempty"`
	// Signature is the signature of a thinking block.
	Signature string `json:"signature,omitempty"`
	// ID is the id of a tool_use block.
	ID string `json:"id,omitempty"`
	// Name is the tool name of a tool_use block.
	Name string `json:"name,omitempty"`
	// Input is the input of a tool_use block.
	Input json.RawMessage `json:"input,omitempty"`
	// ToolUseID is the tool_use id a tool_result block answers.
	ToolUseID string `json:"tool_use_id,omitempty"`
	// Content is the content of a tool_result block: a JSON string or an
	// array of blocks.
	Content json.RawMessage `json:"content,omitempty"`
	// IsError marks a tool_result block that reports a failure.
	IsError bool `json:"is_error,omitempty"`
}

// Blocks returns the content blocks of m; string content comes back as one
// text block, and content that is neither yields nil.
func (m Message) Blocks() []ContentBlock {
	return decodeContent(m.Content)
}

// Text returns the text of m: its string content, or the text of its text
// blocks joined by "\n" (the Python mock's user_text).
func (m Message) Text() string {
	return contentText(m.Content)
}

// HasToolResult reports whether m carries a tool_result block.
func (m Message) HasToolResult() bool {
	for _, b := range m.Blocks() {
		if b.Type == "tool_result" {
			return true
		}
	}
	return false
}

// ResultText returns the text of a tool_result block: its string content,
// or the text of its text blocks joined by "\n".
func (b ContentBlock) ResultText() string {
	return contentText(b.Content)
}

// decodeContent decodes message or tool_result content: a JSON string
// becomes one text block, an array its blocks, anything else nil.
func decodeContent(raw json.RawMessage) []ContentBlock {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []ContentBlock{{Type: "text", Text: s}}
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil
	}
	blocks := make([]ContentBlock, 0, len(items))
	for _, it := range items {
		var b ContentBlock
		if err := json.Unmarshal(it, &b); err != nil {
			continue // not an object: the Python mock skips it too
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// contentText joins the text of string or block content with "\n".
func contentText(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	var texts []string
	for _, b := range decodeContent(raw) {
		if b.Type == "text" {
			texts = append(texts, b.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// Messages decodes the "messages" array of the request body. A body
// without messages gives nil and no error.
func (r RecordedRequest) Messages() ([]Message, error) {
	var body struct {
		Messages []Message `json:"messages"`
	}
	if len(r.Body) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return nil, fmt.Errorf("anthropictest: decode messages of request %d: %w", r.Seq, err)
	}
	return body.Messages, nil
}

// lastUser returns the last message with role "user" of msgs.
func lastUser(msgs []Message) (Message, bool) {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			return msgs[i], true
		}
	}
	return Message{}, false
}

// lastUserMessage returns the last user message of the request body.
func (r RecordedRequest) lastUserMessage() (Message, bool) {
	msgs, err := r.Messages()
	if err != nil {
		return Message{}, false
	}
	return lastUser(msgs)
}

// LastUserText returns the text of the last user message, as
// [Match.LastUserTextContains] sees it; "" when there is none.
func (r RecordedRequest) LastUserText() string {
	m, _ := r.lastUserMessage()
	return m.Text()
}

// HasToolResult reports whether the last user message carries a
// tool_result block, as [Match.HasToolResult] sees it.
func (r RecordedRequest) HasToolResult() bool {
	m, _ := r.lastUserMessage()
	return m.HasToolResult()
}

// ToolResultTexts returns the text of every tool_result block of the last
// user message, in order (see [ContentBlock.ResultText]).
func (r RecordedRequest) ToolResultTexts() []string {
	m, _ := r.lastUserMessage()
	var out []string
	for _, b := range m.Blocks() {
		if b.Type == "tool_result" {
			out = append(out, b.ResultText())
		}
	}
	return out
}

// AllText returns the body as the text [Match.AnyTextContains] searches:
// the JSON re-encoded like Python's json.dumps(ensure_ascii=False), with
// ", " and ": " separators and no \uXXXX escapes of printable characters.
// An empty body gives "".
func (r RecordedRequest) AllText() string {
	s, err := pyJSON(r.Body)
	if err != nil {
		return string(r.Body)
	}
	return s
}

// Bodies returns the requests' bodies as text, in order.
func Bodies(reqs []RecordedRequest) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = string(r.Body)
	}
	return out
}
