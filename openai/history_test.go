package openai

import (
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
