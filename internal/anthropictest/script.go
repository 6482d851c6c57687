package anthropictest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Unlimited is the [Step.Times] value for a step that never runs out.
const Unlimited = -1

// Content block types a scripted [Response] can produce.
const (
	BlockText     = "text"
	BlockThinking = "thinking"
	BlockToolUse  = "tool_use"
)

// Script decides how the mock answers Messages API requests. Its JSON form is
// the script file format of the Python reference mock.
type Script struct {
	// Default answers requests no step matches; nil means the text "OK".
	Default *Response `json:"default,omitempty"`
	// Steps are tried in order; the first one with uses left whose Match
	// fits the request answers it and uses up one of its Times.
	Steps []Step `json:"steps,omitempty"`
}

// Step is one scripted answer together with the requests it applies to.
type Step struct {
	// Match selects the requests this step answers; the zero Match fits
	// every /v1/messages request (count_tokens is never scripted).
	Match Match `json:"match"`
	// Response is the answer.
	Response Response `json:"response"`
	// Times is how many requests the step answers: 0 (or absent in JSON)
	// means once, like the Python mock's default of 1, and a negative value
	// such as [Unlimited] means without limit. Unlike the Python mock, an
	// explicit 0 does not disable the step; leave the step out instead.
	Times int `json:"times,omitempty"`
}

// Match lists conditions that must all hold for a [Step] to answer a
// request. Zero-valued fields impose no condition.
type Match struct {
	// PathPrefix must prefix the URL path; empty means "/v1/messages".
	PathPrefix string `json:"path_prefix,omitempty"`
	// Stream, when set, must equal the request body's "stream" flag.
	Stream *bool `json:"stream,omitempty"`
	// ModelContains must be a substring of the request's model.
	ModelContains string `json:"model_contains,omitempty"`
	// LastUserTextContains must be a substring of the text of the last user
	// message (its string content, or its text blocks joined by "\n").
	LastUserTextContains string `json:"last_user_text_contains,omitempty"`
	// AnyTextContains must be a substring of the request body as
	// [RecordedRequest.AllText] renders it (Python json.dumps style, with
	// ", " and ": " separators and no \uXXXX escapes).
	AnyTextContains string `json:"any_text_contains,omitempty"`
	// HasToolResult, when set, must equal whether the last user message
	// carries a tool_result block.
	HasToolResult *bool `json:"has_tool_result,omitempty"`
	// MinMessages is the minimum length of the "messages" array.
	MinMessages int `json:"min_messages,omitempty"`
}

// Response is one scripted answer.
type Response struct {
	// Text is the answer as a single text block, used when Blocks is nil;
	// empty means "OK". For an empty text block use Blocks.
	Text string `json:"text,omitempty"`
	// Blocks are the content blocks of the answer. A non-nil empty slice
	// gives an answer without content blocks.
	Blocks []Block `json:"blocks,omitempty"`
	// StopReason overrides the stop reason, which is otherwise "tool_use"
	// when a tool_use block is present and "end_turn" if not.
	StopReason string `json:"stop_reason,omitempty"`
	// ChunkChars is the number of characters (runes) per delta event;
	// zero or less means 12.
	ChunkChars int `json:"chunk_chars,omitempty"`
	// ChunkDelayMS is a pause after every delta event, in milliseconds.
	ChunkDelayMS int `json:"chunk_delay_ms,omitempty"`
	// StampDeltas replaces the text of every text delta with the time it
	// is sent, in Unix microseconds, and a space (the number of deltas
	// still follows Text and ChunkChars): a client on the same machine
	// can then tell each event's latency.
	StampDeltas bool `json:"stamp_deltas,omitempty"`
	// FirstByteDelayMS is a pause between the response headers and the
	// first SSE event, in milliseconds. Streaming only.
	FirstByteDelayMS int `json:"first_byte_delay_ms,omitempty"`
	// Usage overrides or adds keys of the usage object; by default
	// input_tokens and output_tokens are estimates, the cache counters 0
	// and service_tier "standard".
	Usage map[string]any `json:"usage,omitempty"`
	// Error, when set, makes the answer an HTTP error instead.
	Error *ErrorResponse `json:"error,omitempty"`
	// StreamErrorAfterDeltas, when set, ends the stream with an SSE
	// "error" event (overloaded_error) once that many delta events were
	// sent. It has no effect when the answer has fewer deltas.
	StreamErrorAfterDeltas *int `json:"stream_error_after_deltas,omitempty"`
	// HangAfterDeltas, when set, stalls the stream once that many delta
	// events were sent, until the client goes away or the server closes.
	// It is not part of the Python mock. Streaming only.
	HangAfterDeltas *int `json:"hang_after_deltas,omitempty"`
}

// MarshalJSON encodes r like the default encoding, except that a non-nil
// empty Blocks is kept as "blocks": [] so that it survives a round trip.
func (r Response) MarshalJSON() ([]byte, error) {
	type plain Response
	aux := struct {
		plain
		Blocks *[]Block `json:"blocks,omitempty"`
	}{plain: plain(r)}
	if r.Blocks != nil {
		aux.Blocks = &r.Blocks
	}
	return json.Marshal(aux)
}

