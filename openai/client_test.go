package openai_test

// These tests put the package's output in front of the real openai-go
// client, the strictest of the clients the gateway serves.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	gw "github.com/agcluster/caddy-agcluster/openai"
)

// fakeGateway serves /v1/chat/completions and /v1/models the way the
// gateway handler does, replaying a fixed agent event sequence.
type fakeGateway struct {
	events   []agent.Event
	fail     string    // if set, Fail with it after the events
	errResp  *gw.Error // if set, answer with this error
	requests atomic.Int32
	lastReq  atomic.Pointer[gw.ChatCompletionRequest]
}

func (f *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	switch r.URL.Path {
	case "/v1/models":
		gw.WriteModels(w, []gw.Model{{ID: "agent", Created: 1700000000, OwnedBy: "agcluster"}})
		return
	case "/v1/chat/completions":
	default:
		http.NotFound(w, r)
		return
	}
	if f.errResp != nil {
		f.errResp.Write(w)
		return
	}
	req, e := gw.ParseChatCompletionRequest(r.Body, 1<<20)
	if e != nil {
		e.Write(w)
		return
	}
	f.lastReq.Store(req)
	opts := gw.Options{Model: req.Model, IncludeUsage: req.IncludeUsage(), Reasoning: true, Tools: gw.ToolsSummary}
	if !req.Stream {
		c := gw.NewCollector(opts)
		for _, ev := range f.events {
			c.Event(ev)
		}
		if ev := c.Err(); ev != nil && !c.HasOutput() {
			gw.FromAgentError(*ev).Write(w)
			return
		}
		gw.WriteCompletion(w, c.Completion())
		return
	}
	gw.SetStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	s := gw.NewStreamWriter(w, rc.Flush, opts)
	if s.Start() != nil || s.KeepAlive() != nil {
		return
	}
	for _, ev := range f.events {
		if s.Event(ev) != nil {
			return
		}
	}
	if f.fail != "" {
		_ = s.Fail(f.fail)
	}
	_ = s.Finish()
}

func newClient(t *testing.T, f *fakeGateway) openai.Client {
	t.Helper()
	srv := httptest.NewServer(f) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	return openai.NewClient(option.WithBaseURL(srv.URL+"/v1"), option.WithAPIKey("k"))
}

var turn = []agent.Event{
	{Type: agent.EventThinkingDelta, Text: "The user says hi."},
	{Type: agent.EventThinking, Text: "The user says hi."},
	{Type: agent.EventTextDelta, Text: "Let me "},
	{Type: agent.EventTextDelta, Text: "check."},
	{Type: agent.EventText, Text: "Let me check."},
	{Type: agent.EventToolUse, ToolUseID: "t1", Name: "Bash", Input: json.RawMessage(`{"command":"ls"}`)},
	{Type: agent.EventToolResult, ToolUseID: "t1", Output: "README.md"},
	{Type: agent.EventNotice, Code: agent.CodeAPIRetry, Message: "retry 1"},
	{Type: agent.EventTextDelta, Text: "Hi! \"Quotes\" <b>&</b> ünï 🔧\n"},
	{Type: agent.EventText, Text: "Hi! \"Quotes\" <b>&</b> ünï 🔧\n"},
	{Type: agent.EventResult, Result: &agent.Result{StopReason: "end_turn",
		Usage: agent.Usage{InputTokens: 100, OutputTokens: 20, CacheReadInputTokens: 50, CacheCreationInputTokens: 5}}},
}

const turnContent = "Let me check.\n\n> 🔧 **Bash** `ls`\n\nHi! \"Quotes\" <b>&</b> ünï 🔧\n"

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func streamingParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:         "agent",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		User:          openai.String("u-1"),
		Temperature:   openai.Float(0.2),
	}
}

