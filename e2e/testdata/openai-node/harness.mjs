// The official openai npm package against the gateway: one client function
// tool round trip per run, printed as a JSON summary on stdout for
// e2e/openainode_test.go to assert on. Anything that goes wrong (an API
// error, a stream the library refuses) is printed on stderr and exits 1.
//
//   node harness.mjs <base-url> <api-key> <scenario> [conversation-id]
//
// base-url is the gateway's /v1 URL. Scenarios:
//   roundtrip-stream  the tool call and the answer after its result, streamed
//                     (client.chat.completions.stream, the library's own
//                     accumulator)
//   roundtrip         the same with non-streamed completions
//   tool-choice-none  one streamed request with the tool and tool_choice "none"
//   backoff           two GET /models with the library's retries on, against a
//                     site whose rate limit allows one per window: prints
//                     {"scenario", "statuses", "waited_ms"} (the statuses the
//                     library saw, and how long it waited between the 429 and
//                     its retry)
//
// The summary (the shape toolRoundTrip in e2e/chat_helpers_test.go decodes):
//   {"scenario", "prompt",
//    "first": {"finish_reason", "content", "tool_calls": [{"id", "type", "name", "arguments"}],
//              "tool_call_chunks"},          // chunks whose delta carried tool_calls (streamed)
//    "tool_result",                          // the content sent back in the tool message
//    "final": {"finish_reason", "content"}}  // absent for tool-choice-none
import OpenAI from 'openai';

const [baseURL, apiKey, scenario, conversation] = process.argv.slice(2);
if (!baseURL || !apiKey || !scenario) {
  console.error('usage: node harness.mjs <base-url> <api-key> <scenario> [conversation-id]');
  process.exit(2);
}

// PROMPT is the user's message; the Go test scripts the mock on "weather in Paris".
const PROMPT = 'What is the weather in Paris? Use get_weather.';

const TOOLS = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'The city name.' } },
      required: ['city'],
    },
  },
}];

// getWeather is the client's own function: what the tool message carries.
function getWeather(args) {
  const { city } = JSON.parse(args);
  return JSON.stringify({ city, forecast: 'sunny', celsius: 21 });
}

const client = new OpenAI({
  baseURL,
  apiKey,
  maxRetries: 0,
  timeout: 120_000,
  defaultHeaders: conversation ? { 'X-Conversation-ID': conversation } : {},
});

// complete runs one request, streamed through the library's accumulator or
// not, and returns the completion and how many chunks carried tool calls.
async function complete(params, streamed) {
  if (!streamed) {
    return { completion: await client.chat.completions.create(params), toolCallChunks: 0 };
  }
  let toolCallChunks = 0;
  const stream = client.chat.completions.stream({ ...params, stream_options: { include_usage: true } });
  stream.on('chunk', (chunk) => {
    if (chunk.choices.some((c) => (c.delta?.tool_calls ?? []).length > 0)) {
      toolCallChunks++;
    }
  });
  return { completion: await stream.finalChatCompletion(), toolCallChunks };
}

function summarize({ completion, toolCallChunks }) {
  const choice = completion.choices[0];
  return {
    finish_reason: choice.finish_reason,
    content: choice.message.content ?? '',
    tool_calls: (choice.message.tool_calls ?? []).map((c) => ({
      id: c.id, type: c.type, name: c.function?.name, arguments: c.function?.arguments,
    })),
    tool_call_chunks: toolCallChunks,
  };
}

async function roundTrip(streamed) {
  const messages = [{ role: 'user', content: PROMPT }];
  const first = await complete({ model: 'agent', messages, tools: TOOLS }, streamed);
  const summary = { scenario, prompt: PROMPT, first: summarize(first) };
  const message = first.completion.choices[0].message;
  const calls = message.tool_calls ?? [];
  if (calls.length === 0) {
    return summary; // the Go test reports the missing call
  }
  const results = calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: getWeather(c.function.arguments) }));
  summary.tool_result = results[0].content;
  messages.push({ role: 'assistant', content: message.content ?? null, tool_calls: calls }, ...results);
  const final = await complete({ model: 'agent', messages, tools: TOOLS }, streamed);
  const { finish_reason, content } = summarize(final);
  summary.final = { finish_reason, content };
  return summary;
}

async function toolChoiceNone() {
  const messages = [{ role: 'user', content: PROMPT }];
  const first = await complete({ model: 'agent', messages, tools: TOOLS, tool_choice: 'none' }, true);
  return { scenario, prompt: PROMPT, first: summarize(first) };
}

// backoff lets the library retry a rate-limited request as it does by
// default, recording what it saw on the wire.
async function backoff() {
  const seen = [];
  const retrying = new OpenAI({
    baseURL, apiKey, maxRetries: 2, timeout: 30_000,
    fetch: async (url, init) => {
      const resp = await fetch(url, init);
      seen.push({ status: resp.status, at: performance.now() });
      return resp;
    },
  });
  await retrying.models.list();
  await retrying.models.list();
  const refused = seen.findIndex((s) => s.status === 429);
  const waited = refused >= 0 && refused + 1 < seen.length ? seen[refused + 1].at - seen[refused].at : 0;
  return { scenario, statuses: seen.map((s) => s.status), waited_ms: Math.round(waited) };
}

const scenarios = {
  backoff,
  'roundtrip-stream': () => roundTrip(true),
  roundtrip: () => roundTrip(false),
  'tool-choice-none': toolChoiceNone,
};

if (!scenarios[scenario]) {
  console.error(`unknown scenario ${JSON.stringify(scenario)}; one of ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await scenarios[scenario]()));
} catch (err) {
  console.error(err?.stack ?? String(err));
  if (err?.status) {
    console.error(`status ${err.status}: ${JSON.stringify(err.error ?? null)}`);
  }
  process.exit(1);
}
