package openai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

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
		switch req.Messages[len(req.Messages)-1].Role {
		case RoleUser:
			if strings.TrimSpace(req.LastUserText()) == "" && req.Attachments().Empty() {
				t.Fatal("accepted an empty user message")
			}
			if len(req.History()) != len(req.Messages)-1 {
				t.Fatal("history is not all but the last message")
			}
		case RoleTool:
			tr := req.ToolResults()
			if tr == nil || len(tr.Results) == 0 || len(tr.Results) > len(tr.Calls) {
				t.Fatalf("accepted tool results that ToolResults does not see: %+v", tr)
			}
		default:
			t.Fatal("accepted with a last message neither from the user nor a tool")
		}
		if strings.IndexByte(req.LastUserText(), 0) >= 0 {
			t.Fatal("accepted a NUL byte")
		}
		if req.ToolChoice != nil && req.ToolChoice.Name != "" && !req.ToolsEnabled() {
			t.Fatal("a named tool_choice without tools")
		}
		var q agent.QueryRequest
		req.ApplyTools(&q)
		for _, tool := range q.Tools {
			if !validFunctionName(tool.Name) || !json.Valid(tool.Parameters) || tool.Parameters[0] != '{' {
				t.Fatalf("accepted tool %+v", tool)
			}
		}
		_ = req.SystemText()
		if h := FormatHistoryLimit(req.History(), 1000); len(h) > 1000 {
			t.Fatalf("history of %d bytes over its cap", len(h))
		}
		fps := PrefixFingerprints(req.Messages)
		if fps[len(req.Messages)] != Fingerprint(req.Messages) || fps[0] != Fingerprint(nil) {
			t.Fatal("prefix fingerprints differ from Fingerprint")
		}
	})
}

