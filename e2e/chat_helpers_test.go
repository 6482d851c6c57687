package e2e

// Helpers shared by the tests of branches, LibreChat's header pattern,
// attachments and client function tools: reading back what the model was
// sent (through the mock's recording), tagging messages so a context can be
// compared as a sequence, and the client tool round trip that both openai-go
// and openai-node drive.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// clientToolPrefix is how the model sees a client's function: the agent
// serves the client's tools from an MCP server named "client", so the CLI
// offers get_weather to the model as mcp__client__get_weather. The one
// place the tests spell it.
const clientToolPrefix = "mcp__client__"

// --- What the model was sent -------------------------------------------

// fromCLI tells a request of an agent's claude CLI from the gateway's own
// one-shot calls (titles and other tasks).
func fromCLI(r anthropictest.RecordedRequest) bool {
	return strings.Contains(r.Header.Get("User-Agent"), "claude-cli")
}

// cliRequests returns the Messages API requests the agents' CLI sent since
// the mock's last reset, in order.
func (e *env) cliRequests(t *testing.T) []anthropictest.RecordedRequest {
	t.Helper()
	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	var out []anthropictest.RecordedRequest
	for _, r := range reqs {
		if fromCLI(r) && strings.HasPrefix(r.Path, "/v1/messages") && !strings.Contains(r.Path, "count_tokens") {
			out = append(out, r)
		}
	}
	return out
}

// lastCLIRequest is the latest model request of an agent: the context the
// model answered the turn from.
func (e *env) lastCLIRequest(t *testing.T) anthropictest.RecordedRequest {
	t.Helper()
	reqs := e.cliRequests(t)
	require.NotEmpty(t, reqs, "no agent called the model")
	return reqs[len(reqs)-1]
}

// agentCount counts the containers of a gateway's agents.
func (e *env) agentCount(t *testing.T, g *gateway) int {
	t.Helper()
	return len(e.containers(t, g.runID))
}

// resetRequests forgets the mock's recorded requests (and its steps' use
// counts), keeping the script.
func (e *env) resetRequests(t *testing.T) {
	t.Helper()
	require.NoError(t, e.mock.Reset(context.Background()))
}

func messagesOf(t *testing.T, r anthropictest.RecordedRequest) []anthropictest.Message {
	t.Helper()
	msgs, err := r.Messages()
	require.NoError(t, err)
	return msgs
}

// toolNames lists the tools a model request offers.
func toolNames(t *testing.T, r anthropictest.RecordedRequest) []string {
	t.Helper()
	var body struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &body))
	names := make([]string, 0, len(body.Tools))
	for _, tool := range body.Tools {
		names = append(names, tool.Name)
	}
	return names
}

// toolResults maps the tool_use ids answered by the request's last user
// message to the results' text.
func toolResults(t *testing.T, r anthropictest.RecordedRequest) map[string]string {
	t.Helper()
	msgs := messagesOf(t, r)
	require.NotEmpty(t, msgs)
	out := map[string]string{}
	for _, b := range msgs[len(msgs)-1].Blocks() {
		if b.Type == "tool_result" {
			out[b.ToolUseID] = b.ResultText()
		}
	}
	return out
}

// imageBlock is an Anthropic image content block.
type imageBlock struct {
	Type   string `json:"type"`
	Source struct {
		Type      string `json:"type"`
		MediaType string `json:"media_type"`
		Data      string `json:"data"`
	} `json:"source"`
}

// lastUserImages returns the image blocks of the request's last user
// message.
func lastUserImages(t *testing.T, r anthropictest.RecordedRequest) []imageBlock {
	t.Helper()
	msgs := messagesOf(t, r)
	var last anthropictest.Message
	for _, m := range msgs {
		if m.Role == "user" {
			last = m
		}
	}
	var blocks []json.RawMessage
	if json.Unmarshal(last.Content, &blocks) != nil {
		return nil // string content: no images
	}
	var out []imageBlock
	for _, raw := range blocks {
		var b imageBlock
		if json.Unmarshal(raw, &b) == nil && b.Type == "image" {
			out = append(out, b)
		}
	}
	return out
}

