package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// DefaultMaxBodyBytes is the request size limit [ParseChatCompletionRequest]
// applies when it is given a limit of zero or less.
const DefaultMaxBodyBytes int64 = 8 << 20

// Message roles accepted in a request.
const (
	// RoleSystem is a system prompt.
	RoleSystem = "system"
	// RoleDeveloper is a system prompt in the newer OpenAI naming.
	RoleDeveloper = "developer"
	// RoleUser is the end user.
	RoleUser = "user"
	// RoleAssistant is an earlier answer.
	RoleAssistant = "assistant"
	// RoleTool is the result of a client-side tool call.
	RoleTool = "tool"
)

// ChatCompletionRequest is the body of POST /v1/chat/completions.
//
// Model, Messages, Stream, StreamOptions, User and the tool fields (Tools,
// ToolChoice, ParallelToolCalls: the client's own functions) drive the
// gateway. The sampling fields are decoded so that a value of the wrong
// type is rejected with 400, as OpenAI does, and are otherwise ignored:
// the agent chooses its own model settings. Unknown fields are accepted
// and ignored, since clients send many.
type ChatCompletionRequest struct {
	// Model names the agent configuration to run (the client's model id).
	Model string `json:"model"`
	// Messages is the conversation so far; the last one is the user's new
	// message.
	Messages []Message `json:"messages"`
	// Stream asks for a chat.completion.chunk SSE stream instead of one
	// chat.completion object.
	Stream bool `json:"stream,omitempty"`
	// StreamOptions holds options of a streaming request.
	StreamOptions *StreamOptions `json:"stream_options,omitempty"`
	// User is the client's end-user id (LibreChat sends its user id).
	User string `json:"user,omitempty"`

	// MaxTokens is accepted and ignored.
	MaxTokens *int64 `json:"max_tokens,omitempty"`
	// MaxCompletionTokens is accepted and ignored.
	MaxCompletionTokens *int64 `json:"max_completion_tokens,omitempty"`
	// Temperature is accepted and ignored.
	Temperature *float64 `json:"temperature,omitempty"`
	// TopP is accepted and ignored.
	TopP *float64 `json:"top_p,omitempty"`
	// N is accepted and ignored: a response always has one choice.
	N *int64 `json:"n,omitempty"`
	// Stop is accepted and ignored.
	Stop json.RawMessage `json:"stop,omitempty"`
	// PresencePenalty is accepted and ignored.
	PresencePenalty *float64 `json:"presence_penalty,omitempty"`
	// FrequencyPenalty is accepted and ignored.
	FrequencyPenalty *float64 `json:"frequency_penalty,omitempty"`
	// Seed is accepted and ignored.
	Seed *int64 `json:"seed,omitempty"`
	// Tools are the client's functions the model may call next to the
	// agent's own tools; a call ends the answer with tool_calls.
	Tools []Tool `json:"tools,omitempty"`
	// ToolChoice is "none", "auto", "required" or a named function; nil
	// when absent (auto).
	ToolChoice *ToolChoice `json:"tool_choice,omitempty"`
	// ParallelToolCalls false asks for at most one function call per step.
	ParallelToolCalls *bool `json:"parallel_tool_calls,omitempty"`
	// ResponseFormat is accepted and ignored.
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
	// ReasoningEffort is accepted and ignored.
	ReasoningEffort string `json:"reasoning_effort,omitempty"`
	// Metadata is accepted and ignored.
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// StreamOptions are the options of a streaming request.
type StreamOptions struct {
	// IncludeUsage asks for a final chunk with "choices": [] and the
	// turn's token usage.
	IncludeUsage bool `json:"include_usage"`
}

// Message is one message of a request's conversation.
type Message struct {
	// Role is system, developer, user, assistant or tool.
	Role string `json:"role"`
	// Content is the message text: a string, an array of parts, or null.
	Content Content `json:"content"`
	// Name is an optional participant name.
	Name string `json:"name,omitempty"`
	// ToolCallID is the tool call a tool message answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// ToolCalls are an assistant message's calls of client functions.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// Content is a message's content, which OpenAI allows as a string, an
// array of content parts or null. The zero value is null.
type Content struct {
	// String is the content when it was sent as a JSON string.
	String *string
	// Parts is the content when it was sent as an array of parts (non-nil,
	// possibly empty).
	Parts []ContentPart
}

// ContentPart is one element of an array content.
type ContentPart struct {
	// Type is "text", "image_url", "file" or "refusal".
	Type string `json:"type"`
	// Text is the text of a "text" part.
	Text string `json:"text,omitempty"`
	// Refusal is the text of a "refusal" part (assistant messages).
	Refusal string `json:"refusal,omitempty"`
	// ImageURL is the image of an "image_url" part.
	ImageURL *ImageURL `json:"image_url,omitempty"`
	// File is the file of a "file" part.
	File *FilePart `json:"file,omitempty"`

	image *Image // the validated image of an image_url part
	file  *File  // the validated file of a file part
}

// TextContent returns a string Content holding s.
func TextContent(s string) Content { return Content{String: &s} }

// IsNull reports whether the content is null (or was absent).
func (c Content) IsNull() bool { return c.String == nil && c.Parts == nil }

// Text returns the content as text: the string itself, or the parts
// joined with "\n", each text part as its text, each image as "[image]"
// and each file as "[file: name]" ("[file]" without a name). Refusal
// parts are skipped. It depends on the parts' text, types and file names
// only, so a message's text (and fingerprint, and history line) is the
// same however its attachments are encoded.
func (c Content) Text() string {
	if c.String != nil {
		return *c.String
	}
	return c.join(true)
}

// TextOnly returns the string content, or the text parts joined with
// "\n", without the attachment placeholders of [Content.Text]: the
// prompt of a message whose attachments go along separately.
func (c Content) TextOnly() string {
	if c.String != nil {
		return *c.String
	}
	return c.join(false)
}

// join joins the text parts, and the attachment placeholders when
// attachments is set, with "\n".
func (c Content) join(attachments bool) string {
	var first string
	n := 0
	var b strings.Builder
	for i := range c.Parts {
		p := &c.Parts[i]
		if !attachments && p.Type != PartText {
			continue
		}
		s, ok := p.placeholder()
		if !ok {
			continue
		}
		switch n {
		case 0:
			first = s
		case 1:
			b.WriteString(first)
			fallthrough
		default:
			b.WriteByte('\n')
			b.WriteString(s)
		}
		n++
	}
	if n <= 1 {
		return first
	}
	return b.String()
}

// MarshalJSON encodes the content as a string, an array of parts or null,
// as it was sent.
func (c Content) MarshalJSON() ([]byte, error) {
	switch {
	case c.String != nil:
		return json.Marshal(*c.String)
	case c.Parts != nil:
		return json.Marshal(c.Parts)
	default:
		return []byte("null"), nil
	}
}

// UnmarshalJSON decodes a string, an array of parts or null.
func (c *Content) UnmarshalJSON(data []byte) error {
	v, perr := parseContent(data, "content")
	if perr != nil {
		return errors.New(perr.Message)
	}
	*c = v
	return nil
}

// parseContent decodes a raw content value. param names it in errors.
func parseContent(raw []byte, param string) (Content, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Content{}, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Content{}, BadRequest(param+" is not a valid string", param)
		}
		return Content{String: &s}, nil
	case '[':
		var raws []json.RawMessage
		if err := json.Unmarshal(raw, &raws); err != nil {
			return Content{}, BadRequest(param+" is not a valid array", param)
		}
		parts := make([]ContentPart, 0, len(raws))
		for j, pr := range raws {
			pparam := param + "[" + strconv.Itoa(j) + "]"
			pr = bytes.TrimSpace(pr)
			if len(pr) == 0 || pr[0] != '{' {
				return Content{}, BadRequest(pparam+" must be a content part object", pparam)
			}
			var p ContentPart
			if err := json.Unmarshal(pr, &p); err != nil {
				return Content{}, decodeError(err, pparam+".")
			}
			parts = append(parts, p)
		}
		return Content{Parts: parts}, nil
	default:
		return Content{}, BadRequest(param+" must be a string, an array of content parts, or null", param)
	}
}