// FuzzContentParts drives the content parser with small limits: every
// accepted image is a PNG, JPEG, GIF or WebP within them, every file a
// safe name and data within them, and the content's text survives a
// round trip through its JSON form.
func FuzzContentParts(f *testing.F) {
	for _, s := range []struct {
		sel byte
		raw string
	}{
		{0x82, `[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/gif;base64,R0lGODlhAQABAAAAACw=","detail":"low"}}]`},
		{0x82, `[{"type":"image_url","image_url":"https://ok.test/a.png"},{"type":"image_url","image_url":{"url":"ftp://ok.test/a"}}]`},
		{0x82, `[{"type":"file","file":{"file_data":"data:text/plain;base64,aGVsbG8=","filename":"../a\u0000b.txt"}}]`},
		{0x02, `[{"type":"file","file":{"file_data":"JVBERi0xLjQK","filename":""}},{"type":"file","file":{"file_id":"file-1"}}]`},
		{0x82, `[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"}}]`},
		{0x83, `[{"type":"refusal","refusal":"no"},{"type":"text","text":"x"}]`},
		{0x04, `"plain"`},
		{0x02, `null`},
	} {
		f.Add(s.sel, []byte(s.raw))
	}
	opts := ParseOptions{MaxImageBytes: 64, MaxImages: 2, MaxFileBytes: 64, MaxFiles: 2,
		FetchImageURL: func(u *url.URL) bool { return u.Host == "ok.test" }}
	opts.normalize()
	roles := []string{RoleSystem, RoleDeveloper, RoleUser, RoleAssistant, RoleTool}
	f.Fuzz(func(t *testing.T, sel byte, raw []byte) {
		role, last, calls := roles[int(sel&0x7)%len(roles)], sel&0x80 != 0, sel&0x40 != 0
		c, e := opts.parseMessageContent(raw, role, calls, last, "content")
		if e != nil {
			checkPartError(t, e)
			return
		}
		var images, files int
		for i := range c.Parts {
			p := &c.Parts[i]
			if p.image != nil || p.file != nil {
				if role != RoleUser {
					t.Fatalf("an attachment in a %s message", role)
				}
			}
			if p.image != nil {
				images++
				checkImage(t, p.image, opts)
			}
			if p.file != nil {
				files++
				checkFile(t, p.file, opts)
			}
		}
		if last && (images > opts.MaxImages || files > opts.MaxFiles) {
			t.Fatalf("%d images and %d files accepted", images, files)
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, e := opts.parseMessageContent(again, role, calls, last, "content")
		if e != nil {
			t.Fatalf("the content's JSON form %s is refused: %v", again, e)
		}
		if c2.Text() != c.Text() || c2.TextOnly() != c.TextOnly() {
			t.Fatalf("text %q/%q after a round trip, was %q/%q", c2.Text(), c2.TextOnly(), c.Text(), c.TextOnly())
		}
	})
}

func checkPartError(t *testing.T, e *Error) {
	t.Helper()
	if e.Param == nil || !strings.HasPrefix(*e.Param, "content") || e.Message == "" {
		t.Fatalf("error without a param or message: %+v", e)
	}
	switch e.Status {
	case 400:
	case 413:
		if e.Code == nil || (*e.Code != "image_too_large" && *e.Code != "file_too_large") {
			t.Fatalf("413 without an attachment code: %+v", e)
		}
	default:
		t.Fatalf("status %d", e.Status)
	}
}

func checkImage(t *testing.T, img *Image, opts ParseOptions) {
	t.Helper()
	if img.URL != "" {
		u, err := url.Parse(img.URL)
		if err != nil || u.Host != "ok.test" || (strings.ToLower(u.Scheme) != "http" && strings.ToLower(u.Scheme) != "https") || img.Data != "" {
			t.Fatalf("accepted image URL %q", img.URL)
		}
		return
	}
	b, err := base64.StdEncoding.DecodeString(img.Data)
	if err != nil {
		t.Fatalf("accepted image data that does not decode: %v", err)
	}
	if int64(len(b)) != img.Size || img.Size > opts.MaxImageBytes || sniffImage(b) != img.MediaType || img.MediaType == "" {
		t.Fatalf("accepted image %+v of %d bytes (%q)", img, len(b), sniffImage(b))
	}
}

func checkFile(t *testing.T, f *File, opts ParseOptions) {
	t.Helper()
	b, err := f.Bytes()
	if err != nil {
		t.Fatalf("accepted file data that does not decode: %v", err)
	}
	if int64(len(b)) != f.Size || f.Size == 0 || f.Size > opts.MaxFileBytes || f.MediaType == "" {
		t.Fatalf("accepted file %+v of %d bytes", f, len(b))
	}
	n := f.Filename
	if n == "" || len(n) > maxFilenameBytes || !utf8.ValidString(n) || strings.ContainsAny(n, "/\\\x00") ||
		strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".") || sanitizeFilename(n) != n {
		t.Fatalf("accepted file name %q", n)
	}
	for _, r := range n {
		if r < 0x20 || r == 0x7f {
			t.Fatalf("control character in file name %q", n)
		}
	}
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
		case 14:
			e.Type = agent.EventClientToolCalls
			for i := 0; i < int(op>>4)%4; i++ {
				e.Calls = append(e.Calls, agent.ToolCall{ID: take(), Name: take(), Arguments: take()})
			}
			if op&0x40 != 0 {
				e.Result = &agent.Result{Usage: agent.Usage{InputTokens: int64(op), OutputTokens: 1}}
			}
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
	f.Add([]byte{0x08, 0x00, 2, 'h', 'i', 0x6e, 2, 'c', '1', 1, 'f', 2, '{', '}', 2, 'c', '2', 1, 'g', 0, 0x0b, 0})
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
		if calls := comp.Choices[0].Message.ToolCalls; len(calls) != len(res.ToolCalls) {
			t.Fatalf("stream tool calls %+v != collector tool calls %+v", res.ToolCalls, calls)
		} else if len(calls) > 0 && !strings.ContainsRune(fmt.Sprint(res.ToolCalls), '\uFFFD') && !reflect.DeepEqual(calls, res.ToolCalls) {
			t.Fatalf("stream tool calls %+v != collector tool calls %+v", res.ToolCalls, calls)
		}
		if !reflect.DeepEqual(s.ToolCalls(), comp.Choices[0].Message.ToolCalls) {
			t.Fatalf("StreamWriter.ToolCalls %+v != collector tool calls", s.ToolCalls())
		}
		if !opts.Reasoning && res.Reasoning != "" {
			t.Fatal("reasoning without Options.Reasoning")
		}
		if opts.IncludeUsage != (res.Usage != nil) {
			t.Fatal("usage chunk does not follow IncludeUsage")
		}
	})
}
