package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

func delta(s string) agent.Event      { return agent.Event{Type: agent.EventTextDelta, Text: s} }
func text(s string) agent.Event       { return agent.Event{Type: agent.EventText, Text: s} }
func thinkDelta(s string) agent.Event { return agent.Event{Type: agent.EventThinkingDelta, Text: s} }
func think(s string) agent.Event      { return agent.Event{Type: agent.EventThinking, Text: s} }

func toolUse(id, name, input string) agent.Event {
	return agent.Event{Type: agent.EventToolUse, ToolUseID: id, Name: name, Input: json.RawMessage(input)}
}

func toolResult(id, out string, isErr bool) agent.Event {
	return agent.Event{Type: agent.EventToolResult, ToolUseID: id, Output: out, IsError: isErr}
}

func result(stop string, u agent.Usage) agent.Event {
	return agent.Event{Type: agent.EventResult, Result: &agent.Result{StopReason: stop, Usage: u}}
}

var done = result("end_turn", agent.Usage{InputTokens: 10, OutputTokens: 5})

func clientCalls(r *agent.Result, calls ...agent.ToolCall) agent.Event {
	return agent.Event{Type: agent.EventClientToolCalls, Calls: calls, Result: r}
}

// streamOf runs events through a StreamWriter and returns its raw output.
func streamOf(t testing.TB, opts Options, events []agent.Event) string {
	var buf bytes.Buffer
	s := NewStreamWriter(&buf, nil, opts)
	require.NoError(t, s.Start())
	for _, e := range events {
		require.NoError(t, s.Event(e))
	}
	require.NoError(t, s.Finish())
	return buf.String()
}

