package claude

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

// summarize renders events compactly: runs of deltas collapse into one
// "text_delta*"/"thinking_delta*" entry whose concatenation is checked
// against the finished block that follows.
func summarize(t *testing.T, events []agent.Event) []string {
	t.Helper()
	var out []string
	var delta strings.Builder
	var deltaType agent.EventType
	for i, e := range events {
		require.Equal(t, i+1, e.Seq, "events are numbered from 1 without gaps")
		switch e.Type {
		case agent.EventTextDelta, agent.EventThinkingDelta:
			if deltaType != e.Type {
				out = append(out, string(e.Type)+"*")
				delta.Reset()
			}
			deltaType = e.Type
			delta.WriteString(e.Text)
			continue
		case agent.EventText, agent.EventThinking:
			if deltaType != "" {
				assert.Equal(t, e.Text, delta.String(), "deltas add up to the finished block")
			}
			out = append(out, fmt.Sprintf("%s:%s", e.Type, e.Text))
		case agent.EventToolUse:
			out = append(out, fmt.Sprintf("tool_use:%s:%s", e.Name, e.Input))
		case agent.EventToolResult:
			out = append(out, fmt.Sprintf("tool_result:%v:%s", e.IsError, firstLine(e.Output)))
		case agent.EventNotice:
			out = append(out, "notice:"+e.Code)
		case agent.EventResult:
			out = append(out, fmt.Sprintf("result:%s:%d/%d", e.Result.StopReason, e.Result.Usage.InputTokens, e.Result.Usage.OutputTokens))
		case agent.EventError:
			out = append(out, fmt.Sprintf("error:%s:%s", e.Code, e.Message))
		default:
			out = append(out, string(e.Type))
		}
		deltaType = ""
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// translateFixture runs a recorded CLI stdout through a Translator per turn.
func translateFixture(t *testing.T, name string) [][]agent.Event {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".stdout.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var turns [][]agent.Event
	tr := &Translator{}
	var events []agent.Event
	for sc.Scan() {
		line := bytes.Clone(sc.Bytes())
		if bytes.Contains(line, []byte(`"control_response"`)) {
			continue // routed by the process, never translated
		}
		events, err = tr.Translate(line, events)
		require.NoError(t, err)
		if tr.Done() {
			turns = append(turns, events)
			events, tr = nil, &Translator{}
		}
	}
	require.NoError(t, sc.Err())
	require.Empty(t, events, "no events after the last result")
	return turns
}

func TestTranslateRecordedTranscripts(t *testing.T) {
	tests := []struct {
		fixture string
		want    [][]string
	}{{
		fixture: "a_plain",
		want:    [][]string{{"text:Hi! How can I help you today?", "result:end_turn:2544/7"}},
	}, {
		fixture: "b_partial",
		want: [][]string{{
			"thinking_delta*", "thinking:The user wants a listing; I will run ls.",
			"text_delta*", "text:Let me look.",
			`tool_use:Bash:{"command":"ls","description":"List files"}`,
			"tool_result:false:(Bash completed with no output)",
			"thinking_delta*", "thinking:The directory is empty.",
			"text_delta*", "text:The directory is empty.",
			"result:end_turn:5215/34",
		}},
	}, {
		fixture: "c_tools",
		want: [][]string{{
			"text:I will run a shell command.",
			`tool_use:Bash:{"command":"echo hi > /tmp/x; cat /tmp/x","description":"Write hi to /tmp/x and print it"}`,
			"tool_result:false:hi",
			`tool_use:Write:{"file_path":"/tmp/claude-fixture-run/c_tools/proj/hello.txt","content":"hello from the mock\n"}`,
			"tool_result:false:File created successfully at: /tmp/claude-fixture-run/c_tools/proj/hello.txt (file state is current in your context — no need to Read it back)",
			"text:Both tools ran.",
			"result:end_turn:7954/56",
		}},
	}, {
		fixture: "c_denied",
		want: [][]string{{
			`tool_use:Bash:{"command":"echo hi > /tmp/x; cat /tmp/x","description":"Write hi to /tmp/x and print it"}`,
			"notice:permission_denied",
			"tool_result:true:This Bash command contains multiple operations. The following parts require approval: echo hi, cat /tmp/x",
			"text:Finished.",
			"result:end_turn:5203/25",
		}},
	}, {
		fixture: "f_interrupt",
		want: [][]string{
			{"text_delta*", "text:Once upon a time there w", "error:interrupted:the turn was interrupted"},
			{"text_delta*", "text:Still here after the interrupt.", "result:end_turn:2603/7"},
		},
	}, {
		fixture: "g_401_retries2",
		want:    [][]string{{"notice:api_retry", "notice:api_retry", "error:auth:Invalid API key · Fix external API key"}},
	}, {
		fixture: "g_529_default",
		want: [][]string{{"notice:api_retry", "notice:api_retry",
			"error:overloaded:API Error: Repeated 529 Overloaded errors. The API is at capacity — this is usually temporary. Try again in a moment. If it persists, check your inference gateway (127.0.0.1:43871)."}},
	}, {
		fixture: "g_connection_refused_retries2",
		want: [][]string{{"notice:api_retry", "notice:api_retry",
			"error:upstream:API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"}},
	}, {
		fixture: "x_max_turns_1",
		want: [][]string{{`tool_use:Bash:{"command":"ls","description":"List"}`,
			"tool_result:false:(Bash completed with no output)",
			"error:max_turns:Reached maximum number of turns (1)"}},
	}}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			turns := translateFixture(t, tt.fixture)
			got := make([][]string, len(turns))
			for i, evs := range turns {
				got[i] = summarize(t, evs)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestTranslateMultiTurnKeepsSessionID(t *testing.T) {
	turns := translateFixture(t, "d_multiturn")
	require.Len(t, turns, 2)
	first := turns[0][len(turns[0])-1]
	second := turns[1][len(turns[1])-1]
	require.Equal(t, agent.EventResult, first.Type)
	require.Equal(t, agent.EventResult, second.Type)
	assert.NotEmpty(t, first.Result.SessionID)
	assert.Equal(t, first.Result.SessionID, second.Result.SessionID)
}

func TestTranslateTodoWrite(t *testing.T) {
	line := `{"type":"assistant","message":{"model":"m","content":[{"type":"tool_use","id":"t1","name":"TodoWrite","input":{"todos":[{"content":"Write tests","status":"in_progress","activeForm":"Writing tests"},{"content":"Ship","status":"pending","activeForm":"Shipping"}]}}]},"parent_tool_use_id":null}`
	tr := &Translator{}
	evs, err := tr.Translate([]byte(line), nil)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	assert.Equal(t, agent.EventToolUse, evs[0].Type)
	assert.Equal(t, agent.EventTodo, evs[1].Type)
	assert.Equal(t, []agent.Todo{
		{Content: "Write tests", Status: "in_progress", ActiveForm: "Writing tests"},
		{Content: "Ship", Status: "pending", ActiveForm: "Shipping"},
	}, evs[1].Todos)
}

func TestTranslateRejectsGarbage(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"not json", "not json"},
		{"assistant content not a list", `{"type":"assistant","message":{"content":{"x":1}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := (&Translator{}).Translate([]byte(tt.line), nil)
			assert.Error(t, err)
		})
	}
}

func BenchmarkTranslateTextDelta(b *testing.B) {
	line := []byte(`{"type":"stream_event","event":{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"The director"}},"session_id":"77aef859-33f8-4135-a074-12cd77ef0bbd","parent_tool_use_id":null,"uuid":"300e63bb-4df5-47e5-ae6e-3a6aff5846b8","api_message_id":"msg_01Mock0000000000000002"}`)
	tr := &Translator{}
	events := make([]agent.Event, 0, 4)
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		var err error
		events, err = tr.Translate(line, events[:0])
		if err != nil || len(events) != 1 {
			b.Fatal(err, len(events))
		}
	}
}

// FuzzTranslate feeds arbitrary CLI output lines to the translator: it
// must never panic, and events it yields are numbered in order.
func FuzzTranslate(f *testing.F) {
	for _, name := range []string{"b_partial", "c_tools", "f_interrupt", "g_401_retries2"} {
		data, err := os.ReadFile(filepath.Join("testdata", name+".stdout.jsonl"))
		if err != nil {
			f.Fatal(err)
		}
		lines := bytes.Split(data, []byte("\n"))
		for _, l := range lines[:min(8, len(lines))] {
			f.Add(l)
		}
	}
	f.Add([]byte(`{"type":"result","subtype":"success","is_error":true,"api_error_status":429}`))
	f.Add([]byte(`{"type":"user","message":{"content":[{"type":"tool_result","content":[{"type":"text","text":"x"}]}]}}`))
	f.Add([]byte(`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"b\u00e9"}},"session_id":"s1","parent_tool_use_id":"toolu_1","uuid":"u"}`))
	f.Add([]byte(`{"type":"stream_event","event":{"type":"content_block_delta","index":3,"delta":{"type":"thinking_delta","thinking":"hm"}},"session_id":"s1","parent_tool_use_id":null,"uuid":"u","thinking_display":"updates","api_message_id":"m"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		tr := &Translator{}
		events, err := tr.Translate(raw, nil)

		// The delta fast path, when it takes a line, yields exactly what
		// the full decode does.
		fast := &Translator{SessionID: "before"}
		if fastEvents, ok := fast.translateDelta(raw, nil); ok {
			var l line
			if derr := json.Unmarshal(raw, &l); derr != nil {
				t.Fatalf("fast path took a line the full decode refuses (%v): %q", derr, raw)
			}
			full := &Translator{SessionID: "before"}
			fullEvents, ferr := full.translateLine(&l, nil)
			if ferr != nil || !reflect.DeepEqual(fastEvents, fullEvents) || fast.SessionID != full.SessionID {
				t.Fatalf("fast path differs on %q:\nfast %+v (session %q)\nfull %+v (session %q, err %v)",
					raw, fastEvents, fast.SessionID, fullEvents, full.SessionID, ferr)
			}
		}
		if err != nil {
			return
		}
		for i, e := range events {
			if e.Seq != i+1 {
				t.Fatalf("event %d has seq %d", i, e.Seq)
			}
			if e.Type == "" {
				t.Fatalf("event without a type from %q", raw)
			}
		}
	})
}

