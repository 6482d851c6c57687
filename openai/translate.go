package openai

import (
	"fmt"
	"strings"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
)

// ToolRendering says how the agent's tool activity appears in the answer
// content.
type ToolRendering string

// Tool renderings.
const (
	// ToolsOff shows no tool activity: the content is the answer text only.
	// The empty ToolRendering means the same.
	ToolsOff ToolRendering = "off"
	// ToolsSummary shows one line per tool call, failed results, denied
	// calls and the task list.
	ToolsSummary ToolRendering = "summary"
	// ToolsFull is ToolsSummary plus every result's output in a fenced code
	// block, cut to 2000 bytes.
	ToolsFull ToolRendering = "full"
)

// ParseToolRendering parses "off", "summary" or "full" ("" is off).
func ParseToolRendering(s string) (ToolRendering, error) {
	switch ToolRendering(s) {
	case "", ToolsOff:
		return ToolsOff, nil
	case ToolsSummary, ToolsFull:
		return ToolRendering(s), nil
	}
	return "", fmt.Errorf("unknown tool rendering %q: want off, summary or full", s)
}

// Options configure a [StreamWriter] or a [Collector].
type Options struct {
	// Model is echoed in the response's model field.
	Model string
	// IncludeUsage adds the usage chunk to a stream (the request's
	// stream_options.include_usage). A Collector always reports usage.
	IncludeUsage bool
	// Reasoning sends the model's thinking as delta.reasoning_content (or
	// message.reasoning_content); without it thinking is dropped.
	Reasoning bool
	// Tools says how tool activity is rendered into the content.
	Tools ToolRendering
	// ID is the response id; a new one is generated when empty.
	ID string
	// Created is the response's creation time; now when zero.
	Created time.Time
	// KeepContent makes a StreamWriter keep the content it sent, for
	// [StreamWriter.Content].
	KeepContent bool
}

func (o *Options) normalize() {
	if o.ID == "" {
		o.ID = NewID()
	}
	if o.Created.IsZero() {
		o.Created = time.Now()
	}
	if o.Tools == "" {
		o.Tools = ToolsOff
	}
}

// sink receives the translated output. sep is a separator written just
// before text, as part of the same piece.
type sink interface {
	content(sep, text string)
	reasoning(sep, text string)
	// toolCalls receives the client function calls that end the answer.
	toolCalls(calls []ToolCall)
}

// Markers stored in translator.tools in place of a tool name.
const (
	toolTodoWrite = "\x00todo"
	toolDenied    = "\x00denied"
)

// translator turns agent events into content and reasoning text. It is the
// shared core of StreamWriter and Collector.
type translator struct {
	opts Options
	out  sink

	contentLen int
	tail       [2]byte // the last two bytes of the content
	answerLen  int     // contentLen before the terminal note, once done
	mainText   bool    // the main agent produced answer text

	reasoningLen int

	textOpen        bool // text deltas were seen since the last block boundary
	textDeltaBytes  int
	textDeltaHash   uint64 // FNV-1a of the open text block's deltas
	thinkOpen       bool
	thinkDeltaBytes int

	tools   map[string]string // tool_use id -> name (or a marker)
	retries int

	calls []ToolCall // the client function calls that ended the answer

	final *agent.Event // the result or error event that ended the turn
	done  bool
}

// FNV-1a, 64 bit: cheap, allocation-free fingerprints of streamed text.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func (t *translator) pushTail(s string) {
	switch n := len(s); {
	case n >= 2:
		t.tail = [2]byte{s[n-2], s[n-1]}
	case n == 1:
		t.tail = [2]byte{t.tail[1], s[0]}
	}
}

func (t *translator) addContent(sep, s string) {
	if sep == "" && s == "" {
		return
	}
	t.out.content(sep, s)
	t.contentLen += len(sep) + len(s)
	t.pushTail(sep)
	t.pushTail(s)
}

func (t *translator) addReasoning(sep, s string) {
	if s == "" {
		return
	}
	t.out.reasoning(sep, s)
	t.reasoningLen += len(sep) + len(s)
}

// paragraphSep returns what puts the next content on a fresh paragraph.
func (t *translator) paragraphSep() string {
	switch {
	case t.contentLen == 0:
		return ""
	case t.tail[1] != '\n':
		return "\n\n"
	case t.contentLen >= 2 && t.tail[0] == '\n':
		return ""
	default:
		return "\n"
	}
}

// addBlock adds rendered markdown on a fresh paragraph.
func (t *translator) addBlock(s string) {
	if s != "" {
		t.addContent(t.paragraphSep(), s)
	}
}