func TestTranslate(t *testing.T) {
	bigOut := strings.Repeat("x", 2500)
	tests := []struct {
		name      string
		opts      Options
		events    []agent.Event
		content   string
		reasoning string
		finish    string
		usage     *Usage
		failed    bool
		calls     []ToolCall
	}{{
		name:    "plain text deltas",
		events:  []agent.Event{delta("Hel"), delta("lo, "), delta("world!"), text("Hello, world!"), done},
		content: "Hello, world!",
	}, {
		name:    "text block without deltas",
		events:  []agent.Event{text("Hello."), done},
		content: "Hello.",
	}, {
		name:    "text blocks without deltas are separate paragraphs",
		events:  []agent.Event{text("One."), text("Two."), done},
		content: "One.\n\nTwo.",
	}, {
		name:    "text block adds what its deltas missed",
		events:  []agent.Event{delta("Once upon"), text("Once upon a time"), done},
		content: "Once upon a time",
	}, {
		name:    "usage on",
		opts:    Options{IncludeUsage: true},
		events:  []agent.Event{delta("hi"), text("hi"), result("end_turn", agent.Usage{InputTokens: 10, OutputTokens: 7, CacheReadInputTokens: 5, CacheCreationInputTokens: 3})},
		content: "hi",
		usage: &Usage{PromptTokens: 18, CompletionTokens: 7, TotalTokens: 25,
			PromptTokensDetails: &PromptTokensDetails{CachedTokens: 5}},
	}, {
		name:    "usage off",
		events:  []agent.Event{delta("hi"), done},
		content: "hi",
	}, {
		name:    "max_tokens finishes with length",
		events:  []agent.Event{delta("cut"), result("max_tokens", agent.Usage{})},
		content: "cut",
		finish:  FinishLength,
	}, {
		name: "thinking with reasoning on",
		opts: Options{Reasoning: true},
		events: []agent.Event{thinkDelta("Let me "), thinkDelta("think."), think("Let me think."),
			delta("Answer"), text("Answer"), think("More thought."), text("Second."), done},
		content:   "Answer\n\nSecond.",
		reasoning: "Let me think.\n\nMore thought.",
	}, {
		name:    "thinking with reasoning off",
		events:  []agent.Event{thinkDelta("Let me "), think("Let me think."), delta("Answer"), text("Answer"), done},
		content: "Answer",
	}, {
		name: "tools off",
		opts: Options{Tools: ToolsOff},
		events: []agent.Event{delta("Let me look."), text("Let me look."),
			toolUse("t1", "Bash", `{"command":"ls -la"}`), toolResult("t1", "a\nb", false),
			delta("Done."), text("Done."), done},
		content: "Let me look.\n\nDone.",
	}, {
		name: "tools summary",
		opts: Options{Tools: ToolsSummary},
		events: []agent.Event{delta("Let me look."), text("Let me look."),
			toolUse("t1", "Bash", `{"command":"ls -la","description":"List"}`), toolResult("t1", "a\nb", false),
			toolUse("t2", "Read", `{"file_path":"/etc/x"}`), toolResult("t2", "\nNo such file\nmore", true),
			delta("Done."), text("Done."), done},
		content: "Let me look.\n\n> 🔧 **Bash** `ls -la`\n\n> 🔧 **Read** `/etc/x`\n\n> ❌ No such file\n\nDone.",
	}, {
		name: "tools summary input fields and escaping",
		opts: Options{Tools: ToolsSummary},
		events: []agent.Event{
			toolUse("1", "Grep", `{"pattern":"a`+"`"+`b","path":"."}`),
			toolUse("2", "WebFetch", `{"url":"https://x.test/"}`),
			toolUse("3", "WebSearch", `{"query":"go  fuzz\nlines"}`),
			toolUse("4", "Task", `{"description":"Explore","prompt":"long"}`),
			toolUse("5", "mcp__github__get_issue", `{"owner":"o","number":1}`),
			toolUse("6", "Bash", `{"command":"`+strings.Repeat("y", 200)+`"}`),
			toolUse("7", "Glob", `{}`),
			done},
		content: "> 🔧 **Grep** ``a`b``\n\n" +
			"> 🔧 **WebFetch** `https://x.test/`\n\n" +
			"> 🔧 **WebSearch** `go fuzz lines`\n\n" +
			"> 🔧 **Task** `Explore`\n\n" +
			"> 🔧 **mcp__github__get_issue** `{\"owner\":\"o\",\"number\":1}`\n\n" +
			"> 🔧 **Bash** `" + strings.Repeat("y", 120) + "…`\n\n" +
			"> 🔧 **Glob**\n\n",
	}, {
		name: "tools full",
		opts: Options{Tools: ToolsFull},
		events: []agent.Event{text("Checking"),
			toolUse("t1", "Bash", `{"command":"cat f"}`), toolResult("t1", "has ``` fence\n", false),
			toolUse("t2", "Bash", `{"command":"big"}`), toolResult("t2", bigOut, false),
			toolUse("t3", "Bash", `{"command":"bad"}`), toolResult("t3", "boom", true),
			text("End"), done},
		content: "Checking\n\n> 🔧 **Bash** `cat f`\n\n````\nhas ``` fence\n````\n\n" +
			"> 🔧 **Bash** `big`\n\n```\n" + strings.Repeat("x", 2000) + "\n… (500 more bytes)\n```\n\n" +
			"> 🔧 **Bash** `bad`\n\n> ❌ boom\n\n```\nboom\n```\n\nEnd",
	}, {
		name: "todo",
		opts: Options{Tools: ToolsSummary},
		events: []agent.Event{delta("Plan:"),
			toolUse("t1", "TodoWrite", `{"todos":[]}`),
			{Type: agent.EventTodo, Todos: []agent.Todo{{Content: "done", Status: "completed"}, {Content: "doing", Status: "in_progress"}, {Content: "later", Status: "pending"}}},
			toolResult("t1", "Todos have been modified", false),
			done},
		content: "Plan:\n\n- [x] done\n- [~] doing\n- [ ] later\n\n",
	}, {
		name:    "todo off",
		events:  []agent.Event{delta("Plan:"), {Type: agent.EventTodo, Todos: []agent.Todo{{Content: "a", Status: "pending"}}}, done},
		content: "Plan:",
	}, {
		name: "notices",
		opts: Options{Tools: ToolsSummary},
		events: []agent.Event{
			{Type: agent.EventNotice, Code: agent.CodeRestarted, Message: "The agent process stopped..."},
			{Type: agent.EventNotice, Code: agent.CodeAPIRetry, Message: "retry 1 of 10"},
			toolUse("t1", "Bash", `{"command":"echo hi > /tmp/x"}`),
			{Type: agent.EventNotice, Code: agent.CodePermissionDenied, ToolUseID: "t1", Name: "Bash", Message: "needs approval"},
			toolResult("t1", "needs approval", true),
			text("Finished."), done},
		content: "_(The agent process stopped..)_\n\n" + "> 🔧 **Bash** `echo hi > /tmp/x`\n\n> ⛔ Bash denied: needs approval\n\nFinished.",
	}, {
		name: "notices with tools off",
		events: []agent.Event{
			{Type: agent.EventNotice, Code: agent.CodeRestarted},
			{Type: agent.EventNotice, Code: agent.CodePermissionDenied, Name: "Bash", Message: "no"},
			text("Finished."), done},
		content: restartedNote + "Finished.",
	}, {
		name: "branch and tool timeout notes come as the answer's first lines",
		events: []agent.Event{
			{Type: agent.EventNotice, Code: agent.CodeBranch, Message: "Files made by commands (Bash) in the abandoned turns were not restored: out.txt."},
			{Type: agent.EventNotice, Code: agent.CodeToolTimeout, Message: "get_weather was not answered in time"},
			text("Answer."), done},
		content: "_(Files made by commands (Bash) in the abandoned turns were not restored: out.txt)_\n\n" +
			"_(get_weather was not answered in time)_\n\nAnswer.",
	}, {
		name:    "error mid-stream",
		opts:    Options{IncludeUsage: true},
		events:  []agent.Event{delta("Partial"), {Type: agent.EventError, Code: agent.CodeUpstream, Message: "API went away"}},
		content: "Partial\n\n[error: API went away]",
		usage:   &Usage{},
		failed:  true,
	}, {
		name:    "error before content",
		events:  []agent.Event{{Type: agent.EventError, Code: agent.CodeAuth, Message: "bad key"}},
		content: "[error: bad key]",
		failed:  true,
	}, {
		name: "sub-agent text is not content",
		opts: Options{Tools: ToolsSummary, Reasoning: true},
		events: []agent.Event{
			toolUse("task", "Task", `{"description":"Look around"}`),
			{Type: agent.EventTextDelta, Text: "sub", ParentToolUseID: "task"},
			{Type: agent.EventText, Text: "sub text", ParentToolUseID: "task"},
			{Type: agent.EventThinking, Text: "sub thought", ParentToolUseID: "task"},
			{Type: agent.EventToolUse, ToolUseID: "s1", Name: "Read", Input: json.RawMessage(`{"file_path":"a"}`), ParentToolUseID: "task"},
			toolResult("task", "sub answer", false),
			text("Main."), done},
		content: "> 🔧 **Task** `Look around`\n\n> 🔧 **Read** `a`\n\nMain.",
	}, {
		name:    "result text when no text events came",
		events:  []agent.Event{{Type: agent.EventResult, Result: &agent.Result{Text: "Final words."}}},
		content: "Final words.",
	}, {
		name:    "fresh paragraph after a single newline",
		opts:    Options{Tools: ToolsSummary},
		events:  []agent.Event{delta("line\n"), toolUse("1", "Bash", `{"command":"x"}`), done},
		content: "line\n\n> 🔧 **Bash** `x`\n\n",
	}, {
		name:    "events after the end are ignored",
		events:  []agent.Event{delta("a"), done, delta("b"), {Type: agent.EventError, Message: "late"}},
		content: "a",
	}, {
		name: "client tool calls after text",
		opts: Options{IncludeUsage: true},
		events: []agent.Event{delta("Let me check."), text("Let me check."),
			clientCalls(&agent.Result{Usage: agent.Usage{InputTokens: 7, OutputTokens: 3}},
				agent.ToolCall{ID: "toolu_1", Name: "get_weather", Arguments: `{"city":"Oslo"}`},
				agent.ToolCall{ID: "toolu_2", Name: "get_time", Arguments: ""}),
			done, delta("late")},
		content: "Let me check.",
		finish:  FinishToolCalls,
		usage:   &Usage{PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10},
		calls: []ToolCall{{ID: "toolu_1", Type: "function", Function: FunctionCall{Name: "get_weather", Arguments: `{"city":"Oslo"}`}},
			{ID: "toolu_2", Type: "function", Function: FunctionCall{Name: "get_time", Arguments: "{}"}}},
	}, {
		name:   "client tool calls only, usage unknown",
		opts:   Options{IncludeUsage: true, Tools: ToolsSummary},
		events: []agent.Event{clientCalls(nil, agent.ToolCall{ID: "a\"<id>", Name: "f", Arguments: "{\"q\":\"<&\u2028>\"}"})},
		finish: FinishToolCalls,
		usage:  &Usage{},
		calls:  []ToolCall{{ID: "a\"<id>", Type: "function", Function: FunctionCall{Name: "f", Arguments: "{\"q\":\"<&\u2028>\"}"}}},
	}, {
		name:    "client tool calls event without calls",
		events:  []agent.Event{delta("x"), clientCalls(nil)},
		content: "x",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			finish := tc.finish
			if finish == "" {
				finish = FinishStop
			}

			raw := streamOf(t, tc.opts, tc.events)
			res, err := checkSSE(raw)
			require.NoError(t, err, raw)
			assert.Equal(t, tc.content, res.Content)
			assert.Equal(t, tc.reasoning, res.Reasoning)
			assert.Equal(t, finish, res.Finish)
			assert.Equal(t, tc.usage, res.Usage)
			assert.Equal(t, tc.calls, res.ToolCalls)

			c := NewCollector(tc.opts)
			for _, e := range tc.events {
				c.Event(e)
			}
			comp := c.Completion()
			require.Len(t, comp.Choices, 1)
			assert.Equal(t, tc.content, comp.Choices[0].Message.Content)
			assert.Equal(t, tc.reasoning, comp.Choices[0].Message.ReasoningContent)
			assert.Equal(t, finish, comp.Choices[0].FinishReason)
			assert.Equal(t, tc.failed, c.Err() != nil)
			if tc.usage != nil {
				assert.Equal(t, *tc.usage, comp.Usage)
			}
			assert.Equal(t, tc.calls, comp.Choices[0].Message.ToolCalls)
		})
	}
}

