package openai

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func msg(role, text string) Message { return Message{Role: role, Content: TextContent(text)} }

func TestFormatHistory(t *testing.T) {
	tests := []struct {
		name string
		msgs []Message
		max  int
		want string
	}{{
		name: "empty",
		want: "",
	}, {
		name: "only system",
		msgs: []Message{msg(RoleSystem, "be nice")},
		want: "",
	}, {
		name: "transcript",
		msgs: []Message{
			msg(RoleSystem, "be nice"),
			msg(RoleUser, " What is 2+2? "),
			msg(RoleAssistant, "4"),
			{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "c1", Type: "function", Function: FunctionCall{Name: "calc", Arguments: "{\"x\":\n 1}"}}}},
			{Role: RoleTool, ToolCallID: "c1", Content: TextContent("1")},
			{Role: RoleUser, Name: "bob", Content: Content{Parts: []ContentPart{{Type: "text", Text: "multi"}, {Type: "text", Text: "part"}}}},
		},
		want: "Earlier in this conversation:\nUser: What is 2+2?\nAssistant: 4\nAssistant: [called calc({\"x\": 1})]\nTool result (c1): 1\nUser (bob): multi\npart",
	}, {
		name: "keeps the most recent messages",
		msgs: []Message{
			msg(RoleUser, strings.Repeat("a", 300)),
			msg(RoleAssistant, strings.Repeat("b", 300)),
			msg(RoleUser, "recent question"),
			msg(RoleAssistant, "recent answer"),
		},
		max:  400,
		want: "Earlier in this conversation:\n(2 earlier messages omitted)\nUser: recent question\nAssistant: recent answer",
	}, {
		name: "one dropped message",
		msgs: []Message{msg(RoleUser, strings.Repeat("a", 300)), msg(RoleAssistant, "ok")},
		max:  300,
		want: "Earlier in this conversation:\n(1 earlier message omitted)\nAssistant: ok",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			if tc.max > 0 {
				got = FormatHistoryLimit(tc.msgs, tc.max)
			} else {
				got = FormatHistory(tc.msgs)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFormatHistoryCapsOneHugeMessage(t *testing.T) {
	huge := strings.Repeat("é", 10000) // 20000 bytes
	got := FormatHistoryLimit([]Message{msg(RoleUser, "older"), msg(RoleAssistant, huge)}, 1000)
	assert.LessOrEqual(t, len(got), 1000)
	assert.True(t, utf8.ValidString(got))
	assert.True(t, strings.HasPrefix(got, "Earlier in this conversation:\n(1 earlier message omitted)\nAssistant: éé"), got[:80])
	assert.Contains(t, got, "more bytes)")

	long := make([]Message, 0, 2000)
	for i := 0; i < 2000; i++ {
		long = append(long, msg(RoleUser, strings.Repeat("q", 50)), msg(RoleAssistant, strings.Repeat("r", 50)))
	}
	got = FormatHistory(long)
	assert.LessOrEqual(t, len(got), DefaultHistoryChars)
	assert.True(t, strings.HasSuffix(got, "Assistant: "+strings.Repeat("r", 50)))
}

func TestFingerprint(t *testing.T) {
	base := []Message{msg(RoleUser, "hi"), msg(RoleAssistant, "hello")}
	fp := Fingerprint(base)
	assert.Len(t, fp, 64)
	assert.Equal(t, fp, Fingerprint([]Message{msg(RoleUser, "hi"), msg(RoleAssistant, "hello")}), "stable")
	assert.Equal(t, fp, Fingerprint([]Message{msg(RoleUser, "  hi\n"), msg(RoleAssistant, "hello\n\n")}), "trimmed")
	assert.Equal(t, fp, Fingerprint([]Message{
		{Role: RoleUser, Content: Content{Parts: []ContentPart{{Type: "text", Text: "hi"}}}},
		{Role: RoleAssistant, Content: TextContent("hello"), Name: "x"},
	}), "content form and other fields do not matter")

	for name, other := range map[string][]Message{
		"role":     {msg(RoleSystem, "hi"), msg(RoleAssistant, "hello")},
		"text":     {msg(RoleUser, "hi!"), msg(RoleAssistant, "hello")},
		"order":    {msg(RoleAssistant, "hello"), msg(RoleUser, "hi")},
		"shorter":  {msg(RoleUser, "hi")},
		"boundary": {msg(RoleUser, "hihello"), msg(RoleAssistant, "")},
	} {
		assert.NotEqual(t, fp, Fingerprint(other), name)
	}
	assert.NotEqual(t, Fingerprint(nil), Fingerprint([]Message{msg(RoleUser, "")}))
}

func TestTruncateHelpers(t *testing.T) {
	assert.Equal(t, "abc", truncateText("abc", 3))
	assert.Equal(t, "ab… (1 more bytes)", truncateText("abc", 2))
	assert.Equal(t, "… (2 more bytes)", truncateText("é", 1))
	assert.Equal(t, 0, runeBoundary("é", -1))
	assert.Equal(t, "a b c", oneLine(" a\n b\t\tc "))
	require.Equal(t, "ab", oneLine(" ab "))
}

// oldFingerprint is Fingerprint as it was before tool calls counted: the
// role and trimmed text of each message, each length-prefixed.
func oldFingerprint(msgs []Message) string {
	h := sha256.New()
	for _, m := range msgs {
		text := strings.TrimSpace(m.Content.Text())
		h.Write(binary.AppendUvarint(nil, uint64(len(m.Role))))
		h.Write([]byte(m.Role))
		h.Write(binary.AppendUvarint(nil, uint64(len(text))))
		h.Write([]byte(text))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestFingerprintToolCalls(t *testing.T) {
	call := func(id, name, args string) ToolCall {
		return ToolCall{ID: id, Type: "function", Function: FunctionCall{Name: name, Arguments: args}}
	}
	conv := func(calls []ToolCall, toolID string) []Message {
		return []Message{msg(RoleUser, "weather?"), {Role: RoleAssistant, ToolCalls: calls},
			{Role: RoleTool, ToolCallID: toolID, Content: TextContent("sunny")}}
	}
	base := conv([]ToolCall{call("c1", "get_weather", `{"city":"Oslo"}`)}, "c1")
	fp := Fingerprint(base)

	assert.Equal(t, oldFingerprint([]Message{msg(RoleUser, "hi"), msg(RoleAssistant, " hello ")}),
		Fingerprint([]Message{msg(RoleUser, "hi"), msg(RoleAssistant, " hello ")}), "plain messages keep their fingerprints")
	assert.NotEqual(t, oldFingerprint(base), fp, "tool calls count")
	assert.Equal(t, fp, Fingerprint(conv([]ToolCall{call("c1", "get_weather", `{ "city": "Oslo" }`)}, "c1")), "arguments do not count")
	for name, other := range map[string][]Message{
		"call id":      conv([]ToolCall{call("c2", "get_weather", "{}")}, "c1"),
		"call name":    conv([]ToolCall{call("c1", "get_time", "{}")}, "c1"),
		"more calls":   conv([]ToolCall{call("c1", "get_weather", "{}"), call("c2", "get_weather", "{}")}, "c1"),
		"tool call id": conv([]ToolCall{call("c1", "get_weather", "{}")}, "c9"),
		"no calls":     conv(nil, "c1"),
		"no tool id":   conv([]ToolCall{call("c1", "get_weather", "{}")}, ""),
		// The head of one record must not pass for another's.
		"id and name run together": conv([]ToolCall{call("c1g", "et_weather", "{}")}, "c1"),
	} {
		assert.NotEqual(t, fp, Fingerprint(other), name)
	}
}

func TestPrefixFingerprints(t *testing.T) {
	img := ContentPart{Type: PartImageURL, ImageURL: &ImageURL{URL: "data:image/png;base64,AAAA"}}
	convs := map[string][]Message{
		"empty": nil,
		"one":   {msg(RoleUser, "hi")},
		"long": {msg(RoleSystem, "be brief"), msg(RoleUser, "hi"), msg(RoleAssistant, "hello"),
			{Role: RoleUser, Content: Content{Parts: []ContentPart{{Type: PartText, Text: "this?"}, img}}},
			{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "c1", Function: FunctionCall{Name: "f"}}}},
			{Role: RoleTool, ToolCallID: "c1", Content: TextContent("r")}, msg(RoleUser, "ok")},
	}
	for name, msgs := range convs {
		t.Run(name, func(t *testing.T) {
			got := PrefixFingerprints(msgs)
			require.Len(t, got, len(msgs)+1)
			for i := range got {
				assert.Equal(t, Fingerprint(msgs[:i]), got[i], "prefix %d", i)
			}
			assert.Equal(t, Fingerprint(msgs), got[len(msgs)])
			seen := map[string]bool{}
			for _, fp := range got {
				assert.False(t, seen[fp], "every prefix differs")
				seen[fp] = true
			}
		})
	}
}

func TestFingerprintAttachments(t *testing.T) {
	withImage := func(url string) []Message {
		return []Message{{Role: RoleUser, Content: Content{Parts: []ContentPart{{Type: PartText, Text: "this?"},
			{Type: PartImageURL, ImageURL: &ImageURL{URL: url}}}}}}
	}
	fp := Fingerprint(withImage("data:image/png;base64,AAAA"))
	assert.Equal(t, fp, Fingerprint(withImage("data:image/png;base64,BBBB")), "the image's encoding does not count")
	assert.Equal(t, fp, Fingerprint([]Message{msg(RoleUser, "this?\n[image]")}), "the image counts as its placeholder")
	assert.NotEqual(t, fp, Fingerprint([]Message{msg(RoleUser, "this?")}), "an image counts")
	file := func(name string) []Message {
		return []Message{{Role: RoleUser, Content: Content{Parts: []ContentPart{{Type: PartFile, File: &FilePart{FileData: "eA==", Filename: name}}}}}}
	}
	assert.NotEqual(t, Fingerprint(file("a.pdf")), Fingerprint(file("b.pdf")), "a file's name counts")
	assert.Equal(t, Fingerprint(file("a.pdf")), Fingerprint(file("dir/a.pdf")), "as sanitised")
}
