package openai

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/agcluster/caddy-agcluster/agent"
)

func FuzzParseChatCompletionRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"agent","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"agent","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"agent","messages":[{"role":"user","content":"q"},{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"1","content":"r"},{"role":"user","content":"more"}]}`,
		`{"model":"agent","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:,"}}]}]}`,
		`{"model":"agent","messages":"hi"}`,
		`{"model":"agent","messages":[{"role":"user","content":"a\u0000"}],"stream":"yes"}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, e := ParseChatCompletionRequest(bytes.NewReader(body), 1<<16)
		if e != nil {
			if req != nil {
				t.Fatal("both a request and an error")
			}
			if e.Status != 400 && e.Status != 413 {
				t.Fatalf("status %d", e.Status)
			}
			if e.Message == "" || e.Type == "" {
				t.Fatalf("incomplete error %+v", e)
			}
			return
		}
		if strings.TrimSpace(req.Model) == "" {
			t.Fatal("accepted without a model")
		}
		if len(req.Messages) == 0 {
			t.Fatal("accepted without messages")
		}
		if req.Messages[len(req.Messages)-1].Role != RoleUser {
			t.Fatal("accepted with a last message not from the user")
		}
		if strings.TrimSpace(req.LastUserText()) == "" {
			t.Fatal("accepted an empty user message")
		}
		if strings.IndexByte(req.LastUserText(), 0) >= 0 {
			t.Fatal("accepted a NUL byte")
		}
		if len(req.History()) != len(req.Messages)-1 {
			t.Fatal("history is not all but the last message")
		}
		_ = req.SystemText()
		if h := FormatHistoryLimit(req.History(), 1000); len(h) > 1000 {
			t.Fatalf("history of %d bytes over its cap", len(h))
		}
		if Fingerprint(req.Messages) != Fingerprint(req.Messages) {
			t.Fatal("unstable fingerprint")
		}
	})
}

// fuzzEvents decodes an event sequence from data.
func fuzzEvents(data []byte) (Options, []agent.Event) {
	var opts Options
	if len(data) == 0 {
		return opts, nil
	}
	o := data[0]
	data = data[1:]
	opts.Tools = []ToolRendering{ToolsOff, ToolsSummary, ToolsFull, ""}[o&3]
	opts.Reasoning = o&4 != 0
	opts.IncludeUsage = o&8 != 0
	opts.Model = "fuzz"

	take := func() string {
		if len(data) == 0 {
			return ""
		}
		n := int(data[0]) % 24
		data = data[1:]
		if n > len(data) {
			n = len(data)
		}
		s := string(data[:n])
		data = data[n:]
		return s
	}
	ids := []string{"a", "b", "c"}
	codes := []string{agent.CodeAPIRetry, agent.CodeRestarted, agent.CodePermissionDenied, agent.CodeAuth, ""}
	statuses := []string{"completed", "in_progress", "pending", "?"}
	tools := []string{"Bash", "Read", "TodoWrite", "Task", "mcp__x__y", ""}
	var events []agent.Event
	for len(data) > 0 {
		op := data[0]
		data = data[1:]
		var e agent.Event
		if op&0x80 != 0 {
			e.ParentToolUseID = "p"
		}
		id := ids[int(op>>4)%len(ids)]
		switch op & 0x0f {
		case 0, 1, 2:
			e.Type, e.Text = agent.EventTextDelta, take()
		case 3:
			e.Type, e.Text = agent.EventText, take()
		case 4:
			e.Type, e.Text = agent.EventThinkingDelta, take()
		case 5:
			e.Type, e.Text = agent.EventThinking, take()
		case 6:
			name := tools[int(op>>4)%len(tools)]
			e.Type, e.ToolUseID, e.Name = agent.EventToolUse, id, name
			in, _ := json.Marshal(map[string]string{"command": take(), "file_path": take()})
			e.Input = in
		case 7:
			e.Type, e.ToolUseID, e.Output, e.IsError = agent.EventToolResult, id, take(), op&0x40 != 0
		case 8:
			e.Type = agent.EventTodo
			for i := 0; i < int(op>>4)%4; i++ {
				e.Todos = append(e.Todos, agent.Todo{Content: take(), Status: statuses[i%len(statuses)]})
			}
		case 9, 10:
			e.Type, e.Code, e.ToolUseID, e.Name, e.Message = agent.EventNotice, codes[int(op>>4)%len(codes)], id, take(), take()
		case 11:
			e.Type = agent.EventResult
			e.Result = &agent.Result{Text: take(), StopReason: []string{"end_turn", "max_tokens"}[op>>6&1],
				Usage: agent.Usage{InputTokens: int64(op), OutputTokens: int64(op >> 2), CacheReadInputTokens: int64(op >> 4)}}
		case 12:
			e.Type, e.Code, e.Message = agent.EventError, codes[int(op>>4)%len(codes)], take()
		case 13:
			e.Type = agent.EventType(take()) // unknown types are ignored
		default:
			e.Type = "keepalive" // handled by the fuzz body
		}
		events = append(events, e)
	}
	return opts, events
}