func TestStreamWriterChunks(t *testing.T) {
	var buf bytes.Buffer
	flushes := 0
	s := NewStreamWriter(&buf, func() error { flushes++; return nil }, Options{
		Model: `m"<x>`, ID: "chatcmpl-fixed", Created: time.Unix(1700000000, 0), IncludeUsage: true,
	})
	assert.Equal(t, "chatcmpl-fixed", s.ID())

	require.NoError(t, s.KeepAlive())
	assert.Equal(t, ": keep-alive\n\n", buf.String())
	assert.Equal(t, 1, flushes)
	buf.Reset()

	require.NoError(t, s.Start())
	assert.Equal(t, `data: {"id":"chatcmpl-fixed","object":"chat.completion.chunk","created":1700000000,"model":"m\"\u003cx\u003e","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`+"\n\n", buf.String())
	assert.Equal(t, 2, flushes)
	require.NoError(t, s.Start()) // no second role chunk
	assert.Equal(t, 2, flushes)
	buf.Reset()

	require.NoError(t, s.Event(delta("a\n\"b\"\u2028\x01")))
	assert.Equal(t, `data: {"id":"chatcmpl-fixed","object":"chat.completion.chunk","created":1700000000,"model":"m\"\u003cx\u003e","choices":[{"index":0,"delta":{"content":"a\n\"b\"\u2028\u0001"},"finish_reason":null}]}`+"\n\n", buf.String())
	assert.Equal(t, 3, flushes)
	buf.Reset()

	// Nothing to write: no write, no flush.
	require.NoError(t, s.Event(agent.Event{Type: agent.EventNotice, Code: agent.CodeAPIRetry}))
	assert.Equal(t, 0, buf.Len())
	assert.Equal(t, 3, flushes)
	assert.Equal(t, 1, s.Retries())

	require.NoError(t, s.Event(result("end_turn", agent.Usage{InputTokens: 1, OutputTokens: 2})))
	assert.Equal(t, `data: {"id":"chatcmpl-fixed","object":"chat.completion.chunk","created":1700000000,"model":"m\"\u003cx\u003e","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n"+
		`data: {"id":"chatcmpl-fixed","object":"chat.completion.chunk","created":1700000000,"model":"m\"\u003cx\u003e","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`+"\n\n"+
		"data: [DONE]\n\n", buf.String())
	assert.Equal(t, 4, flushes)
	assert.True(t, s.Finished())
	buf.Reset()

	// After the end everything is a no-op.
	require.NoError(t, s.Event(delta("late")))
	require.NoError(t, s.KeepAlive())
	require.NoError(t, s.Fail("late"))
	require.NoError(t, s.Finish())
	assert.Equal(t, 0, buf.Len())
	assert.Equal(t, 4, flushes)
}

func TestStreamWriterFailAndFinish(t *testing.T) {
	t.Run("fail after content", func(t *testing.T) {
		var buf bytes.Buffer
		s := NewStreamWriter(&buf, nil, Options{IncludeUsage: true})
		require.NoError(t, s.Event(delta("Half an answer")))
		require.NoError(t, s.Fail("connection to the agent lost"))
		res, err := checkSSE(buf.String())
		require.NoError(t, err)
		assert.Equal(t, "Half an answer\n\n[error: connection to the agent lost]", res.Content)
		assert.Equal(t, FinishStop, res.Finish)
		assert.Equal(t, &Usage{}, res.Usage)
	})
	t.Run("finish without events", func(t *testing.T) {
		var buf bytes.Buffer
		s := NewStreamWriter(&buf, nil, Options{})
		require.NoError(t, s.Finish())
		res, err := checkSSE(buf.String())
		require.NoError(t, err)
		assert.Equal(t, "", res.Content)
		assert.Len(t, res.Chunks, 2)
	})
	t.Run("write errors are sticky", func(t *testing.T) {
		boom := errors.New("client gone")
		s := NewStreamWriter(failingWriter{boom}, nil, Options{})
		assert.ErrorIs(t, s.Start(), boom)
		assert.ErrorIs(t, s.Event(delta("x")), boom)
		assert.ErrorIs(t, s.KeepAlive(), boom)
		assert.ErrorIs(t, s.Finish(), boom)
	})
	t.Run("flush errors are sticky", func(t *testing.T) {
		boom := errors.New("flush failed")
		s := NewStreamWriter(io.Discard, func() error { return boom }, Options{})
		assert.ErrorIs(t, s.Start(), boom)
		assert.ErrorIs(t, s.Fail("x"), boom)
	})
	t.Run("generated ids differ", func(t *testing.T) {
		a := NewStreamWriter(io.Discard, nil, Options{}).ID()
		b := NewStreamWriter(io.Discard, nil, Options{}).ID()
		assert.True(t, strings.HasPrefix(a, "chatcmpl-"))
		assert.NotEqual(t, a, b)
	})
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func TestCollector(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		c := NewCollector(Options{Model: "agent", ID: "chatcmpl-1", Created: time.Unix(5, 0), Reasoning: true})
		for _, e := range []agent.Event{think("hmm"), delta("4"), text("4"),
			result("end_turn", agent.Usage{InputTokens: 3, OutputTokens: 1})} {
			c.Event(e)
		}
		assert.True(t, c.Done())
		assert.True(t, c.HasOutput())
		assert.Nil(t, c.Err())
		body, err := json.Marshal(c.Completion())
		require.NoError(t, err)
		assert.JSONEq(t, `{"id":"chatcmpl-1","object":"chat.completion","created":5,"model":"agent",
			"choices":[{"index":0,"message":{"role":"assistant","content":"4","reasoning_content":"hmm"},"finish_reason":"stop"}],
			"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`, string(body))
	})
	t.Run("error before content", func(t *testing.T) {
		c := NewCollector(Options{})
		c.Event(agent.Event{Type: agent.EventError, Code: agent.CodeRateLimit, Message: "slow down"})
		require.NotNil(t, c.Err())
		assert.Equal(t, agent.CodeRateLimit, c.Err().Code)
		assert.False(t, c.HasOutput())
		assert.Equal(t, 429, FromAgentError(*c.Err()).Status)
	})
	t.Run("error after content", func(t *testing.T) {
		c := NewCollector(Options{})
		c.Event(delta("some"))
		c.Fail("agent connection lost")
		c.Fail("ignored")
		require.NotNil(t, c.Err())
		assert.True(t, c.HasOutput())
		assert.Equal(t, "some\n\n[error: agent connection lost]", c.Completion().Choices[0].Message.Content)
	})
	t.Run("unfinished", func(t *testing.T) {
		c := NewCollector(Options{})
		c.Event(delta("x"))
		assert.False(t, c.Done())
		assert.True(t, c.HasOutput())
		assert.Nil(t, c.Err())
		assert.Equal(t, FinishStop, c.Completion().Choices[0].FinishReason)
	})
}