// TestDeltaFastPathTakesCLILines: every text and thinking delta line the real CLI wrote in
// the recorded transcripts goes through the fast path, with the events the
// full decode gives.
func TestDeltaFastPathTakesCLILines(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.stdout.jsonl"))
	require.NoError(t, err)
	n := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, raw := range bytes.Split(data, []byte("\n")) {
			if !bytes.Contains(raw, []byte(`"type":"text_delta"`)) && !bytes.Contains(raw, []byte(`"type":"thinking_delta"`)) {
				continue
			}
			n++
			fast := &Translator{}
			got, ok := fast.translateDelta(raw, nil)
			require.True(t, ok, "%s: fast path refused %s", file, raw)
			var l line
			require.NoError(t, json.Unmarshal(raw, &l))
			want, err := (&Translator{}).translateLine(&l, nil)
			require.NoError(t, err)
			assert.Equal(t, want, got, "%s: %s", file, raw)
		}
	}
	assert.GreaterOrEqual(t, n, 10, "the transcripts hold delta lines")
}

// translateLines runs CLI stdout lines through tr.
func translateLines(t *testing.T, tr *Translator, lines ...string) []agent.Event {
	t.Helper()
	var events []agent.Event
	for _, l := range lines {
		var err error
		events, err = tr.Translate([]byte(l), events)
		require.NoError(t, err)
	}
	return events
}