// boundary closes the open text and thinking blocks.
func (t *translator) boundary() {
	t.textOpen = false
	t.thinkOpen = false
}

func (t *translator) rendering() bool {
	return t.opts.Tools == ToolsSummary || t.opts.Tools == ToolsFull
}

func (t *translator) setTool(id, name string) {
	if id == "" {
		return
	}
	if t.tools == nil {
		t.tools = make(map[string]string)
	}
	t.tools[id] = name
}

// event translates e. It reports whether e ended the turn.
func (t *translator) event(e *agent.Event) bool {
	if t.done {
		return false
	}
	// Sub-agent text and thinking are the Task tool's business; its
	// result carries them.
	sub := e.ParentToolUseID != ""
	switch e.Type {
	case agent.EventTextDelta:
		if !sub {
			t.textDelta(e.Text)
		}
	case agent.EventText:
		if !sub {
			t.text(e.Text)
		}
	case agent.EventThinkingDelta:
		if !sub {
			t.thinkingDelta(e.Text)
		}
	case agent.EventThinking:
		if !sub {
			t.thinking(e.Text)
		}
	case agent.EventToolUse:
		t.toolUse(e)
	case agent.EventToolResult:
		t.toolResult(e)
	case agent.EventTodo:
		t.todo(e)
	case agent.EventNotice:
		t.notice(e)
	case agent.EventClientToolCalls:
		t.clientToolCalls(e)
		return true
	case agent.EventResult:
		t.result(e)
		return true
	case agent.EventError:
		t.fail(e)
		return true
	}
	return false
}

// textDelta adds a piece of answer text; the first piece of a block goes
// on a fresh paragraph.
func (t *translator) textDelta(s string) {
	if s == "" {
		return
	}
	sep := ""
	if !t.textOpen {
		t.textOpen, t.textDeltaBytes, t.textDeltaHash = true, 0, fnvOffset
		sep = t.paragraphSep()
	}
	t.textDeltaBytes += len(s)
	t.textDeltaHash = fnvAdd(t.textDeltaHash, s)
	t.mainText = true
	t.addContent(sep, s)
}

// text adds a finished text block: after its deltas, what they missed;
// without deltas, the whole block on a fresh paragraph.
func (t *translator) text(s string) {
	if t.textOpen {
		t.closeText(s)
		return
	}
	if s == "" {
		return
	}
	t.mainText = true
	t.addContent(t.paragraphSep(), s)
}

// closeText ends the streamed text block with the finished block s.
func (t *translator) closeText(s string) {
	t.textOpen = false
	n := t.textDeltaBytes
	if len(s) >= n && fnvAdd(fnvOffset, s[:n]) == t.textDeltaHash {
		// The deltas carried the block; add only what they missed.
		if len(s) > n {
			t.addContent("", s[n:])
		}
		return
	}
	// The block is not what was streamed: the stream broke off and the
	// answer came another way (the CLI's non-streaming retry). What was
	// streamed cannot be taken back; the answer follows.
	if s != "" {
		t.addContent(t.paragraphSep(), s)
	}
}

// thinkingDelta adds a piece of thinking; blocks are a blank line apart.
func (t *translator) thinkingDelta(s string) {
	if s == "" {
		return
	}
	sep := ""
	if !t.thinkOpen {
		t.thinkOpen, t.thinkDeltaBytes = true, 0
		if t.reasoningLen > 0 {
			sep = "\n\n"
		}
	}
	t.thinkDeltaBytes += len(s)
	if t.opts.Reasoning {
		t.addReasoning(sep, s)
	}
}

// thinking adds a finished thinking block: after its deltas, what they
// missed; without deltas, the whole block.
func (t *translator) thinking(s string) {
	if t.thinkOpen {
		if t.opts.Reasoning && len(s) > t.thinkDeltaBytes {
			t.addReasoning("", s[t.thinkDeltaBytes:])
		}
		t.thinkOpen = false
		return
	}
	if t.opts.Reasoning && s != "" {
		sep := ""
		if t.reasoningLen > 0 {
			sep = "\n\n"
		}
		t.addReasoning(sep, s)
	}
}

// toolUse renders a tool call (TodoWrite shows as the todo event that
// follows it).
func (t *translator) toolUse(e *agent.Event) {
	t.boundary()
	if !t.rendering() {
		return
	}
	if e.Name == "TodoWrite" {
		t.setTool(e.ToolUseID, toolTodoWrite)
		return
	}
	t.setTool(e.ToolUseID, e.Name)
	t.addBlock(renderToolUse(e.Name, e.Input))
}