func TestParseToolRendering(t *testing.T) {
	for in, want := range map[string]ToolRendering{"": ToolsOff, "off": ToolsOff, "summary": ToolsSummary, "full": ToolsFull} {
		got, err := ParseToolRendering(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := ParseToolRendering("verbose")
	assert.Error(t, err)
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "<html>&amp;", "\x00\x1f\x7f", "tab\tcr\rnl\nbs\bff\f",
		"ünïcödé 🔧", "bad\xffutf8\xc3", "\u2028\u2029", strings.Repeat("ab", 100)} {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(appendJSONString(nil, s)), "%q", s)
	}
}

func BenchmarkStreamWriterTextDelta(b *testing.B) {
	s := NewStreamWriter(io.Discard, func() error { return nil }, Options{Model: "agent"})
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	e := delta("Hello, this is a typical token or two of streamed text. ")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.Event(e); err != nil {
			b.Fatal(err)
		}
	}
}

func TestStreamWriterKeepsContent(t *testing.T) {
	for _, keep := range []bool{true, false} {
		var out bytes.Buffer
		s := NewStreamWriter(&out, nil, Options{Model: "agent", KeepContent: keep})
		require.NoError(t, s.Start())
		for _, e := range []agent.Event{
			{Type: agent.EventTextDelta, Text: "Hello, "},
			{Type: agent.EventTextDelta, Text: "world."},
			{Type: agent.EventResult, Result: &agent.Result{StopReason: "end_turn"}},
		} {
			require.NoError(t, s.Event(e))
		}
		if keep {
			assert.Equal(t, "Hello, world.", s.Content())
		} else {
			assert.Empty(t, s.Content())
		}
	}
}