func TestTranslateClientToolCalls(t *testing.T) {
	clientTools := func(names ...string) func(string) (string, bool) {
		return func(model string) (string, bool) {
			for _, n := range names {
				if model == "mcp__client__"+n {
					return n, true
				}
			}
			return "", false
		}
	}
	t.Run("recorded parallel calls are one event at the message's end", func(t *testing.T) {
		f, err := os.ReadFile(filepath.Join("testdata", "h_client_tools.stdout.jsonl"))
		require.NoError(t, err)
		tr := &Translator{ClientTool: clientTools("get_weather", "get_time")}
		events := translateLines(t, tr, strings.Split(strings.TrimSpace(string(f)), "\n")...)
		assert.Equal(t, []string{
			"text_delta*", "text:Let me check both.",
			"client_tool_calls",
			"text_delta*", "text:Sunny in Paris; the time in Oslo is unknown.",
			"result:end_turn:5235/23",
		}, summarize(t, events))
		var calls []agent.ToolCall
		for _, e := range events {
			calls = append(calls, e.Calls...)
		}
		assert.Equal(t, []agent.ToolCall{
			{ID: "toolu_01Mock0000000000000022", Name: "get_weather", Arguments: `{"city":"Paris"}`},
			{ID: "toolu_01Mock0000000000000023", Name: "get_time", Arguments: `{"city":"Oslo"}`},
		}, calls)
	})
	t.Run("without client tools the calls are ordinary tool events", func(t *testing.T) {
		f, err := os.ReadFile(filepath.Join("testdata", "h_client_tools.stdout.jsonl"))
		require.NoError(t, err)
		events := translateLines(t, &Translator{}, strings.Split(strings.TrimSpace(string(f)), "\n")...)
		assert.Equal(t, []string{
			"text_delta*", "text:Let me check both.",
			`tool_use:mcp__client__get_weather:{"city":"Paris"}`,
			`tool_use:mcp__client__get_time:{"city":"Oslo"}`,
			"tool_result:true:clock broken",
			"tool_result:false:sunny, 21C",
			"text_delta*", "text:Sunny in Paris; the time in Oslo is unknown.",
			"result:end_turn:5235/23",
		}, summarize(t, events))
	})
	const (
		subAgentCall = `{"type":"assistant","message":{"model":"m","content":[{"type":"tool_use","id":"toolu_s","name":"mcp__client__a","input":{}}]},"parent_tool_use_id":"toolu_task"}`
		mainCall     = `{"type":"assistant","message":{"model":"m","content":[{"type":"tool_use","id":"toolu_m","name":"mcp__client__a","input":{"x":1}}]},"parent_tool_use_id":null}`
		otherCall    = `{"type":"assistant","message":{"model":"m","content":[{"type":"tool_use","id":"toolu_o","name":"mcp__client__gone","input":{}}]},"parent_tool_use_id":null}`
		subAgentStop = `{"type":"stream_event","event":{"type":"message_stop"},"parent_tool_use_id":"toolu_task"}`
		mainStop     = `{"type":"stream_event","event":{"type":"message_stop"},"parent_tool_use_id":null}`
		mainResult   = `{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_m","content":"done"}]},"parent_tool_use_id":null}`
	)
	tests := []struct {
		name  string
		lines []string
		want  []string
	}{
		{"a sub-agent's call is an ordinary tool_use", []string{subAgentCall, subAgentStop}, []string{"tool_use:mcp__client__a:{}"}},
		{"a function the turn does not offer is an ordinary tool_use", []string{otherCall, mainStop}, []string{"tool_use:mcp__client__gone:{}"}},
		{"the main agent's call waits for message_stop", []string{mainCall}, nil},
		{"its result is not reported", []string{mainCall, mainStop, mainResult}, []string{"client_tool_calls"}},
		{"a message without calls ends silently", []string{mainStop}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := translateLines(t, &Translator{ClientTool: clientTools("a")}, tt.lines...)
			assert.Equal(t, tt.want, summarize(t, events))
		})
	}
}