func TestOpenAIGoStreaming(t *testing.T) {
	f := &fakeGateway{events: turn}
	client := newClient(t, f)

	stream := client.Chat.Completions.NewStreaming(ctx(t), streamingParams())
	acc := openai.ChatCompletionAccumulator{}
	ids := map[string]bool{}
	reasoning := ""
	n := 0
	for stream.Next() {
		chunk := stream.Current()
		require.True(t, acc.AddChunk(chunk), "chunk %d rejected: %s", n, chunk.RawJSON())
		ids[chunk.ID] = true
		if len(chunk.Choices) > 0 {
			if rc, ok := chunk.Choices[0].Delta.JSON.ExtraFields["reasoning_content"]; ok {
				var s string
				require.NoError(t, json.Unmarshal([]byte(rc.Raw()), &s))
				reasoning += s
			}
		}
		n++
	}
	require.NoError(t, stream.Err())
	require.NoError(t, stream.Close())

	req := f.lastReq.Load()
	require.NotNil(t, req, "openai-go's request passed validation")
	assert.True(t, req.IncludeUsage())
	assert.Equal(t, "Be brief.", req.SystemText())
	assert.Equal(t, "hi", req.LastUserText())

	assert.Len(t, ids, 1)
	assert.Equal(t, "agent", acc.Model)
	require.Len(t, acc.Choices, 1)
	assert.Equal(t, turnContent, acc.Choices[0].Message.Content)
	assert.Equal(t, "assistant", string(acc.Choices[0].Message.Role))
	assert.Equal(t, "stop", acc.Choices[0].FinishReason)
	assert.Equal(t, "The user says hi.", reasoning)
	assert.Equal(t, int64(155), acc.Usage.PromptTokens)
	assert.Equal(t, int64(20), acc.Usage.CompletionTokens)
	assert.Equal(t, int64(175), acc.Usage.TotalTokens)
	assert.Equal(t, int64(50), acc.Usage.PromptTokensDetails.CachedTokens)
}

func TestOpenAIGoStreamingFailure(t *testing.T) {
	for name, f := range map[string]*fakeGateway{
		"Fail": {events: turn[2:4], fail: "agent connection lost"},
		"error event": {events: append(append([]agent.Event{}, turn[2:4]...),
			agent.Event{Type: agent.EventError, Code: agent.CodeUpstream, Message: "agent connection lost"})},
	} {
		t.Run(name, func(t *testing.T) {
			client := newClient(t, f)
			stream := client.Chat.Completions.NewStreaming(ctx(t), streamingParams())
			acc := openai.ChatCompletionAccumulator{}
			for stream.Next() {
				require.True(t, acc.AddChunk(stream.Current()))
			}
			require.NoError(t, stream.Err(), "the stream ends normally")
			require.Len(t, acc.Choices, 1)
			assert.Equal(t, "Let me check.\n\n[error: agent connection lost]", acc.Choices[0].Message.Content)
			assert.Equal(t, "stop", acc.Choices[0].FinishReason)
			assert.Equal(t, int64(0), acc.Usage.TotalTokens)
		})
	}
}

func TestOpenAIGoNonStreaming(t *testing.T) {
	f := &fakeGateway{events: turn}
	client := newClient(t, f)
	params := streamingParams()
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	res, err := client.Chat.Completions.New(ctx(t), params)
	require.NoError(t, err)
	assert.Contains(t, res.ID, "chatcmpl-")
	assert.Equal(t, "chat.completion", string(res.Object))
	assert.Equal(t, "agent", res.Model)
	require.Len(t, res.Choices, 1)
	assert.Equal(t, turnContent, res.Choices[0].Message.Content)
	assert.Equal(t, "stop", res.Choices[0].FinishReason)
	assert.Equal(t, `"The user says hi."`, res.Choices[0].Message.JSON.ExtraFields["reasoning_content"].Raw())
	assert.Equal(t, int64(175), res.Usage.TotalTokens)
	assert.False(t, f.lastReq.Load().Stream)
}