func TestStreamWriterReplacedAnswer(t *testing.T) {
	// A stream that broke off after two deltas, then the whole answer from
	// the CLI's non-streaming retry: both reach the client, in order.
	var out bytes.Buffer
	s := NewStreamWriter(&out, nil, Options{Model: "agent", KeepContent: true})
	require.NoError(t, s.Start())
	for _, e := range []agent.Event{
		{Type: agent.EventTextDelta, Text: "This str"},
		{Type: agent.EventTextDelta, Text: "eam "},
		{Type: agent.EventText, Text: "Recovered without streaming."},
		{Type: agent.EventResult, Result: &agent.Result{StopReason: "end_turn"}},
	} {
		require.NoError(t, s.Event(e))
	}
	assert.Equal(t, "This stream \n\nRecovered without streaming.", s.Content())

	var out2 bytes.Buffer
	s2 := NewStreamWriter(&out2, nil, Options{Model: "agent", KeepContent: true})
	require.NoError(t, s2.Start())
	for _, e := range []agent.Event{
		{Type: agent.EventTextDelta, Text: "Hello, "},
		{Type: agent.EventText, Text: "Hello, world."},
		{Type: agent.EventResult, Result: &agent.Result{StopReason: "end_turn"}},
	} {
		require.NoError(t, s2.Event(e))
	}
	assert.Equal(t, "Hello, world.", s2.Content(), "a block that extends its deltas adds only the tail")
}