func FuzzStreamWriter(f *testing.F) {
	f.Add([]byte{0x05, 0x00, 5, 'h', 'e', 'l', 'l', 'o', 0x03, 5, 'h', 'e', 'l', 'l', 'o', 0x0b, 0})
	f.Add([]byte{0x0e, 0x04, 3, 'a', '`', 'b', 0x05, 1, 'x', 0x06, 4, 'l', 's', ' ', '`', 0, 0x07, 3, '`', '`', '`', 0x0c, 4, 'b', 'o', 'o', 'm'})
	f.Add([]byte{0x01, 0x18, 0x28, 0x09, 0, 0, 0x29, 1, 'B', 2, 'n', 'o', 0x86, 1, 'x', 1, 'y', 0x80, 2, 's', 'u', 0x0e, 0x0b, 0})
	f.Add([]byte{0x02, 0x00, 4, 0xff, 0xfe, '<', '&', 0x00, 2, 0xe2, 0x80, 0x03, 3, '\n', 0, 0x1f})
	f.Fuzz(func(t *testing.T, data []byte) {
		opts, events := fuzzEvents(data)
		var buf, burst bytes.Buffer
		s := NewStreamWriter(&buf, func() error { return nil }, opts)
		// b gets the same events in bursts (Buffer, then Flush every
		// third event), as the relay writes them: the bytes are the same.
		b := NewStreamWriter(&burst, func() error { return nil }, s.t.opts)
		c := NewCollector(opts)
		for i, e := range events {
			if e.Type == "keepalive" {
				if err := s.KeepAlive(); err != nil {
					t.Fatal(err)
				}
				if err := b.BufferKeepAlive(); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := s.Event(e); err != nil {
				t.Fatal(err)
			}
			if err := b.Buffer(e); err != nil {
				t.Fatal(err)
			}
			if i%3 == 2 {
				if err := b.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			c.Event(e)
		}
		if err := s.Finish(); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(); err != nil {
			t.Fatal(err)
		}
		if burst.String() != buf.String() {
			t.Fatalf("buffered stream differs:\n%s\nfrom:\n%s", burst.String(), buf.String())
		}
		res, err := checkSSE(buf.String())
		if err != nil {
			t.Fatalf("%v\n%s", err, buf.String())
		}
		comp := c.Completion()
		got, want := res.Content, comp.Choices[0].Message.Content
		if !strings.ContainsRune(got, '\uFFFD') && got != want {
			t.Fatalf("stream content %q != collector content %q", got, want)
		}
		if res.Finish != comp.Choices[0].FinishReason {
			t.Fatalf("finish %q != %q", res.Finish, comp.Choices[0].FinishReason)
		}
		if !opts.Reasoning && res.Reasoning != "" {
			t.Fatal("reasoning without Options.Reasoning")
		}
		if opts.IncludeUsage != (res.Usage != nil) {
			t.Fatal("usage chunk does not follow IncludeUsage")
		}
	})
}