// --- Tagged messages ----------------------------------------------------

// mark wraps a tag into a marker. Every message of a test conversation
// carries one, so what the model was sent reads back as a sequence of tags.
func mark(tag string) string { return "<<" + tag + ">>" }

var markerRE = regexp.MustCompile(`<<([A-Za-z0-9-]+)>>`)

// markedContext returns "role:tag" for every marker in the request's
// messages, in order: the conversation as the model sees it. A history
// seeded into one prompt reads as user markers only, so it cannot pass for
// the turns themselves.
func markedContext(t *testing.T, r anthropictest.RecordedRequest) []string {
	t.Helper()
	var out []string
	for _, m := range messagesOf(t, r) {
		for _, found := range markerRE.FindAllStringSubmatch(m.Text(), -1) {
			out = append(out, m.Role+":"+found[1])
		}
	}
	return out
}

// --- Gateway responses --------------------------------------------------

// chatRequest is a streamed "agent" request with these messages.
func chatRequest(msgs []openai.ChatCompletionMessageParamUnion) openai.ChatCompletionNewParams {
	p := user("")
	p.Messages = msgs
	return p
}

// sessionInto records the response's X-Session-ID header (the session that
// served the request) in *id.
func sessionInto(id *string) option.RequestOption {
	return option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		resp, err := next(r)
		if err == nil {
			*id = resp.Header.Get("X-Session-ID")
		}
		return resp, err
	})
}

// apiError requires err to be an OpenAI-shaped error and returns it.
func apiError(t *testing.T, err error) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	return apiErr
}

// sessionTurns is one entry of the admin endpoint's session list.
type sessionTurns struct {
	// ID is the session id.
	ID string `json:"id"`
	// Conversation is the client's conversation id.
	Conversation string `json:"conversation"`
	// Turns counts the session's finished turns.
	Turns int64 `json:"turns"`
}

// sessionTurns lists the gateway's sessions with their turn counts, on
// Caddy's admin endpoint.
func (g *gateway) sessionTurns(t *testing.T) []sessionTurns {
	t.Helper()
	resp, err := http.Get(g.admin + "/agcluster/sessions")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out []sessionTurns
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

// workspaceFile reads a file of a session's workspace through the agent
// management API.
func (g *gateway) workspaceFile(t *testing.T, key, sessionID, path string) reply {
	t.Helper()
	return api{t: t, g: g, key: key}.do(http.MethodGet, "/api/agents/sessions/"+sessionID+"/files/"+path, nil, "")
}

// --- Images -------------------------------------------------------------

// pngImage encodes a w x h PNG without compression, so its size is about
// 4*w*h bytes whatever the pixels.
func pngImage(t *testing.T, w, h int, c color.NRGBA) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	require.NoError(t, (&png.Encoder{CompressionLevel: png.NoCompression}).Encode(&buf, img))
	return buf.Bytes()
}

// dataURL is data as a base64 data: URL.
func dataURL(mediaType string, data []byte) string {
	return "data:" + mediaType + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// --- Client function tools ----------------------------------------------

const (
	// weatherPrompt asks for the client's function; the harness in
	// testdata/openai-node sends the same text.
	weatherPrompt = "What is the weather in Paris? Use get_weather."
	// weatherToolUseID is the id of the model's call, so its result can be
	// found in the model's next request.
	weatherToolUseID = "toolu_01ClientWeatherParis"
	// weatherAnswer is the model's text once it has the result.
	weatherAnswer = "It is sunny in Paris, 21 degrees."
)

// weatherTool is the client's function, as openai-go declares it.
func weatherTool() openai.ChatCompletionToolUnionParam {
	return openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
		Name:        "get_weather",
		Description: openai.String("The current weather in a city."),
		Parameters: openai.FunctionParameters{
			"type":       "object",
			"properties": map[string]any{"city": map[string]any{"type": "string", "description": "The city name."}},
			"required":   []string{"city"},
		},
	})
}