// countingWriter counts the writes it gets.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.Buffer.Write(p)
}

// TestStreamWriterBuffer: Buffer and BufferKeepAlive keep their chunks for
// Flush (one write and one flush for a burst), and the stream's bytes are
// those of Event; Finish writes what the end left behind.
func TestStreamWriterBuffer(t *testing.T) {
	opts := Options{ID: "chatcmpl-fixed", Created: time.Unix(1700000000, 0), IncludeUsage: true}
	ka := agent.Event{Type: "keep-alive"} // stands for BufferKeepAlive
	tests := []struct {
		name    string
		bursts  [][]agent.Event // each burst is flushed once
		writes  int             // writes and flushes by the bursts
		finishW int             // writes by Finish
	}{
		{"a burst of deltas", [][]agent.Event{{delta("a"), delta("b"), delta("c")}}, 1, 1},
		{"two bursts", [][]agent.Event{{delta("a")}, {delta("b"), text("ab")}}, 2, 1},
		{"a keep-alive in a burst", [][]agent.Event{{ka, delta("a")}}, 1, 1},
		{"the end in a burst", [][]agent.Event{{delta("a"), done}}, 1, 0},
		{"events after the end in the same burst", [][]agent.Event{{delta("a")}, {done, ka, delta("late")}}, 2, 0},
		{"a burst with nothing to write", [][]agent.Event{{delta("a")}, {{Type: agent.EventNotice, Code: agent.CodeAPIRetry}}}, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var all []agent.Event
			out := &countingWriter{}
			flushes := 0
			s := NewStreamWriter(out, func() error { flushes++; return nil }, opts)
			for _, burst := range tc.bursts {
				for _, e := range burst {
					if e.Type == ka.Type {
						require.NoError(t, s.BufferKeepAlive())
						continue
					}
					require.NoError(t, s.Buffer(e))
					all = append(all, e)
				}
				require.NoError(t, s.Flush())
			}
			assert.Equal(t, tc.writes, out.writes, "one write per burst")
			assert.Equal(t, tc.writes, flushes, "one flush per burst")
			require.NoError(t, s.Finish())
			assert.Equal(t, tc.writes+tc.finishW, out.writes)

			// The same bytes as Event, less the keep-alive comments.
			want := streamOf(t, opts, all)
			assert.Equal(t, want, strings.ReplaceAll(out.String(), sseKeepAlive, ""))
		})
	}
	t.Run("errors are sticky", func(t *testing.T) {
		boom := errors.New("client gone")
		s := NewStreamWriter(failingWriter{boom}, nil, Options{})
		require.NoError(t, s.Buffer(delta("x")), "nothing is written yet")
		assert.ErrorIs(t, s.Flush(), boom)
		assert.ErrorIs(t, s.Buffer(delta("y")), boom)
		assert.ErrorIs(t, s.BufferKeepAlive(), boom)
		assert.ErrorIs(t, s.Flush(), boom)
	})
}