// TestTranslatorTracksTheTurn: the translator keeps the turn's last
// main-thread chain entry (the uuid a later fork cuts after), tells every
// tool call and puts the turn id in the result.
func TestTranslatorTracksTheTurn(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "c_tools.stdout.jsonl"))
	require.NoError(t, err)
	var tools []string
	tr := &Translator{TurnID: "turn-1", OnToolUse: func(name string, input json.RawMessage) {
		tools = append(tools, name+" "+string(input))
	}}
	var events []agent.Event
	var lastEntry string
	for _, raw := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var l line
		require.NoError(t, json.Unmarshal(raw, &l))
		if (l.Type == "assistant" || l.Type == "user") && l.ParentToolUseID == nil {
			lastEntry = l.UUID
		}
		events, err = tr.Translate(raw, events[:0])
		require.NoError(t, err)
		if tr.Done() {
			break
		}
	}
	require.True(t, tr.Done())
	require.NotEmpty(t, lastEntry)
	assert.Equal(t, lastEntry, tr.End, "the last assistant or tool-result line")
	require.Len(t, tools, 2)
	assert.True(t, strings.HasPrefix(tools[0], "Bash "), tools[0])
	assert.True(t, strings.HasPrefix(tools[1], "Write "), tools[1])
	final := events[len(events)-1]
	require.Equal(t, agent.EventResult, final.Type)
	assert.Equal(t, "turn-1", final.Result.TurnID)
}
