package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// benchConversationShapes: what regenerate and the client's own functions
// cost next to a plain follow-up (warm, the same run's). Each run is a new
// conversation of two turns sent with their history; then
//   - regenerate: the second turn again (the history without its answer):
//     the agent rewinds the turn's files and restarts the CLI at the first
//     turn, forking its session;
//   - a function round trip: the model calls get_weather, the client sends
//     the result, and the same agent turn goes on: the time from sending
//     the result to the first token of the answer.
func benchConversationShapes(b *testing.B, e *env, g *gateway, runs int, warm []time.Duration, t *table) {
	e.script(b, anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "weather in Paris", HasToolResult: ptr(false)},
		Response: anthropictest.Response{Blocks: []anthropictest.Block{weatherCall()}},
		Times:    anthropictest.Unlimited,
	}}, Default: &anthropictest.Response{Text: "A short answer."}})
	c := g.client("sk-ant-bench-shapes")
	var regen, results []time.Duration
	for i := range runs {
		id := fmt.Sprintf("shape-%d", i)
		msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("First turn.")}
		a1 := mustHistoryTurn(b, c, msgs, id)
		msgs = append(msgs, openai.AssistantMessage(a1.content), openai.UserMessage("Second turn."))
		mustHistoryTurn(b, c, msgs, id)
		again := mustHistoryTurn(b, c, msgs, id) // regenerate the second answer
		regen = append(regen, again.ttft)

		msgs = append(msgs, openai.AssistantMessage(again.content), openai.UserMessage(weatherPrompt))
		params := weatherParams(msgs...)
		first, err := c.Chat.Completions.New(benchCtx(b), params, conv(id))
		if err != nil {
			b.Fatal(err)
		}
		if first.Choices[0].FinishReason != "tool_calls" {
			b.Fatalf("run %d: finish reason %q, want tool_calls", i, first.Choices[0].FinishReason)
		}
		call := first.Choices[0].Message.ToolCalls[0]
		params.Messages = append(params.Messages, first.Choices[0].Message.ToParam(),
			openai.ToolMessage(`{"city":"Paris","forecast":"sunny"}`, call.ID))
		results = append(results, mustStream(b, c, params, id).ttft)
		g.deleteSessions(b)
	}
	t.add("regenerate TTFT (rewind, CLI restarted at the turn)", regen, "")
	t.addRatio("regenerate TTFT / follow-up TTFT", regen, warm)
	t.add("function result to first token (the same turn goes on)", results, "")
	t.addRatio("function result to first token / follow-up TTFT", results, warm)
}

// benchCtx bounds one benchmark request.
func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// mustStream streams params in the conversation id (see turn).
func mustStream(b *testing.B, c openai.Client, params openai.ChatCompletionNewParams, id string) turnResult {
	out, err := streamTurnOf(c, params, id)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// mustHistoryTurn streams one turn that sends msgs (the history and the
// new message) in the conversation id.
func mustHistoryTurn(b *testing.B, c openai.Client, msgs []openai.ChatCompletionMessageParamUnion, id string) turnResult {
	return mustStream(b, c, openai.ChatCompletionNewParams{Model: "agent", Messages: msgs}, id)
}