func TestOpenAIGoModels(t *testing.T) {
	client := newClient(t, &fakeGateway{})
	page, err := client.Models.List(ctx(t))
	require.NoError(t, err)
	require.Len(t, page.Data, 1)
	assert.Equal(t, "agent", page.Data[0].ID)
	assert.Equal(t, "agcluster", page.Data[0].OwnedBy)
	assert.Equal(t, int64(1700000000), page.Data[0].Created)
}

func TestOpenAIGoErrors(t *testing.T) {
	t.Run("busy is not retried", func(t *testing.T) {
		f := &fakeGateway{errResp: gw.Busy("this conversation is already running a turn")}
		client := newClient(t, f)
		_, err := client.Chat.Completions.New(ctx(t), streamingParams())
		var apiErr *openai.Error
		require.True(t, errors.As(err, &apiErr), "%v", err)
		assert.Equal(t, http.StatusConflict, apiErr.StatusCode)
		assert.Equal(t, "conversation_busy", apiErr.Code)
		assert.Equal(t, "conflict_error", apiErr.Type)
		assert.Equal(t, "this conversation is already running a turn", apiErr.Message)
		assert.Equal(t, int32(1), f.requests.Load(), "x-should-retry: false stops the client's retries")
	})
	t.Run("busy while streaming is not retried", func(t *testing.T) {
		f := &fakeGateway{errResp: gw.Busy("busy")}
		client := newClient(t, f)
		stream := client.Chat.Completions.NewStreaming(ctx(t), streamingParams())
		assert.False(t, stream.Next())
		var apiErr *openai.Error
		require.True(t, errors.As(stream.Err(), &apiErr), "%v", stream.Err())
		assert.Equal(t, http.StatusConflict, apiErr.StatusCode)
		assert.Equal(t, int32(1), f.requests.Load())
	})
	t.Run("control: a 409 without the header is retried", func(t *testing.T) {
		f := &fakeGateway{errResp: &gw.Error{Status: http.StatusConflict, Message: "x", Type: "conflict_error"}}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After-Ms", "1")
			f.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1"), option.WithAPIKey("k"))
		_, err := client.Chat.Completions.New(ctx(t), streamingParams())
		require.Error(t, err)
		assert.Equal(t, int32(3), f.requests.Load())
	})
	t.Run("validation error names the param", func(t *testing.T) {
		f := &fakeGateway{}
		client := newClient(t, f)
		params := streamingParams()
		params.Messages = append(params.Messages, openai.AssistantMessage("hello"))
		_, err := client.Chat.Completions.New(ctx(t), params)
		var apiErr *openai.Error
		require.True(t, errors.As(err, &apiErr), "%v", err)
		assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		assert.Equal(t, "messages", apiErr.Param)
		assert.Equal(t, "invalid_request_error", apiErr.Type)
		assert.Equal(t, int32(1), f.requests.Load())
	})
	t.Run("agent error before output becomes an HTTP error", func(t *testing.T) {
		f := &fakeGateway{events: []agent.Event{{Type: agent.EventError, Code: agent.CodeAuth, Message: "invalid x-api-key"}}}
		client := newClient(t, f)
		_, err := client.Chat.Completions.New(ctx(t), streamingParams())
		var apiErr *openai.Error
		require.True(t, errors.As(err, &apiErr), "%v", err)
		assert.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
		assert.Equal(t, "invalid_api_key", apiErr.Code)
		assert.Equal(t, int32(1), f.requests.Load())
	})
}

// toolTurn ends its answer with two client function calls.
var toolTurn = []agent.Event{
	{Type: agent.EventTextDelta, Text: "Checking both."},
	{Type: agent.EventText, Text: "Checking both."},
	{Type: agent.EventClientToolCalls, Calls: []agent.ToolCall{
		{ID: "toolu_01", Name: "get_weather", Arguments: `{"city":"Oslo"}`},
		{ID: "toolu_02", Name: "get_weather", Arguments: `{"city":"Rome"}`},
	}, Result: &agent.Result{Usage: agent.Usage{InputTokens: 30, OutputTokens: 12}}},
}