// ErrorResponse is a scripted HTTP error, answered as
// {"type":"error","error":{"type":...,"message":...},"request_id":...}.
type ErrorResponse struct {
	// Status is the HTTP status; 0 means 500.
	Status int `json:"status,omitempty"`
	// Type is the error type; empty means the API's type for Status
	// (400 invalid_request_error, 401 authentication_error, 403
	// permission_error, 404 not_found_error, 413 request_too_large, 429
	// rate_limit_error, 500 api_error, 529 overloaded_error, else api_error).
	Type string `json:"type,omitempty"`
	// Message is the error message; empty means "mock error".
	Message string `json:"message,omitempty"`
	// Headers are extra response headers, such as "retry-after".
	Headers map[string]string `json:"headers,omitempty"`
}

// Block is one scripted content block.
type Block struct {
	// Type is [BlockText], [BlockThinking] or [BlockToolUse].
	Type string `json:"type"`
	// Text is the text of a text block.
	Text string `json:"text,omitempty"`
	// Thinking is the text of a thinking block.
	Thinking string `json:"thinking,omitempty"`
	// Signature is the signature of a thinking block; empty means
	// "mock-signature-" and the first 16 hex digits of sha256(Thinking).
	Signature string `json:"signature,omitempty"`
	// ID is the id of a tool_use block; empty means a generated
	// "toolu_01Mock…" id.
	ID string `json:"id,omitempty"`
	// Name is the tool name of a tool_use block.
	Name string `json:"name,omitempty"`
	// Input is the JSON input of a tool_use block; empty means {}. Its key
	// order is kept in the streamed input_json_delta.
	Input json.RawMessage `json:"input,omitempty"`
}

// MarshalJSON encodes b with the keys its type uses, so that a text block
// keeps "text" even when it is empty, as the Python mock requires.
func (b Block) MarshalJSON() ([]byte, error) {
	var o object
	o.set("type", b.Type)
	switch b.Type {
	case BlockText:
		o.set("text", b.Text)
	case BlockThinking:
		o.set("thinking", b.Thinking)
		if b.Signature != "" {
			o.set("signature", b.Signature)
		}
	case BlockToolUse:
		if b.ID != "" {
			o.set("id", b.ID)
		}
		o.set("name", b.Name)
		if len(b.Input) > 0 {
			o.set("input", b.Input)
		}
	default:
		type plain Block
		return json.Marshal(plain(b))
	}
	return o.MarshalJSON()
}

// ToolUse returns a tool_use block calling the named tool with input encoded
// as JSON (a map's keys come out sorted). It panics if input cannot be
// encoded, which is a bug in the test that calls it.
func ToolUse(name string, input any) Block {
	raw, err := json.Marshal(input)
	if err != nil {
		panic(fmt.Sprintf("anthropictest.ToolUse(%q): encode input: %v", name, err))
	}
	return Block{Type: BlockToolUse, Name: name, Input: raw}
}

// ParseScript decodes a script in the JSON format of the Python mock and
// validates it. Unknown keys are rejected, so typos in match keys do not
// silently match everything.
func ParseScript(data []byte) (Script, error) {
	var s Script
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Script{}, fmt.Errorf("anthropictest: decode script: %w", err)
	}
	if dec.More() {
		return Script{}, errors.New("anthropictest: decode script: trailing data after the JSON object")
	}
	if err := s.Validate(); err != nil {
		return Script{}, err
	}
	return s, nil
}

// Validate reports the first problem that would make a scripted response
// fail when it is used.
func (s Script) Validate() error {
	if s.Default != nil {
		if err := s.Default.validate(); err != nil {
			return fmt.Errorf("anthropictest: script default: %w", err)
		}
	}
	for i, st := range s.Steps {
		if err := st.Response.validate(); err != nil {
			return fmt.Errorf("anthropictest: script step %d: %w", i, err)
		}
	}
	return nil
}

func (r *Response) validate() error {
	if e := r.Error; e != nil {
		if e.Status != 0 && (e.Status < 100 || e.Status > 999) {
			return fmt.Errorf("error status %d out of range", e.Status)
		}
		return nil
	}
	for i, b := range r.Blocks {
		switch b.Type {
		case BlockText, BlockThinking:
		case BlockToolUse:
			if b.Name == "" {
				return fmt.Errorf("block %d: tool_use without a name", i)
			}
			if len(b.Input) > 0 && !json.Valid(b.Input) {
				return fmt.Errorf("block %d: tool_use input is not valid JSON", i)
			}
		default:
			return fmt.Errorf("block %d: unknown block type %q", i, b.Type)
		}
	}
	return nil
}

// errorType returns the Messages API error type for an HTTP status.
func errorType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 529:
		return "overloaded_error"
	default:
		return "api_error"
	}
}
