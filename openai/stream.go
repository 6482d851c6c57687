package openai

import (
	"io"
	"strings"
	"sync"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Fixed pieces of the hand-written chunks. A chunk is
//
//	data: {"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[CHOICE]}\n\n
//
// with the same field order and escaping as json.Marshal of
// ChatCompletionChunk.
const (
	choiceContentHead   = `{"index":0,"delta":{"content":"`
	choiceReasoningHead = `{"index":0,"delta":{"reasoning_content":"`
	choiceToolCallHead  = `{"index":0,"delta":{"tool_calls":[{"index":`
	choiceToolCallTail  = `}}]},"finish_reason":null}]}` + "\n\n"
	choiceDeltaTail     = `"},"finish_reason":null}]}` + "\n\n"
	choiceRole          = `{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"
	choiceFinishHead    = `{"index":0,"delta":{},"finish_reason":"`
	choiceFinishTail    = `"}]}` + "\n\n"
	sseDone             = "data: [DONE]\n\n"
	sseKeepAlive        = ": keep-alive\n\n"
)

// maxRetainedBuf is the largest write buffer kept between events.
const maxRetainedBuf = 64 << 10

// StreamWriter writes a chat.completion.chunk SSE stream translated from
// agent events. Each call writes its chunks with one Write and then calls
// flush, except Buffer and BufferKeepAlive, whose chunks wait for Flush
// (one write and one flush for a burst of events). Write and flush errors
// are sticky: once one fails, every later call returns it. A StreamWriter
// is safe for concurrent use.
//
// The caller sets the response headers (see [SetStreamHeaders]) and the
// 200 status before the first call.
type StreamWriter struct {
	mu       sync.Mutex
	w        io.Writer
	flush    func() error
	t        translator
	prefix   []byte // `data: {"id":...,"choices":[`
	buf      []byte
	started  bool
	finished bool
	err      error
	text     strings.Builder // the content sent, for the conversation fingerprint
}

// NewStreamWriter returns a StreamWriter writing to w. flush, if not nil,
// is called after every write (pass http.ResponseController's Flush).
func NewStreamWriter(w io.Writer, flush func() error, opts Options) *StreamWriter {
	opts.normalize()
	s := &StreamWriter{w: w, flush: flush, buf: make([]byte, 0, 1024)}
	s.t = translator{opts: opts, out: s}
	p := make([]byte, 0, 128+len(opts.ID)+len(opts.Model))
	p = append(p, `data: {"id":`...)
	p = appendJSONString(p, opts.ID)
	p = append(p, `,"object":"`+ObjectChunk+`","created":`...)
	p = appendInt(p, opts.Created.Unix())
	p = append(p, `,"model":`...)
	p = appendJSONString(p, opts.Model)
	p = append(p, `,"choices":[`...)
	s.prefix = p
	return s
}

// Content returns the message content sent so far (what a client will
// send back as the assistant's message) when Options.KeepContent is set.
func (s *StreamWriter) Content() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.text.String()
}

// ID returns the response id every chunk carries.
func (s *StreamWriter) ID() string { return s.t.opts.ID }

// Retries returns how many api_retry notices the turn had (they are not
// shown in the content).
func (s *StreamWriter) Retries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.retries
}

// Finished reports whether the stream has ended with data: [DONE].
func (s *StreamWriter) Finished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finished
}

// Start writes the first chunk, delta {"role":"assistant","content":""},
// and flushes it at once. Event, Fail and Finish call it when needed.
func (s *StreamWriter) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.started {
		return s.err
	}
	s.start()
	return s.write()
}

func (s *StreamWriter) start() {
	if !s.started {
		s.started = true
		s.buf = append(s.buf, s.prefix...)
		s.buf = append(s.buf, choiceRole...)
	}
}

// Event translates one agent event and writes the chunks it yields (none
// for some events). A result, error or client_tool_calls event ends the
// stream: the calls of a client_tool_calls event as delta.tool_calls
// chunks, the final chunk (finish_reason "tool_calls" after calls), the
// usage chunk if requested, and data: [DONE]. Events after the
// end are ignored (what Buffer kept is written).
func (s *StreamWriter) Event(e agent.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.finished {
		return s.writePending()
	}
	s.event(&e)
	return s.write()
}

// Buffer is [StreamWriter.Event] without the write: the chunks wait for
// the next [StreamWriter.Flush] (or any other call that writes), so a
// burst of events goes out with one write and one flush.
func (s *StreamWriter) Buffer(e agent.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.finished {
		return s.err
	}
	s.event(&e)
	return nil
}