var wantToolCalls = []gw.ToolCall{
	{ID: "toolu_01", Type: "function", Function: gw.FunctionCall{Name: "get_weather", Arguments: `{"city":"Oslo"}`}},
	{ID: "toolu_02", Type: "function", Function: gw.FunctionCall{Name: "get_weather", Arguments: `{"city":"Rome"}`}},
}

func toolParams() openai.ChatCompletionNewParams {
	p := streamingParams()
	p.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Oslo and Rome?")}
	p.Tools = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name:        "get_weather",
		Description: openai.String("The weather of a city."),
		Parameters: shared.FunctionParameters{"type": "object",
			"properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
	})}
	p.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
	p.ParallelToolCalls = openai.Bool(false)
	return p
}

// callsOf converts openai-go's tool calls to the package's.
func callsOf(t *testing.T, calls []openai.ChatCompletionMessageToolCallUnion) []gw.ToolCall {
	var out []gw.ToolCall
	for _, c := range calls {
		require.Equal(t, "function", c.Type)
		out = append(out, gw.ToolCall{ID: c.ID, Type: c.Type, Function: gw.FunctionCall{Name: c.Function.Name, Arguments: c.Function.Arguments}})
	}
	return out
}

// checkToolRequest checks what the gateway parsed of toolParams.
func checkToolRequest(t *testing.T, req *gw.ChatCompletionRequest) {
	t.Helper()
	require.NotNil(t, req)
	q := agent.QueryRequest{}
	req.ApplyTools(&q)
	require.Len(t, q.Tools, 1)
	assert.Equal(t, "get_weather", q.Tools[0].Name)
	assert.Equal(t, "The weather of a city.", q.Tools[0].Description)
	assert.JSONEq(t, `{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`, string(q.Tools[0].Parameters))
	assert.Equal(t, "required", q.ToolChoice)
	assert.True(t, q.OneToolAtATime)
}

func TestOpenAIGoStreamingToolCalls(t *testing.T) {
	f := &fakeGateway{events: toolTurn}
	client := newClient(t, f)
	stream := client.Chat.Completions.NewStreaming(ctx(t), toolParams())
	acc := openai.ChatCompletionAccumulator{}
	var finished []openai.FinishedChatCompletionToolCall
	for stream.Next() {
		chunk := stream.Current()
		require.True(t, acc.AddChunk(chunk), "chunk rejected: %s", chunk.RawJSON())
		if tc, ok := acc.JustFinishedToolCall(); ok {
			finished = append(finished, tc)
		}
	}
	require.NoError(t, stream.Err())
	checkToolRequest(t, f.lastReq.Load())

	require.Len(t, acc.Choices, 1)
	msg := acc.Choices[0].Message
	assert.Equal(t, "tool_calls", acc.Choices[0].FinishReason)
	assert.Equal(t, "Checking both.", msg.Content)
	assert.Equal(t, wantToolCalls, callsOf(t, msg.ToolCalls))
	require.Len(t, finished, 2, "the accumulator reports each call as finished")
	for i, tc := range finished {
		assert.Equal(t, i, tc.Index)
		assert.Equal(t, wantToolCalls[i].ID, tc.ID)
		assert.Equal(t, wantToolCalls[i].Function.Arguments, tc.Arguments)
	}
	assert.Equal(t, int64(42), acc.Usage.TotalTokens)

	// The client answers with the accumulated message and its results: the
	// gateway sees a request ending in tool results, whose assistant
	// message has the fingerprint of what the writer sent.
	params := toolParams()
	params.Messages = append(params.Messages, msg.ToParam(),
		openai.ToolMessage("snow", "toolu_01"), openai.ToolMessage("sun", "toolu_02"))
	f.events = turn
	back := client.Chat.Completions.NewStreaming(ctx(t), params)
	for back.Next() {
	}
	require.NoError(t, back.Err())
	req := f.lastReq.Load()
	tr := req.ToolResults()
	require.NotNil(t, tr)
	assert.Equal(t, wantToolCalls, tr.Calls)
	assert.Equal(t, []agent.ToolResult{{ID: "toolu_01", Content: "snow"}, {ID: "toolu_02", Content: "sun"}}, tr.Results)
	sent := append([]gw.Message{{Role: "user", Content: gw.TextContent("Weather in Oslo and Rome?")}},
		gw.AssistantMessage("Checking both.", wantToolCalls))
	assert.Equal(t, gw.Fingerprint(sent), gw.PrefixFingerprints(req.Messages)[tr.Assistant+1])
}