// weatherResult is what the client's function returns.
func weatherResult(t *testing.T, arguments string) string {
	t.Helper()
	var args struct {
		City string `json:"city"`
	}
	require.NoError(t, json.Unmarshal([]byte(arguments), &args), arguments)
	b, err := json.Marshal(map[string]any{"city": args.City, "forecast": "sunny", "celsius": 21})
	require.NoError(t, err)
	return string(b)
}

// weatherCall is the model calling the client's get_weather for Paris.
func weatherCall() anthropictest.Block {
	b := anthropictest.ToolUse(clientToolPrefix+"get_weather", map[string]string{"city": "Paris"})
	b.ID = weatherToolUseID
	return b
}

// weatherScript makes the model call get_weather for the weather prompt and
// answer with weatherAnswer once the result is in.
func weatherScript() anthropictest.Script {
	return anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "weather in Paris", HasToolResult: ptr(false)},
		Response: anthropictest.Response{Blocks: []anthropictest.Block{weatherCall()}},
	}, {
		Match:    anthropictest.Match{HasToolResult: ptr(true)},
		Response: anthropictest.Response{Text: weatherAnswer, ChunkChars: 6},
	}}}
}

// toolRoundTrip is what a client saw of a function tool round trip; the
// openai-node harness prints it as JSON.
type toolRoundTrip struct {
	// Prompt is the user's message.
	Prompt string `json:"prompt"`
	// First is the answer to the prompt: the call.
	First completionSummary `json:"first"`
	// ToolResult is the content of the tool message sent back.
	ToolResult string `json:"tool_result"`
	// Final is the answer after the result.
	Final completionSummary `json:"final"`
}

// completionSummary is one completion as a client received it.
type completionSummary struct {
	// FinishReason is the choice's finish_reason.
	FinishReason string `json:"finish_reason"`
	// Content is the message's content.
	Content string `json:"content"`
	// ToolCalls are the message's tool calls.
	ToolCalls []toolCallSummary `json:"tool_calls"`
	// ToolCallChunks counts the streamed chunks whose delta carried
	// tool_calls (0 when not streamed).
	ToolCallChunks int `json:"tool_call_chunks"`
}

// toolCallSummary is one tool call of a message.
type toolCallSummary struct {
	// ID is the call's id.
	ID string `json:"id"`
	// Type is "function".
	Type string `json:"type"`
	// Name is the function's name.
	Name string `json:"name"`
	// Arguments is the JSON arguments as text.
	Arguments string `json:"arguments"`
}

// completeChat runs one completion, streamed or not, and summarizes it.
func completeChat(t *testing.T, c openai.Client, params openai.ChatCompletionNewParams, stream bool, opts ...option.RequestOption) (openai.ChatCompletion, completionSummary) {
	t.Helper()
	var got openai.ChatCompletion
	chunks := 0
	if stream {
		s := c.Chat.Completions.NewStreaming(ctxFor(t, 2*time.Minute), params, opts...)
		acc := openai.ChatCompletionAccumulator{}
		for s.Next() {
			chunk := s.Current()
			acc.AddChunk(chunk)
			if len(chunk.Choices) > 0 && len(chunk.Choices[0].Delta.ToolCalls) > 0 {
				chunks++
			}
		}
		require.NoError(t, s.Err())
		got = acc.ChatCompletion
	} else {
		resp, err := c.Chat.Completions.New(ctxFor(t, 2*time.Minute), params, opts...)
		require.NoError(t, err)
		got = *resp
	}
	require.Len(t, got.Choices, 1)
	msg := got.Choices[0].Message
	sum := completionSummary{FinishReason: got.Choices[0].FinishReason, Content: msg.Content, ToolCallChunks: chunks}
	for _, tc := range msg.ToolCalls {
		sum.ToolCalls = append(sum.ToolCalls, toolCallSummary{ID: tc.ID, Type: tc.Type, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
	}
	return got, sum
}

// weatherParams is a request offering get_weather.
func weatherParams(msgs ...openai.ChatCompletionMessageParamUnion) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    "agent",
		Messages: msgs,
		Tools:    []openai.ChatCompletionToolUnionParam{weatherTool()},
	}
}

