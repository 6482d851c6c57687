package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// TestClientTools: OpenAI function tools with openai-go. The model's call
// of a client function comes back as tool_calls (streamed and not); the
// client's tool message continues the same agent turn, which ends with the
// model's text. tool_choice "none" offers the model no client tool, and a
// client that never sends the result but a new message gets a normal answer.
func TestClientTools(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	c := g.client("sk-ant-test-client-tools")

	for _, tc := range []struct {
		name   string
		stream bool
	}{{"round trip streamed", true}, {"round trip not streamed", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e.script(t, weatherScript())
			before := e.agentCount(t, g)
			rt := goToolRoundTrip(t, c, tc.stream, conv("c-"+strings.ReplaceAll(tc.name, " ", "-")))
			assertToolRoundTrip(t, e, rt, tc.stream)
			assert.Equal(t, before+1, e.agentCount(t, g), "one agent for the call and its result")
		})
	}
	assert.Contains(t, g.metrics(t), `caddy_agcluster_turns_total{continues="tool_results",new_session="false",outcome="ok",provider="docker"} 2`,
		"each round trip's second request continued the waiting turn")

	t.Run("tool_choice none", func(t *testing.T) {
		const text = "Without tools: probably sunny."
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: text}})
		params := weatherParams(openai.UserMessage(weatherPrompt))
		params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")}
		_, sum := completeChat(t, c, params, true, conv("c-tool-choice-none"))
		assertNoClientTools(t, e, sum, text)
	})

	t.Run("a result that never comes", func(t *testing.T) {
		const joke = "Why did the cloud stay home? It was feeling under the weather."
		e.script(t, anthropictest.Script{
			Steps: []anthropictest.Step{{
				Match:    anthropictest.Match{LastUserTextContains: "weather in Paris", HasToolResult: ptr(false)},
				Response: anthropictest.Response{Blocks: []anthropictest.Block{weatherCall()}},
			}, {
				Match:    anthropictest.Match{LastUserTextContains: "tell me a joke"},
				Response: anthropictest.Response{Text: joke},
				Times:    anthropictest.Unlimited,
			}},
			// Whatever else the model is asked (a call that got no result):
			Default: &anthropictest.Response{Text: "Noted."},
		})
		opt := conv("c-tool-abandoned")
		params := weatherParams(openai.UserMessage(weatherPrompt))
		first, sum := completeChat(t, c, params, true, opt)
		require.Equal(t, "tool_calls", sum.FinishReason, "%+v", sum)

		// The client keeps the call in its history but sends no tool
		// message: a new user message instead.
		params.Messages = append(params.Messages, first.Choices[0].Message.ToParam(),
			openai.UserMessage("Never mind that, tell me a joke instead."))
		got, sum := completeChat(t, c, params, false, opt)
		assert.Equal(t, "stop", sum.FinishReason)
		assert.Empty(t, sum.ToolCalls)
		assert.True(t, strings.HasSuffix(strings.TrimSpace(sum.Content), joke), "a normal answer: %q", sum.Content)
		assert.Contains(t, e.lastCLIRequest(t).LastUserText(), "tell me a joke")

		// The waiting turn ended cleanly: the conversation goes on.
		params.Messages = append(params.Messages, got.Choices[0].Message.ToParam(), openai.UserMessage("Thanks, tell me a joke again."))
		_, sum = completeChat(t, c, params, true, opt)
		assert.Equal(t, "stop", sum.FinishReason)
		assert.Contains(t, sum.Content, joke)
	})
}

// TestClientToolTimeout: a client that never sends its function's result.
// The agent's wait ends (AGENT_TOOL_RESULT_TIMEOUT, 1s here), the model is
// told and its turn ends unseen; the result that arrives late goes to a new
// turn as text, whose answer begins with a note saying what happened.
func TestClientToolTimeout(t *testing.T) {
	e := setup(t)
	g := e.startGatewayWith(t, gatewayOptions{providerEnv: []string{"AGENT_TOOL_RESULT_TIMEOUT 1s"}})
	const key = "sk-ant-test-tool-timeout"
	c := g.client(key)
	e.script(t, weatherScript())
	opt := conv("c-tool-timeout")
	var sid string
	params := weatherParams(openai.UserMessage(weatherPrompt))
	first, sum := completeChat(t, c, params, false, opt, sessionInto(&sid))
	require.Equal(t, "tool_calls", sum.FinishReason, "%+v", sum)
	require.NotEmpty(t, sid)

	// The agent's turn waits, then gives up and ends by itself.
	testenv.Eventually(t, time.Minute, func() bool {
		r := api{t: t, g: g, key: key}.do(http.MethodGet, "/api/agents/sessions/"+sid+"/resources", nil, "")
		var res struct {
			Busy bool `json:"busy"`
		}
		return r.status == http.StatusOK && json.Unmarshal(r.body, &res) == nil && !res.Busy
	}, "the waiting turn never ended")
	timedOut := e.lastCLIRequest(t)
	assert.Contains(t, timedOut.AllText(), "did not answer this call in time", "the model was told")

	// The late result: a new turn, told what happened.
	call := first.Choices[0].Message.ToolCalls[0]
	result := weatherResult(t, call.Function.Arguments)
	params.Messages = append(params.Messages, first.Choices[0].Message.ToParam(),
		openai.ToolMessage(result, call.ID))
	_, sum = completeChat(t, c, params, true, opt)
	assert.Equal(t, "stop", sum.FinishReason)
	firstLine, _, _ := strings.Cut(strings.TrimSpace(sum.Content), "\n")
	assert.Contains(t, firstLine, "did not send the results of its function calls", "the answer begins with the note: %q", sum.Content)
	late := e.lastCLIRequest(t).LastUserText()
	assert.Contains(t, late, "Results of the functions you called")
	assert.Contains(t, late, result, "the late result reaches the model as text")
}