func (s *StreamWriter) event(e *agent.Event) {
	s.start()
	if s.t.event(e) {
		s.end()
	}
}

// KeepAlive writes the SSE comment ": keep-alive" (which clients ignore) to
// keep idle proxies and clients from timing out. After the end of the
// stream it only writes what Buffer kept.
func (s *StreamWriter) KeepAlive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.finished {
		return s.writePending()
	}
	s.buf = append(s.buf, sseKeepAlive...)
	return s.write()
}

// BufferKeepAlive is [StreamWriter.KeepAlive] without the write (see
// [StreamWriter.Buffer]).
func (s *StreamWriter) BufferKeepAlive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.finished {
		return s.err
	}
	s.buf = append(s.buf, sseKeepAlive...)
	return nil
}

// Flush writes the chunks that [StreamWriter.Buffer] and
// [StreamWriter.BufferKeepAlive] kept, if any, and flushes them.
func (s *StreamWriter) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writePending()
}

// Fail ends the stream after an error: the content note "[error: message]"
// on a fresh paragraph, the final chunk with finish_reason "stop", the
// usage chunk if requested, and data: [DONE]. The HTTP status is already
// 200, so this is how a client learns of the failure. After the end of the
// stream it only writes what Buffer kept.
func (s *StreamWriter) Fail(message string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.finished {
		return s.writePending()
	}
	s.start()
	s.t.fail(&agent.Event{Type: agent.EventError, Code: agent.CodeInternal, Message: message})
	s.end()
	return s.write()
}

// Finish ends the stream if it has not ended yet: the final chunk, the
// usage chunk if requested, and data: [DONE]. It writes what Buffer kept.
func (s *StreamWriter) Finish() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.finished {
		return s.writePending()
	}
	s.start()
	s.end()
	return s.write()
}

// end appends the final chunk, the usage chunk and [DONE].
func (s *StreamWriter) end() {
	s.finished = true
	s.buf = append(s.buf, s.prefix...)
	s.buf = append(s.buf, choiceFinishHead...)
	s.buf = append(s.buf, s.t.finishReason()...)
	s.buf = append(s.buf, choiceFinishTail...)
	if s.t.opts.IncludeUsage {
		u := s.t.usage()
		s.buf = append(s.buf, s.prefix...)
		s.buf = append(s.buf, `],"usage":{"prompt_tokens":`...)
		s.buf = appendInt(s.buf, u.PromptTokens)
		s.buf = append(s.buf, `,"completion_tokens":`...)
		s.buf = appendInt(s.buf, u.CompletionTokens)
		s.buf = append(s.buf, `,"total_tokens":`...)
		s.buf = appendInt(s.buf, u.TotalTokens)
		if u.PromptTokensDetails != nil {
			s.buf = append(s.buf, `,"prompt_tokens_details":{"cached_tokens":`...)
			s.buf = appendInt(s.buf, u.PromptTokensDetails.CachedTokens)
			s.buf = append(s.buf, '}')
		}
		s.buf = append(s.buf, "}}\n\n"...)
	}
	s.buf = append(s.buf, sseDone...)
}

// content implements sink.
func (s *StreamWriter) content(sep, text string) {
	if s.t.opts.KeepContent {
		s.text.WriteString(sep)
		s.text.WriteString(text)
	}
	s.buf = append(s.buf, s.prefix...)
	s.buf = append(s.buf, choiceContentHead...)
	s.buf = appendJSONStringBody(s.buf, sep)
	s.buf = appendJSONStringBody(s.buf, text)
	s.buf = append(s.buf, choiceDeltaTail...)
}

// toolCalls implements sink: one chunk per call, each call whole
//
//	{"index":0,"delta":{"tool_calls":[{"index":i,"id":...,"type":"function",
//	"function":{"name":...,"arguments":...}}]},"finish_reason":null}
func (s *StreamWriter) toolCalls(calls []ToolCall) {
	for i := range calls {
		c := &calls[i]
		s.buf = append(s.buf, s.prefix...)
		s.buf = append(s.buf, choiceToolCallHead...)
		s.buf = appendInt(s.buf, int64(i))
		s.buf = append(s.buf, `,"id":`...)
		s.buf = appendJSONString(s.buf, c.ID)
		s.buf = append(s.buf, `,"type":"function","function":{"name":`...)
		s.buf = appendJSONString(s.buf, c.Function.Name)
		s.buf = append(s.buf, `,"arguments":`...)
		s.buf = appendJSONString(s.buf, c.Function.Arguments)
		s.buf = append(s.buf, choiceToolCallTail...)
	}
}