func TestStreamWriterToolCallChunks(t *testing.T) {
	var buf bytes.Buffer
	s := NewStreamWriter(&buf, nil, Options{Model: "m", ID: "chatcmpl-fixed", Created: time.Unix(1700000000, 0), IncludeUsage: true, KeepContent: true})
	require.NoError(t, s.Start())
	buf.Reset()
	require.NoError(t, s.Event(clientCalls(&agent.Result{Usage: agent.Usage{InputTokens: 4, OutputTokens: 2}},
		agent.ToolCall{ID: "toolu_1", Name: "get_weather", Arguments: `{"city":"<Oslo>"}`},
		agent.ToolCall{ID: "toolu_2", Name: "get_time"})))
	const head = `data: {"id":"chatcmpl-fixed","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[`
	assert.Equal(t,
		head+`{"index":0,"delta":{"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"\u003cOslo\u003e\"}"}}]},"finish_reason":null}]}`+"\n\n"+
			head+`{"index":0,"delta":{"tool_calls":[{"index":1,"id":"toolu_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]}`+"\n\n"+
			head+`{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`+"\n\n"+
			head+`],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}`+"\n\n"+
			"data: [DONE]\n\n", buf.String())
	assert.True(t, s.Finished())
	calls := s.ToolCalls()
	assert.Equal(t, []ToolCall{
		{ID: "toolu_1", Type: "function", Function: FunctionCall{Name: "get_weather", Arguments: `{"city":"<Oslo>"}`}},
		{ID: "toolu_2", Type: "function", Function: FunctionCall{Name: "get_time", Arguments: "{}"}},
	}, calls)

	// The assistant message the client sends back has the fingerprint of
	// the writer's content and calls, whatever its content form.
	back := Message{Role: RoleAssistant, ToolCalls: []ToolCall{
		{ID: "toolu_1", Type: "function", Function: FunctionCall{Name: "get_weather", Arguments: `{"city": "<Oslo>"}`}},
		{ID: "toolu_2", Type: "function", Function: FunctionCall{Name: "get_time", Arguments: "{}"}},
	}}
	assert.Equal(t, Fingerprint([]Message{back}), Fingerprint([]Message{AssistantMessage(s.Content(), calls)}))
}