// IncludeUsage reports whether the client asked for a usage chunk.
func (r *ChatCompletionRequest) IncludeUsage() bool {
	return r.Stream && r.StreamOptions != nil && r.StreamOptions.IncludeUsage
}

// LastUserText returns the text of the last user message ("" if there is
// none), without attachment placeholders ([Content.TextOnly]): the prompt,
// whose attachments come from [ChatCompletionRequest.Attachments]. It may
// be empty when the message is attachments only. A request that ends in
// tool results ([ChatCompletionRequest.ToolResults]) has no new user
// message: this is then an earlier one.
func (r *ChatCompletionRequest) LastUserText() string {
	if i := r.lastUser(); i >= 0 {
		return r.Messages[i].Content.TextOnly()
	}
	return ""
}

// History returns the messages before the last user message: the
// conversation the client believes the agent has already seen. (For a
// request that ends in tool results, see [ChatCompletionRequest.ToolResults].)
func (r *ChatCompletionRequest) History() []Message {
	if i := r.lastUser(); i >= 0 {
		return r.Messages[:i]
	}
	return r.Messages
}

// SystemText returns the texts of the system and developer messages joined
// with a blank line ("" if there are none).
func (r *ChatCompletionRequest) SystemText() string {
	var parts []string
	for _, m := range r.Messages {
		if m.Role == RoleSystem || m.Role == RoleDeveloper {
			if t := strings.TrimSpace(m.Content.Text()); t != "" {
				parts = append(parts, t)
			}
		}
	}
	return strings.Join(parts, "\n\n")
}