// ToolCalls returns the client function calls that ended the stream, if
// any (finish_reason "tool_calls"): with [StreamWriter.Content], the
// assistant message the client will send back ([AssistantMessage]).
func (s *StreamWriter) ToolCalls() []ToolCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ToolCall(nil), s.t.calls...)
}

// reasoning implements sink.
func (s *StreamWriter) reasoning(sep, text string) {
	s.buf = append(s.buf, s.prefix...)
	s.buf = append(s.buf, choiceReasoningHead...)
	s.buf = appendJSONStringBody(s.buf, sep)
	s.buf = appendJSONStringBody(s.buf, text)
	s.buf = append(s.buf, choiceDeltaTail...)
}

// writePending writes and flushes what Buffer and BufferKeepAlive kept,
// if anything (all that is left to write once the stream has ended).
func (s *StreamWriter) writePending() error {
	if s.err != nil {
		return s.err
	}
	return s.write()
}

// write sends the buffered chunks and flushes.
func (s *StreamWriter) write() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.w.Write(s.buf)
	if cap(s.buf) > maxRetainedBuf {
		s.buf = make([]byte, 0, 1024)
	} else {
		s.buf = s.buf[:0]
	}
	if err == nil && s.flush != nil {
		err = s.flush()
	}
	if err != nil {
		s.err = err
	}
	return err
}

// Collector builds a non-streaming chat.completion from agent events,
// translated as [StreamWriter] does. It is not safe for concurrent use.
type Collector struct {
	t        translator
	text     strings.Builder
	thinking strings.Builder
}

// NewCollector returns a Collector. Options.IncludeUsage is ignored: a
// chat.completion always reports usage.
func NewCollector(opts Options) *Collector {
	opts.normalize()
	c := &Collector{}
	c.t = translator{opts: opts, out: (*collectorSink)(c)}
	return c
}

// collectorSink is the sink side of a Collector, kept off its method set.
type collectorSink Collector

func (c *collectorSink) content(sep, text string) {
	c.text.WriteString(sep)
	c.text.WriteString(text)
}

func (c *collectorSink) reasoning(sep, text string) {
	c.thinking.WriteString(sep)
	c.thinking.WriteString(text)
}

// toolCalls needs no copy: the translator keeps the calls for Completion.
func (c *collectorSink) toolCalls([]ToolCall) {}

// Event translates one agent event. Events after a result, error or
// client_tool_calls event are ignored; client_tool_calls puts its calls in
// message.tool_calls with finish_reason "tool_calls".
func (c *Collector) Event(e agent.Event) { c.t.event(&e) }

// Fail ends the turn with an error (as an error event with code
// "internal" would), for failures outside the agent's stream such as a
// broken connection. It does nothing once the turn has ended.
func (c *Collector) Fail(message string) {
	if !c.t.done {
		c.t.fail(&agent.Event{Type: agent.EventError, Code: agent.CodeInternal, Message: message})
	}
}

// Done reports whether a result, error or client_tool_calls event (or
// Fail) ended the turn.
func (c *Collector) Done() bool { return c.t.done }

// Err returns the error event that ended the turn, or nil if the turn
// succeeded or has not ended. The handler decides whether to send the
// completion (whose content ends with the error note) or an HTTP error
// from [FromAgentError] instead, typically when [Collector.HasOutput] is
// false.
func (c *Collector) Err() *agent.Event { return c.t.errorEvent() }

// HasOutput reports whether any content or client function calls came
// before the end of the turn (not counting the error note of a failed
// turn).
func (c *Collector) HasOutput() bool {
	if c.t.done {
		return c.t.answerLen > 0 || len(c.t.calls) > 0
	}
	return c.t.contentLen > 0
}

// Retries returns how many api_retry notices the turn had.
func (c *Collector) Retries() int { return c.t.retries }

// Completion returns the chat.completion built so far.
func (c *Collector) Completion() *ChatCompletion {
	return &ChatCompletion{
		ID:      c.t.opts.ID,
		Object:  ObjectCompletion,
		Created: c.t.opts.Created.Unix(),
		Model:   c.t.opts.Model,
		Choices: []Choice{{
			Index: 0,
			Message: CompletionMessage{
				Role:             RoleAssistant,
				Content:          c.text.String(),
				ReasoningContent: c.thinking.String(),
				ToolCalls:        append([]ToolCall(nil), c.t.calls...),
			},
			FinishReason: c.t.finishReason(),
		}},
		Usage: c.t.usage(),
	}
}
