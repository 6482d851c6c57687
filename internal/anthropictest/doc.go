// Package anthropictest is a scripted mock of the Anthropic Messages API for
// integration tests that run the real Claude Code CLI (`claude`) against it
// through ANTHROPIC_BASE_URL.
//
// It is a faithful Go port of the Python reference mock
// /work/shared/fixtures/claude-stream-json/mock_anthropic.py (described in the
// README.md next to it), which was used to record the CLI fixtures in that
// directory. Scripts use the same JSON shape as the Python mock, so a script
// file works with either implementation.
//
// # Endpoints
//
//   - POST /v1/messages[?beta=true]: streaming (SSE, when the body says
//     "stream": true) and non-streaming answers taken from the script.
//   - POST /v1/messages/count_tokens: {"input_tokens": <estimate>}.
//   - anything else: recorded and answered 404 with an Anthropic-shaped
//     JSON error.
//   - /_mock/...: the control API (see below); never recorded.
//
// The SSE stream follows the Python mock event for event: message_start,
// then per content block content_block_start (a ping after the first one),
// content_block_delta chunks of [Response.ChunkChars] characters (runes,
// never bytes), a signature_delta for thinking blocks and content_block_stop,
// then message_delta and message_stop. Every event is flushed at once.
// Token counts are the Python mock's estimates: the length in characters of
// Python's json.dumps of the value, divided by 4.
//
// # Scripts
//
// A [Script] holds [Step]s tried in order and a default [Response]. The first
// step that still has uses left and whose [Match] fits the request answers
// it; otherwise the default answers (text "OK" when none is set):
//
//	srv := anthropictest.NewServer(t, anthropictest.Script{
//		Steps: []anthropictest.Step{{
//			Match:    anthropictest.Match{LastUserTextContains: "List"},
//			Response: anthropictest.Response{Blocks: []anthropictest.Block{
//				{Type: "thinking", Thinking: "I will run ls."},
//				anthropictest.ToolUse("Bash", map[string]any{"command": "ls"}),
//			}},
//		}},
//		Default: &anthropictest.Response{Text: "Done."},
//	})
//	cmd.Env = append(cmd.Env, "ANTHROPIC_BASE_URL="+srv.URL())
//
// # Control API
//
// The same handler serves a small control API under /_mock/ so the mock can
// run as a separate process or container (cmd/mock-anthropic) and still be
// scripted by tests through [Remote]:
//
//	PUT  /_mock/script    body: Script JSON; replaces the script
//	GET  /_mock/requests  the recorded requests, a JSON array
//	POST /_mock/reset     forgets recorded requests and step use counts
//	GET  /_mock/health    200 when up
//
// # Differences from the Python mock
//
//   - [Step.Times] 0 means once (the Python default); Python would disable
//     the step. Negative means unlimited in both.
//   - An empty [Response.Text] means "OK"; an empty text block needs Blocks.
//   - After a mid-stream error event the response is ended properly; the
//     Python mock left the chunked body unterminated.
//   - A POST to /v1/messages whose body is not a JSON object gets 400
//     invalid_request_error rather than 404.
//   - Error answers carry the same request id in the request-id header and
//     the body.
//   - [Response.HangAfterDeltas], the control API and [Server.WaitFor] are
//     additions. Ids and counters belong to each [Server].
package anthropictest
