package openai_test

// These tests put the package's output in front of the real openai-go
// client, the strictest of the clients the gateway serves.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
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