// toolResult renders a tool call's result, except TodoWrite's and the
// error result of a call whose denial was already shown.
func (t *translator) toolResult(e *agent.Event) {
	t.boundary()
	if !t.rendering() {
		return
	}
	name := t.tools[e.ToolUseID]
	delete(t.tools, e.ToolUseID)
	if name == toolTodoWrite || (name == toolDenied && e.IsError) {
		return
	}
	t.addBlock(renderToolResult(e.Output, e.IsError, t.opts.Tools == ToolsFull))
}

// todo renders the task list.
func (t *translator) todo(e *agent.Event) {
	t.boundary()
	if t.rendering() {
		t.addBlock(renderTodos(e.Todos))
	}
}

// notice counts API retries and renders restarts and denied tool calls.
func (t *translator) notice(e *agent.Event) {
	switch e.Code {
	case agent.CodeAPIRetry:
		t.retries++
	case agent.CodeRestarted, agent.CodeBranch, agent.CodeToolTimeout:
		// Things the user must know about the conversation itself come
		// first, as an italic note of their own.
		t.boundary()
		t.addBlock(restartNote(e.Message))
	case agent.CodePermissionDenied:
		t.boundary()
		if t.rendering() {
			t.denied(e)
		}
	}
}

// denied renders a denied tool call and marks it, so its error result is
// not shown again.
func (t *translator) denied(e *agent.Event) {
	name := e.Name
	if prev := t.tools[e.ToolUseID]; name == "" && prev != toolTodoWrite && prev != toolDenied {
		name = prev
	}
	t.setTool(e.ToolUseID, toolDenied)
	t.addBlock(renderDenied(name, e.Message))
}

// result ends a successful turn; with no text events, the CLI's final
// text is the answer.
func (t *translator) result(e *agent.Event) {
	t.boundary()
	t.answerLen = t.contentLen
	if !t.mainText && e.Result != nil && e.Result.Text != "" {
		t.addBlock(e.Result.Text)
		t.answerLen = t.contentLen
	}
	t.end(e)
}

// clientToolCalls ends the answer with calls of the client's functions:
// the turn waits for their results, which come with the client's next
// request.
func (t *translator) clientToolCalls(e *agent.Event) {
	t.boundary()
	t.answerLen = t.contentLen
	t.calls = convertToolCalls(e.Calls)
	if len(t.calls) > 0 {
		t.out.toolCalls(t.calls)
	}
	t.end(e)
}

// convertToolCalls converts the agent's calls to OpenAI's form; empty
// arguments become "{}", which clients can parse.
func convertToolCalls(calls []agent.ToolCall) []ToolCall {
	if len(calls) == 0 {
		return nil
	}
	out := make([]ToolCall, len(calls))
	for i, c := range calls {
		args := c.Arguments
		if strings.TrimSpace(args) == "" {
			args = "{}"
		}
		out[i] = ToolCall{ID: c.ID, Type: ToolTypeFunction, Function: FunctionCall{Name: c.Name, Arguments: args}}
	}
	return out
}

// fail ends the turn with an error note in the content.
func (t *translator) fail(e *agent.Event) {
	t.boundary()
	t.answerLen = t.contentLen
	t.addBlock(errorNote(e.Message))
	t.end(e)
}

func (t *translator) end(e *agent.Event) {
	f := *e
	t.final = &f
	t.done = true
}

// finishReason is "tool_calls" for an answer that ended with client
// function calls, "length" for a turn cut at the output limit, else
// "stop".
func (t *translator) finishReason() string {
	switch {
	case len(t.calls) > 0:
		return FinishToolCalls
	case t.final != nil && t.final.Type == agent.EventResult && t.final.Result != nil &&
		t.final.Result.StopReason == "max_tokens":
		return FinishLength
	}
	return FinishStop
}

// usage converts the final event's usage (zero when unknown).
func (t *translator) usage() Usage {
	if t.final == nil || t.final.Result == nil {
		return Usage{}
	}
	return convertUsage(t.final.Result.Usage)
}

func convertUsage(u agent.Usage) Usage {
	prompt := u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens
	out := Usage{
		PromptTokens:     prompt,
		CompletionTokens: u.OutputTokens,
		TotalTokens:      prompt + u.OutputTokens,
	}
	if u.CacheReadInputTokens > 0 {
		out.PromptTokensDetails = &PromptTokensDetails{CachedTokens: u.CacheReadInputTokens}
	}
	return out
}

// errorEvent returns the final event if it is an error.
func (t *translator) errorEvent() *agent.Event {
	if t.final != nil && t.final.Type == agent.EventError {
		e := *t.final
		return &e
	}
	return nil
}