func (r *ChatCompletionRequest) lastUser() int {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == RoleUser {
			return i
		}
	}
	return -1
}

// requestFields is ChatCompletionRequest without its methods, for embedding
// in the wire form below.
type requestFields ChatCompletionRequest

// requestWire decodes a request with its messages left raw, so that each
// message can be decoded on its own and errors can name its index.
type requestWire struct {
	*requestFields
	Messages   []json.RawMessage `json:"messages"`
	Tools      json.RawMessage   `json:"tools"`
	ToolChoice json.RawMessage   `json:"tool_choice"`
}

type messageFields Message

type messageWire struct {
	*messageFields
	Content   json.RawMessage `json:"content"`
	ToolCalls json.RawMessage `json:"tool_calls"`
}

// embeddedPrefixes are the names of the embedded structs above, which
// encoding/json puts at the front of UnmarshalTypeError.Field.
var embeddedPrefixes = []string{"requestFields.", "messageFields."}

// ParseChatCompletionRequest is [ParseRequest] with a body limit of
// maxBytes bytes (zero or less means [DefaultMaxBodyBytes]) and the other
// [ParseOptions] at their defaults (image URLs refused).
func ParseChatCompletionRequest(r io.Reader, maxBytes int64) (*ChatCompletionRequest, *Error) {
	return ParseRequest(r, ParseOptions{MaxBodyBytes: maxBytes})
}

// ParseRequest reads a request body, decodes it and validates it. On
// failure it returns an [Error] ready to be written to the client: 413 for
// an oversized body, image or file (naming the part in Param), 400 naming
// the offending field in Param otherwise.
//
// A valid request has a model, at least one message, only known roles,
// contents that are strings, parts, or null (the latter only for an
// assistant message with tool calls), no NUL bytes in texts, no empty user
// message, and last a user message or the tool results of the assistant
// message before them. Parts are text, refusal (assistant messages),
// image_url and file (user messages): images as data: URLs of PNG, JPEG,
// GIF or WebP data (http(s) URLs only as [ParseOptions.FetchImageURL]
// allows), files as data: URLs or bare base64. tools declare functions
// only; tool_choice names a declared one, if any.
func ParseRequest(r io.Reader, opts ParseOptions) (*ChatCompletionRequest, *Error) {
	opts.normalize()
	maxBytes := opts.MaxBodyBytes
	body, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, TooLarge(mbe.Limit)
		}
		// The read error names this server's address: not for the client.
		return nil, BadRequest("could not read the whole request body; send it again", "")
	}
	if int64(len(body)) > maxBytes {
		return nil, TooLarge(maxBytes)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, BadRequest("the request body is empty; expected a JSON object", "")
	}
	if body[0] != '{' {
		return nil, BadRequest("the request body must be a JSON object", "")
	}

	req := new(ChatCompletionRequest)
	wire := requestWire{requestFields: (*requestFields)(req)}
	if err := json.Unmarshal(body, &wire); err != nil {
		return nil, decodeError(err, "")
	}
	if e := validateRequest(req, &wire, &opts); e != nil {
		return nil, e
	}
	return req, nil
}

func validateRequest(req *ChatCompletionRequest, wire *requestWire, opts *ParseOptions) *Error {
	if e := validateMessages(req, wire.Messages, opts); e != nil {
		return e
	}
	tools, e := parseTools(wire.Tools)
	if e != nil {
		return e
	}
	req.Tools = tools
	req.ToolChoice, e = parseToolChoice(wire.ToolChoice, tools)
	return e
}

