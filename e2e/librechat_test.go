package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// libreChatTitlePrompt is LibreChat's default title request (titleMethod
// "completion": @librechat/agents' createCompletionTitleRunnable): the one
// user message of a non-streamed request to the chat's own model, with
// "User: <first message>\nAI: <answer>" for %s. LibreChat sends it once the
// first answer is complete, through the same endpoint and headers.
const libreChatTitlePrompt = "Provide a concise, 5-word-or-less title for the conversation, using title case conventions. Only return the title itself.\n\nConversation:\n%s"

// libreChatTitleMarker is the part of the title prompt the mock answers.
const libreChatTitleMarker = "5-word-or-less title"

// libreChat is one LibreChat chat: its X-Conversation-ID header template
// ({{LIBRECHAT_BODY_CONVERSATIONID}}) is empty until the chat has an id,
// then carries it.
type libreChat struct {
	c       openai.Client
	prefix  string
	id      string // "" on the first message
	history []openai.ChatCompletionMessageParamUnion
}

// send posts the chat's history and a new user message tagged n, as
// LibreChat does (streamed, with its user id), and keeps the answer.
func (l *libreChat) send(t *testing.T, n int) string {
	t.Helper()
	l.history = append(l.history, openai.UserMessage(fmt.Sprintf("Message %s.", mark(fmt.Sprintf("%s-u%d", l.prefix, n)))))
	params := chatRequest(l.history)
	params.User = openai.String("librechat-user-" + l.prefix)
	// With no id yet the header goes out empty, as LibreChat's template
	// renders it.
	got, err := streamed(t, l.c, params, conv(l.id))
	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
	answer := got.Choices[0].Message.Content
	l.history = append(l.history, openai.AssistantMessage(answer))
	return answer
}

// title asks for the chat's title as LibreChat does after its first answer.
func (l *libreChat) title(t *testing.T, first, answer string) string {
	t.Helper()
	params := openai.ChatCompletionNewParams{Model: "agent", Messages: []openai.ChatCompletionMessageParamUnion{
		openai.UserMessage(fmt.Sprintf(libreChatTitlePrompt, "User: "+first+"\nAI: "+answer)),
	}}
	got, err := l.c.Chat.Completions.New(ctxFor(t, time.Minute), params, conv(l.id))
	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
	return got.Choices[0].Message.Content
}

// libreChatScript answers each tagged message with the matching answer tag
// and the title request with title.
func libreChatScript(title string, prefixes ...string) anthropictest.Script {
	steps := []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: libreChatTitleMarker},
		Response: anthropictest.Response{Text: title},
		Times:    anthropictest.Unlimited,
	}}
	for _, p := range prefixes {
		for n := 1; n <= 3; n++ {
			steps = append(steps, anthropictest.Step{
				Match:    anthropictest.Match{LastUserTextContains: mark(fmt.Sprintf("%s-u%d", p, n))},
				Response: anthropictest.Response{Text: fmt.Sprintf("Answer %s.", mark(fmt.Sprintf("%s-a%d", p, n)))},
				Times:    anthropictest.Unlimited,
			})
		}
	}
	return anthropictest.Script{Steps: steps}
}

// contextTags is the marked context of n exchanges of chat prefix and its
// next message: user and assistant tags alternating.
func contextTags(prefix string, n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("user:%s-u%d", prefix, i), fmt.Sprintf("assistant:%s-a%d", prefix, i))
	}
	return append(out, fmt.Sprintf("user:%s-u%d", prefix, n+1))
}

// TestLibreChatConversation: LibreChat's header pattern. The first message
// comes with an empty X-Conversation-ID and is followed by a title request
// to the same model; from the second message on the header carries the
// chat's id. One agent serves the chat, its CLI keeps the turns in its
// context, and the title is answered without an agent. Another new chat,
// with an empty header too, gets its own agent.
func TestLibreChatConversation(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	c := g.client("sk-ant-test-librechat")
	const title = "Tagged Message Exchange"
	e.script(t, libreChatScript(title, "la", "lb"))

	a := &libreChat{c: c, prefix: "la"}
	answer := a.send(t, 1)
	assert.Equal(t, []string{"user:la-u1"}, markedContext(t, e.lastCLIRequest(t)))
	require.Equal(t, 1, e.agentCount(t, g))

	e.resetRequests(t)
	assert.Equal(t, title, a.title(t, "Message "+mark("la-u1")+".", answer))
	assert.Equal(t, 1, e.agentCount(t, g), "no agent for the title")
	assert.Zero(t, len(e.cliRequests(t)), "the title reached the model without an agent")

	a.id = "0c6a2f3e-" + testenv.RandomHex(4) + "-4e5b-9f1d-" + testenv.RandomHex(6)
	for n := 2; n <= 3; n++ {
		e.resetRequests(t)
		a.send(t, n)
		req := e.lastCLIRequest(t)
		assert.Equal(t, contextTags("la", n-1), markedContext(t, req), "message %d: the same CLI, the earlier turns in its context", n)
		assert.NotContains(t, req.AllText(), libreChatTitleMarker, "the title was no turn of the agent")
		assert.Equal(t, 1, e.agentCount(t, g), "message %d: the chat's one agent", n)
	}
	sessions := g.sessionTurns(t)
	require.Len(t, sessions, 1)
	assert.Equal(t, int64(3), sessions[0].Turns, "three turns, the title not among them")

	t.Run("another new chat with an empty header", func(t *testing.T) {
		e.resetRequests(t)
		b := &libreChat{c: c, prefix: "lb"}
		b.send(t, 1)
		assert.Equal(t, []string{"user:lb-u1"}, markedContext(t, e.lastCLIRequest(t)), "nothing of the first chat")
		assert.Equal(t, 2, e.agentCount(t, g), "its own agent")
	})
}