func TestOpenAIGoNonStreamingToolCalls(t *testing.T) {
	for name, events := range map[string][]agent.Event{
		"with text":    toolTurn,
		"without text": toolTurn[2:],
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeGateway{events: events}
			client := newClient(t, f)
			params := toolParams()
			params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
			res, err := client.Chat.Completions.New(ctx(t), params)
			require.NoError(t, err)
			checkToolRequest(t, f.lastReq.Load())
			require.Len(t, res.Choices, 1)
			assert.Equal(t, "tool_calls", res.Choices[0].FinishReason)
			assert.Equal(t, wantToolCalls, callsOf(t, res.Choices[0].Message.ToolCalls))
			if len(events) == 1 {
				assert.Equal(t, "null", res.Choices[0].Message.JSON.Content.Raw())
				assert.Equal(t, "", res.Choices[0].Message.Content)
			} else {
				assert.Equal(t, "Checking both.", res.Choices[0].Message.Content)
			}
			assert.Equal(t, int64(42), res.Usage.TotalTokens)
		})
	}
}

func TestOpenAIGoAttachments(t *testing.T) {
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89")
	pdf := []byte("%PDF-1.4\n%%EOF\n")
	f := &fakeGateway{events: turn}
	client := newClient(t, f)
	params := streamingParams()
	params.Messages = []openai.ChatCompletionMessageParamUnion{
		openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
			openai.TextContentPart("What is in these?"),
			openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{
				URL: "data:image/png;base64," + base64.StdEncoding.EncodeToString(png), Detail: "high"}),
			openai.FileContentPart(openai.ChatCompletionContentPartFileFileParam{
				FileData: openai.String("data:application/pdf;base64," + base64.StdEncoding.EncodeToString(pdf)),
				Filename: openai.String("report.pdf")}),
		}),
	}
	_, err := client.Chat.Completions.New(ctx(t), params)
	require.NoError(t, err)
	req := f.lastReq.Load()
	require.NotNil(t, req)
	assert.Equal(t, "What is in these?", req.LastUserText())
	assert.Equal(t, "What is in these?\n[image]\n[file: report.pdf]", req.Messages[0].Content.Text())
	a := req.Attachments()
	assert.Equal(t, []agent.Image{{MediaType: "image/png", Data: base64.StdEncoding.EncodeToString(png)}}, a.AgentImages())
	require.Len(t, a.Files, 1)
	assert.Equal(t, "report.pdf", a.Files[0].Filename)
	assert.Equal(t, "application/pdf", a.Files[0].MediaType)
	b, err := a.Files[0].Bytes()
	require.NoError(t, err)
	assert.Equal(t, pdf, b)

	t.Run("file_id is refused", func(t *testing.T) {
		params.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
			openai.FileContentPart(openai.ChatCompletionContentPartFileFileParam{FileID: openai.String("file-123")})})}
		_, err := client.Chat.Completions.New(ctx(t), params)
		var apiErr *openai.Error
		require.True(t, errors.As(err, &apiErr), "%v", err)
		assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		assert.Equal(t, "messages[0].content[0].file.file_id", apiErr.Param)
	})
	t.Run("an image URL is refused", func(t *testing.T) {
		params.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
			openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "https://example.test/cat.png"})})}
		_, err := client.Chat.Completions.New(ctx(t), params)
		var apiErr *openai.Error
		require.True(t, errors.As(err, &apiErr), "%v", err)
		assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		assert.Equal(t, "messages[0].content[0].image_url.url", apiErr.Param)
	})
}