func validateMessages(req *ChatCompletionRequest, raws []json.RawMessage, opts *ParseOptions) *Error {
	if strings.TrimSpace(req.Model) == "" {
		return BadRequest("you must provide a model parameter", "model")
	}
	if strings.IndexByte(req.Model, 0) >= 0 {
		return BadRequest("model must not contain NUL bytes", "model")
	}
	if raws == nil {
		return BadRequest("messages is required", "messages")
	}
	if len(raws) == 0 {
		return BadRequest("messages must contain at least one message", "messages")
	}
	req.Messages = make([]Message, len(raws))
	last := len(raws) - 1
	for i, raw := range raws {
		if e := opts.parseMessage(raw, i, &req.Messages[i], i == last); e != nil {
			return e
		}
	}
	switch role := req.Messages[last].Role; role {
	case RoleUser:
		return nil
	case RoleTool:
		return validateToolEnding(req.Messages)
	default:
		return BadRequest(fmt.Sprintf("the last message must be from the user (or tool results), not %q", role), "messages")
	}
}

// parseMessage decodes and validates message i; last tells the new
// message, whose attachments count against the limits.
func (o *ParseOptions) parseMessage(raw json.RawMessage, i int, m *Message, last bool) *Error {
	param := "messages[" + strconv.Itoa(i) + "]"
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return BadRequest(param+" must be a message object", param)
	}
	wire := messageWire{messageFields: (*messageFields)(m)}
	if err := json.Unmarshal(raw, &wire); err != nil {
		return decodeError(err, param+".")
	}
	switch m.Role {
	case RoleSystem, RoleDeveloper, RoleUser, RoleAssistant, RoleTool:
	case "":
		return BadRequest(param+".role is required", param+".role")
	default:
		return BadRequest(fmt.Sprintf("%s.role must be one of system, developer, user, assistant or tool, not %q", param, m.Role), param+".role")
	}

	if e := parseToolCalls(wire.ToolCalls, param+".tool_calls", m); e != nil {
		return e
	}
	c, e := o.parseMessageContent(wire.Content, m.Role, len(m.ToolCalls) > 0, last, param+".content")
	m.Content = c
	return e
}

// parseMessageContent decodes and validates a message's content (param
// names it) for a message of role, with tool calls or not; last tells
// the new message, whose attachments count against the limits. Image and
// file parts come back validated, with their attachments.
func (o *ParseOptions) parseMessageContent(raw json.RawMessage, role string, hasToolCalls, last bool, param string) (Content, *Error) {
	c, e := parseContent(raw, param)
	if e != nil {
		return Content{}, e
	}
	if c.IsNull() {
		if role == RoleAssistant && hasToolCalls {
			return c, nil
		}
		return Content{}, BadRequest(param+" must not be null (null is only allowed in an assistant message with tool_calls)", param)
	}
	if c.String != nil && strings.IndexByte(*c.String, 0) >= 0 {
		return Content{}, BadRequest(param+" must not contain NUL bytes", param)
	}
	var count *partCounter
	if last && role == RoleUser {
		count = new(partCounter)
	}
	attachments := false
	for j := range c.Parts {
		p := &c.Parts[j]
		if e := o.parsePart(p, role, param+"["+strconv.Itoa(j)+"]", count); e != nil {
			return Content{}, e
		}
		attachments = attachments || p.image != nil || p.file != nil
	}
	if role == RoleUser && !attachments && strings.TrimSpace(c.TextOnly()) == "" {
		return Content{}, BadRequest(param+" must not be empty", param)
	}
	return c, nil
}

// decodeError turns a json.Unmarshal error into a 400, naming the field of
// a type error (prefixed with prefix) when encoding/json reports it.
func decodeError(err error, prefix string) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		for _, p := range embeddedPrefixes {
			field = strings.ReplaceAll(field, p, "")
		}
		param := prefix + field
		param = strings.TrimSuffix(param, ".")
		if param == "" {
			return BadRequest(fmt.Sprintf("invalid JSON value: expected %s, got %s", jsonTypeName(te.Type.Kind().String()), te.Value), "")
		}
		return BadRequest(fmt.Sprintf("invalid type for %s: expected %s, got %s", param, jsonTypeName(te.Type.Kind().String()), te.Value), param)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return BadRequest(fmt.Sprintf("the request body is not valid JSON (at byte %d): %s", se.Offset, se.Error()), "")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return BadRequest("the request body is not valid JSON: unexpected end of input", "")
	}
	msg := err.Error()
	if strings.HasPrefix(prefix, "messages[") {
		return BadRequest("invalid value: "+msg, strings.TrimSuffix(prefix, "."))
	}
	return BadRequest("the request body could not be decoded: "+msg, "")
}

// jsonTypeName names a Go kind the way a JSON user thinks of it.
func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	default:
		return kind
	}
}
