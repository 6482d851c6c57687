package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// branchChat is a client that keeps a conversation as a tree of tagged
// messages, as LibreChat keeps sibling branches: each request sends one
// path through the tree (user and assistant tags alternating) and a new
// user message.
type branchChat struct {
	e       *env
	c       openai.Client
	prefix  string                 // makes this conversation's tags unique
	opts    []option.RequestOption // the conversation header, if any
	answers map[string]string      // assistant tag -> the content the client got
}

func (b *branchChat) tag(s string) string { return b.prefix + "-" + s }

func (b *branchChat) userText(tag string) string { return "Message " + mark(b.tag(tag)) + "." }

// history is the path's messages as the client sends them: its own texts
// and the answers exactly as it received them.
func (b *branchChat) history(t *testing.T, path []string) []openai.ChatCompletionMessageParamUnion {
	t.Helper()
	msgs := make([]openai.ChatCompletionMessageParamUnion, 0, len(path)+1)
	for i, tag := range path {
		if i%2 == 0 {
			msgs = append(msgs, openai.UserMessage(b.userText(tag)))
			continue
		}
		answer, ok := b.answers[tag]
		require.True(t, ok, "no answer %s yet", tag)
		msgs = append(msgs, openai.AssistantMessage(answer))
	}
	return msgs
}

// ask sends path and then the user message tagged next, streamed, and
// returns the answer.
func (b *branchChat) ask(t *testing.T, path []string, next string) string {
	t.Helper()
	got, err := streamed(t, b.c, chatRequest(append(b.history(t, path), openai.UserMessage(b.userText(next)))), b.opts...)
	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
	return got.Choices[0].Message.Content
}

// send asks, after path, the user message tagged next; the model answers
// with the marker reply. It checks that the model's context was exactly the
// path and the new message (the turns both share, none of another branch)
// and returns the answer.
func (b *branchChat) send(t *testing.T, path []string, next, reply string) string {
	t.Helper()
	b.e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Answer " + mark(b.tag(reply)) + "."}})
	content := b.ask(t, path, next)
	require.Contains(t, content, mark(b.tag(reply)))
	b.answers[reply] = content

	var want []string
	for i, tag := range append(path[:len(path):len(path)], next) {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		want = append(want, role+":"+b.tag(tag))
	}
	assert.Equal(t, want, markedContext(t, b.e.lastCLIRequest(t)), "the model's context")
	return content
}

// TestBranches: a history that is not an extension of the conversation's
// transcript continues from the last turn both share (regenerate, edit,
// switching between LibreChat's sibling branches), in the same agent, with
// a conversation id and by the history alone; the workspace follows the
// branch where it can and says where it cannot.
func TestBranches(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	const key = "sk-ant-test-branches"
	c := g.client(key)

	steps := []struct {
		what        string
		path        []string
		user, reply string
	}{
		{"first message", nil, "u1", "a1"},
		{"second message", []string{"u1", "a1"}, "u2", "a2"},
		{"third message", []string{"u1", "a1", "u2", "a2"}, "u3", "a3"},
		{"regenerate the last answer", []string{"u1", "a1", "u2", "a2"}, "u3", "a3r"},
		{"edit the second message", []string{"u1", "a1"}, "u2e", "a2e"},
		{"back to the first branch", []string{"u1", "a1", "u2", "a2", "u3", "a3"}, "u4", "a4"},
		{"back to the edited branch", []string{"u1", "a1", "u2e", "a2e"}, "u5", "a5"},
	}
	for _, mode := range []struct {
		name, prefix string
		opts         []option.RequestOption
	}{
		{"with a conversation id", "h", []option.RequestOption{conv("c-branches")}},
		{"by history", "f", nil},
	} {
		t.Run(mode.name, func(t *testing.T) {
			before := e.agentCount(t, g)
			b := &branchChat{e: e, c: c, prefix: mode.prefix, opts: mode.opts, answers: map[string]string{}}
			for _, s := range steps {
				t.Run(s.what, func(t *testing.T) { b.send(t, s.path, s.user, s.reply) })
			}
			if mode.opts != nil {
				// Only a conversation id tells an edited first message
				// from a new conversation.
				t.Run("edit the first message", func(t *testing.T) { b.send(t, nil, "u1e", "a1e") })
			}
			assert.Equal(t, before+1, e.agentCount(t, g), "one agent for the whole tree")
		})
	}
	assert.Contains(t, g.metrics(t), `caddy_agcluster_turns_total{continues="branch",new_session="false",outcome="ok",provider="docker"}`,
		"branch turns are counted as such")

	t.Run("workspace of an abandoned turn", func(t *testing.T) {
		b := &branchChat{e: e, c: c, prefix: "w", opts: []option.RequestOption{conv("c-branch-files")}, answers: map[string]string{}}
		var sid string
		b.opts = append(b.opts, sessionInto(&sid))
		file := func(path string) reply { return g.workspaceFile(t, key, sid, path) }

		// u1: the model writes kept.txt, a turn every branch keeps.
		e.script(t, toolTurn(b.tag("u1"), "Wrote it "+mark(b.tag("a1"))+".",
			anthropictest.ToolUse("Write", map[string]string{"file_path": "/workspace/kept.txt", "content": "kept\n"})))
		b.answers["a1"] = b.ask(t, nil, "u1")
		require.NotEmpty(t, sid, "X-Session-ID names the session")

		// u2: a file from the Write tool and one from Bash, in a turn the
		// edit below abandons.
		e.script(t, toolTurn(b.tag("u2"), "Made them "+mark(b.tag("a2"))+".",
			anthropictest.ToolUse("Write", map[string]string{"file_path": "/workspace/abandoned.txt", "content": "abandoned\n"}),
			anthropictest.ToolUse("Bash", map[string]string{"command": "echo made-by-bash > bash-made.txt", "description": "make a file"})))
		b.ask(t, []string{"u1", "a1"}, "u2")
		for path, want := range map[string]string{"kept.txt": "kept\n", "abandoned.txt": "abandoned\n", "bash-made.txt": "made-by-bash\n"} {
			r := file(path)
			require.Equal(t, http.StatusOK, r.status, "%s before the branch: %s", path, r.body)
			require.Equal(t, want, string(r.body), path)
		}

		answer := b.send(t, []string{"u1", "a1"}, "u2e", "a2e")
		first, _, _ := strings.Cut(strings.TrimSpace(answer), "\n")
		assert.Contains(t, first, "bash-made.txt", "the first line names what Bash made in the abandoned turn: %q", answer)
		assert.Contains(t, strings.ToLower(first), "restored", "and says it could not be restored: %q", answer)
		assert.Equal(t, http.StatusNotFound, file("abandoned.txt").status, "the Write tool's file of the abandoned turn is gone")
		r := file("kept.txt")
		assert.Equal(t, http.StatusOK, r.status, "the shared turn's file stays")
		assert.Equal(t, "kept\n", string(r.body))
	})
}

// toolTurn scripts a turn: the user message with marker tag gets the tool
// calls, and once their results are in the model answers text.
func toolTurn(tag, text string, calls ...anthropictest.Block) anthropictest.Script {
	return anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: mark(tag), HasToolResult: ptr(false)},
		Response: anthropictest.Response{Blocks: calls},
	}, {
		Match:    anthropictest.Match{HasToolResult: ptr(true)},
		Response: anthropictest.Response{Text: text},
	}}}
}