// goToolRoundTrip drives the round trip with openai-go: the prompt, the
// call, the function's result in a tool message, the answer.
func goToolRoundTrip(t *testing.T, c openai.Client, stream bool, opts ...option.RequestOption) toolRoundTrip {
	t.Helper()
	return goToolRoundTripVia(t, c, c, stream, opts...)
}

// goToolRoundTripVia is goToolRoundTrip with the prompt sent through c
// and the tool result through then (another gateway, say).
func goToolRoundTripVia(t *testing.T, c, then openai.Client, stream bool, opts ...option.RequestOption) toolRoundTrip {
	t.Helper()
	params := weatherParams(openai.UserMessage(weatherPrompt))
	first, sum := completeChat(t, c, params, stream, opts...)
	rt := toolRoundTrip{Prompt: weatherPrompt, First: sum}
	msg := first.Choices[0].Message
	if len(msg.ToolCalls) == 0 {
		return rt // assertToolRoundTrip reports it
	}
	call := msg.ToolCalls[0]
	rt.ToolResult = weatherResult(t, call.Function.Arguments)
	params.Messages = append(params.Messages, msg.ToParam(), openai.ToolMessage(rt.ToolResult, call.ID))
	_, rt.Final = completeChat(t, then, params, stream, opts...)
	return rt
}

// assertToolRoundTrip checks a round trip against weatherScript: the call
// reached the client in OpenAI's shape (streamed as delta.tool_calls), its
// result reached the model in the same agent turn, and the turn ended with
// the model's text.
func assertToolRoundTrip(t *testing.T, e *env, rt toolRoundTrip, stream bool) {
	t.Helper()
	require.Equal(t, "tool_calls", rt.First.FinishReason, "%+v", rt)
	require.Len(t, rt.First.ToolCalls, 1, "%+v", rt)
	call := rt.First.ToolCalls[0]
	assert.NotEmpty(t, call.ID)
	assert.Equal(t, "function", call.Type)
	assert.Equal(t, "get_weather", call.Name, "the client's own name, not the MCP one")
	assert.JSONEq(t, `{"city":"Paris"}`, call.Arguments)
	if stream {
		assert.Positive(t, rt.First.ToolCallChunks, "the call was streamed as delta.tool_calls")
	}
	assert.Equal(t, "stop", rt.Final.FinishReason, "%+v", rt)
	assert.True(t, strings.HasSuffix(strings.TrimSpace(rt.Final.Content), weatherAnswer), "the turn ends with the model's text: %q", rt.Final.Content)

	reqs := e.cliRequests(t)
	require.Len(t, reqs, 2, "one model call for the prompt, one with the result")
	assert.Contains(t, toolNames(t, reqs[0]), clientToolPrefix+"get_weather", "the model was offered the client's function")
	results := toolResults(t, reqs[1])
	require.Contains(t, results, weatherToolUseID, "the model's next request answers its call")
	assert.Contains(t, results[weatherToolUseID], rt.ToolResult, "with the client's content")
	assert.Len(t, messagesOf(t, reqs[1]), len(messagesOf(t, reqs[0]))+2,
		"the same turn went on: the call and its result follow the prompt, no new user message")
}

// assertNoClientTools checks a tool_choice "none" answer: text, no calls,
// and the model was not offered the client's function.
func assertNoClientTools(t *testing.T, e *env, sum completionSummary, text string) {
	t.Helper()
	assert.Equal(t, "stop", sum.FinishReason)
	assert.Empty(t, sum.ToolCalls)
	assert.Contains(t, sum.Content, text)
	reqs := e.cliRequests(t)
	require.Len(t, reqs, 1)
	for _, name := range toolNames(t, reqs[0]) {
		assert.False(t, strings.HasPrefix(name, clientToolPrefix), "tool_choice none offers no client tool, got %s", name)
	}
}

// metrics is the gateway's Prometheus exposition.
func (g *gateway) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(g.admin + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}