func TestCollectorToolCalls(t *testing.T) {
	call := agent.ToolCall{ID: "toolu_1", Name: "get_weather", Arguments: `{"city":"Oslo"}`}
	tests := []struct {
		name   string
		events []agent.Event
		want   string
	}{
		{name: "without text", events: []agent.Event{clientCalls(nil, call)},
			want: `{"role":"assistant","content":null,"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]}`},
		{name: "with text", events: []agent.Event{delta("Checking."), clientCalls(nil, call)},
			want: `{"role":"assistant","content":"Checking.","tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]}`},
		{name: "with reasoning", events: []agent.Event{think("hmm"), clientCalls(nil, call)},
			want: `{"role":"assistant","content":null,"reasoning_content":"hmm","tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]}`},
		{name: "no calls, no text", events: []agent.Event{done},
			want: `{"role":"assistant","content":""}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCollector(Options{Reasoning: true})
			for _, e := range tc.events {
				c.Event(e)
			}
			assert.True(t, c.Done())
			assert.Nil(t, c.Err())
			comp := c.Completion()
			body, err := json.Marshal(comp.Choices[0].Message)
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(body))
			calls := len(comp.Choices[0].Message.ToolCalls) > 0
			assert.Equal(t, calls || comp.Choices[0].Message.Content != "", c.HasOutput())
			if calls {
				assert.Equal(t, FinishToolCalls, comp.Choices[0].FinishReason)
			}
		})
	}
}
