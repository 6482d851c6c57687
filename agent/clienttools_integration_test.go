package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// The client's own functions the tests offer.
var (
	weatherTool = agent.ClientTool{Name: "get_weather", Description: "The weather in a city.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}
	timeTool = agent.ClientTool{Name: "get_time", Description: "The time in a city.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)}
)

// clientCall is a scripted tool_use block calling the client function name
// (as the model sees it).
func clientCall(name string, input any) anthropictest.Block {
	return anthropictest.ToolUse("mcp__client__"+name, input)
}

// readStream reads a stream to its end and returns its events.
func (s *stack) readStream(t *testing.T, st *agentclient.Stream) []agent.Event {
	t.Helper()
	defer st.Close()
	var events []agent.Event
	for {
		e, err := st.Next()
		if errors.Is(err, io.EOF) {
			return events
		}
		if err != nil {
			reqs, _ := s.mock.Requests(context.Background())
			t.Fatalf("stream: %v\nevents so far: %+v\nrequests:%s\nagent logs:\n%s", err, events, summarizeRequests(reqs), s.logs())
		}
		events = append(events, e)
	}
}

// toolResults runs POST /tool_results and returns the events of its stream.
func (s *stack) toolResults(t *testing.T, results ...agent.ToolResult) []agent.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := s.agent.ToolResults(ctx, agent.ToolResultsRequest{Results: results, APIKey: "sk-ant-test"})
	require.NoError(t, err)
	return s.readStream(t, st)
}

// calls returns the calls of the stream's final client_tool_calls event,
// failing the test when the stream ended otherwise.
func calls(t *testing.T, events []agent.Event) []agent.ToolCall {
	t.Helper()
	last := lastEvent(events)
	require.Equal(t, agent.EventClientToolCalls, last.Type, "the stream ends with the client's calls: %+v", events)
	for _, e := range events {
		assert.NotEqual(t, agent.EventToolUse, e.Type, "a client call is no tool_use event: %+v", e)
	}
	return last.Calls
}

// toolResultBlocks returns the tool_result blocks of the last user message
// of an API request.
func toolResultBlocks(t *testing.T, req anthropictest.RecordedRequest) map[string]anthropictest.ContentBlock {
	t.Helper()
	msgs, err := req.Messages()
	require.NoError(t, err)
	out := map[string]anthropictest.ContentBlock{}
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role != "user" {
			continue
		}
		for _, b := range msgs[i].Blocks() {
			if b.Type == "tool_result" {
				out[b.ToolUseID] = b
			}
		}
		return out
	}
	return out
}

// apiToolNames are the names of the tools an API request offered.
func apiToolNames(t *testing.T, req anthropictest.RecordedRequest) []string {
	t.Helper()
	var body struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	require.NoError(t, json.Unmarshal(req.Body, &body))
	names := make([]string, len(body.Tools))
	for i, tl := range body.Tools {
		names[i] = tl.Name
	}
	return names
}

// requests returns what the mock received so far.
func (s *stack) requests(t *testing.T) []anthropictest.RecordedRequest {
	t.Helper()
	reqs, err := s.mock.Requests(context.Background())
	require.NoError(t, err)
	return reqs
}

// busy reads /health's busy flag.
func (s *stack) busy(t *testing.T) bool {
	t.Helper()
	h, _, err := s.agent.Health(context.Background())
	require.NoError(t, err)
	return h.Busy
}

// waitIdle waits until no turn holds the agent's CLI.
func (s *stack) waitIdle(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() bool {
		h, _, err := s.agent.Health(context.Background())
		return err == nil && !h.Busy
	}, "the agent stayed busy; logs:\n%s", s.logs())
}

// TestAgentClientTools: the client's own functions (QueryRequest.Tools) are
// called by the model through the real CLI; the turn waits for POST
// /tool_results and goes on in its stream.
func TestAgentClientTools(t *testing.T) {
	testenv.Integration(t)
	s := startProcessStack(t)

	t.Run("round trip: the call ends the stream and its result continues the turn", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "weather in Paris", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{
				{Type: anthropictest.BlockText, Text: "Let me check."},
				clientCall("get_weather", map[string]string{"city": "Paris"}),
			}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "It is sunny in Paris."},
		}}})
		first := s.query(t, agent.QueryRequest{Prompt: "What is the weather in Paris?", Tools: []agent.ClientTool{weatherTool}})
		cs := calls(t, first)
		require.Len(t, cs, 1)
		assert.Equal(t, "get_weather", cs[0].Name)
		assert.JSONEq(t, `{"city":"Paris"}`, cs[0].Arguments)
		assert.NotEmpty(t, cs[0].ID)
		var text strings.Builder
		for _, e := range first {
			if e.Type == agent.EventTextDelta {
				text.WriteString(e.Text)
			}
		}
		assert.Equal(t, "Let me check.", text.String(), "the text before the call streams as usual")
		assert.True(t, s.busy(t), "the waiting turn holds the CLI")

		rest := s.toolResults(t, agent.ToolResult{ID: cs[0].ID, Content: "sunny, 21C"})
		last := lastEvent(rest)
		require.Equal(t, agent.EventResult, last.Type, "%+v", rest)
		assert.Equal(t, "It is sunny in Paris.", last.Result.Text)
		assert.Equal(t, lastEvent(first).Seq+1, rest[0].Seq, "the continuation numbers on")
		for _, e := range rest {
			assert.NotEqual(t, agent.EventToolResult, e.Type, "the client's result is not echoed: %+v", e)
		}

		reqs := s.requests(t)
		require.Len(t, reqs, 2, summarizeRequests(reqs))
		assert.Contains(t, apiToolNames(t, reqs[0]), "mcp__client__get_weather", "the model is offered the function")
		res := toolResultBlocks(t, reqs[1])
		require.Contains(t, res, cs[0].ID)
		assert.Equal(t, "sunny, 21C", res[cs[0].ID].ResultText())
		assert.False(t, res[cs[0].ID].IsError)
		s.waitIdle(t)
	})

	t.Run("two parallel calls are answered in one POST", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "both", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{
				clientCall("get_weather", map[string]string{"city": "Paris"}),
				clientCall("get_time", map[string]string{"city": "Oslo"}),
			}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "Sunny, and the clock is broken."},
		}}})
		cs := calls(t, s.query(t, agent.QueryRequest{Prompt: "Weather and time, both please.",
			Tools: []agent.ClientTool{weatherTool, timeTool}}))
		require.Len(t, cs, 2)
		assert.Equal(t, []string{"get_weather", "get_time"}, []string{cs[0].Name, cs[1].Name})
		rest := s.toolResults(t,
			agent.ToolResult{ID: cs[1].ID, Content: "clock broken", IsError: true},
			agent.ToolResult{ID: cs[0].ID, Content: "sunny"})
		require.Equal(t, agent.EventResult, lastEvent(rest).Type, "%+v", rest)

		reqs := s.requests(t)
		require.Len(t, reqs, 2, summarizeRequests(reqs))
		res := toolResultBlocks(t, reqs[1])
		assert.Equal(t, "sunny", res[cs[0].ID].ResultText())
		assert.False(t, res[cs[0].ID].IsError)
		assert.Equal(t, "clock broken", res[cs[1].ID].ResultText())
		assert.True(t, res[cs[1].ID].IsError)
		s.waitIdle(t)
	})

	t.Run("a call left out gets an error result", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "both", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{
				clientCall("get_weather", map[string]string{"city": "Rome"}),
				clientCall("get_time", map[string]string{"city": "Rome"}),
			}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "Only the weather came back."},
		}}})
		cs := calls(t, s.query(t, agent.QueryRequest{Prompt: "Weather and time in Rome, both.",
			Tools: []agent.ClientTool{weatherTool, timeTool}}))
		require.Len(t, cs, 2)
		rest := s.toolResults(t, agent.ToolResult{ID: cs[0].ID, Content: "warm"})
		require.Equal(t, agent.EventResult, lastEvent(rest).Type, "%+v", rest)
		res := toolResultBlocks(t, s.requests(t)[1])
		assert.Equal(t, "warm", res[cs[0].ID].ResultText())
		assert.True(t, res[cs[1].ID].IsError)
		assert.Contains(t, res[cs[1].ID].ResultText(), "did not run")
		s.waitIdle(t)
	})

	t.Run("tool results with nothing waiting get 409", func(t *testing.T) {
		_, err := s.agent.ToolResults(context.Background(), agent.ToolResultsRequest{
			Results: []agent.ToolResult{{ID: "toolu_nothing", Content: "x"}}, APIKey: "sk-ant-test"})
		var apiErr *agentclient.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusConflict, apiErr.Status)
		assert.Equal(t, "no_pending_tool_calls", apiErr.Code)
	})

	t.Run("a new query while calls wait abandons them and runs after the old turn", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "weather in Lima", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{clientCall("get_weather", map[string]string{"city": "Lima"})}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "The old turn's answer."},
		}, {
			Match:    anthropictest.Match{LastUserTextContains: "Something else"},
			Response: anthropictest.Response{Text: "The new turn's answer."},
		}}})
		cs := calls(t, s.query(t, agent.QueryRequest{Prompt: "What is the weather in Lima?", Tools: []agent.ClientTool{weatherTool}}))
		require.Len(t, cs, 1)
		events := s.query(t, agent.QueryRequest{Prompt: "Something else, please."})
		last := lastEvent(events)
		require.Equal(t, agent.EventResult, last.Type, "%+v", events)
		assert.Equal(t, "The new turn's answer.", last.Result.Text)
		for _, e := range events {
			assert.NotContains(t, e.Text, "old turn", "the old turn's events are discarded")
		}
		reqs := s.requests(t)
		require.Len(t, reqs, 3, summarizeRequests(reqs))
		res := toolResultBlocks(t, reqs[1])
		require.Contains(t, res, cs[0].ID, "the old turn ran on first")
		assert.True(t, res[cs[0].ID].IsError)
		assert.Contains(t, res[cs[0].ID].ResultText(), "new message instead")
		assert.Contains(t, reqs[2].LastUserText(), "Something else")

		_, err := s.agent.ToolResults(context.Background(), agent.ToolResultsRequest{
			Results: []agent.ToolResult{{ID: cs[0].ID, Content: "too late"}}, APIKey: "sk-ant-test"})
		assert.ErrorIs(t, err, agentclient.ErrBusy, "the abandoned calls wait no more (409)")
		s.waitIdle(t)
	})

	t.Run("tool choice and one call at a time reach the model as instructions", func(t *testing.T) {
		s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
		events := s.query(t, agent.QueryRequest{Prompt: "Plan my trip.", Tools: []agent.ClientTool{weatherTool, timeTool},
			ToolChoice: "get_time", OneToolAtATime: true})
		require.Equal(t, agent.EventResult, lastEvent(events).Type, "%+v", events)
		reqs := s.requests(t)
		require.Len(t, reqs, 1)
		text := reqs[0].LastUserText()
		assert.Contains(t, text, "Plan my trip.")
		assert.Contains(t, text, "must begin with a call of the client's function mcp__client__get_time")
		assert.Contains(t, text, "at most one of the client's functions per reply")

		s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted again."}})
		events = s.query(t, agent.QueryRequest{Prompt: "Any of them.", Tools: []agent.ClientTool{weatherTool, timeTool},
			ToolChoice: "required"})
		require.Equal(t, agent.EventResult, lastEvent(events).Type, "%+v", events)
		text = s.requests(t)[0].LastUserText()
		assert.Contains(t, text, "must begin with a call of one of the client's functions: mcp__client__get_weather, mcp__client__get_time")
		assert.NotContains(t, text, "at most one")
		assert.NotContains(t, text, "can call now", "the set did not change")
	})

	t.Run("a changed set of functions is listed to the CLI again and named to the model", func(t *testing.T) {
		s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Both noted."}})
		events := s.query(t, agent.QueryRequest{Prompt: "Remember both.", Tools: []agent.ClientTool{weatherTool, timeTool}})
		require.Equal(t, agent.EventResult, lastEvent(events).Type, "%+v", events)

		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "time in Tokyo", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{clientCall("get_time", map[string]string{"city": "Tokyo"})}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "It is noon in Tokyo."},
		}}})
		// The previous turn offered both; this one the time alone, and its
		// call goes to the client.
		cs := calls(t, s.query(t, agent.QueryRequest{Prompt: "What is the time in Tokyo?", Tools: []agent.ClientTool{timeTool}}))
		require.Len(t, cs, 1)
		assert.Equal(t, "get_time", cs[0].Name)
		rest := s.toolResults(t, agent.ToolResult{ID: cs[0].ID, Content: "12:00"})
		assert.Equal(t, "It is noon in Tokyo.", lastEvent(rest).Result.Text)
		text := s.requests(t)[0].LastUserText()
		assert.Contains(t, text, "The client's functions you can call now are: mcp__client__get_time.")

		// Without functions, the model is told none are left, and a call
		// of one is refused by the CLI itself.
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "again", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{clientCall("get_time", map[string]string{"city": "Tokyo"})}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "I cannot tell the time now."},
		}}})
		events = s.query(t, agent.QueryRequest{Prompt: "The time in Tokyo again?"})
		require.Equal(t, agent.EventResult, lastEvent(events).Type, "%+v", events)
		reqs := s.requests(t)
		require.Len(t, reqs, 2, summarizeRequests(reqs))
		assert.Contains(t, reqs[0].LastUserText(), "None of the client's functions")
		for _, b := range toolResultBlocks(t, reqs[1]) {
			assert.True(t, b.IsError)
			assert.Contains(t, b.ResultText(), "No such tool available")
		}
	})

	t.Run("a client that leaves the continuation interrupts the turn", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "weather in Oslo", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{clientCall("get_weather", map[string]string{"city": "Oslo"})}},
		}, {
			Match: anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "Oslo is " + strings.Repeat("cold and dark ", 60),
				ChunkChars: 8, ChunkDelayMS: 50},
		}}, Default: &anthropictest.Response{Text: "Back."}})
		cs := calls(t, s.query(t, agent.QueryRequest{Prompt: "What is the weather in Oslo?", Tools: []agent.ClientTool{weatherTool}}))
		ctx, cancel := context.WithCancel(context.Background())
		st, err := s.agent.ToolResults(ctx, agent.ToolResultsRequest{
			Results: []agent.ToolResult{{ID: cs[0].ID, Content: "cold"}}, APIKey: "sk-ant-test"})
		require.NoError(t, err)
		for {
			e, err := st.Next()
			require.NoError(t, err)
			if e.Type == agent.EventTextDelta {
				break
			}
		}
		cancel()
		_ = st.Close()
		s.waitIdle(t)
		reqs := s.requests(t)
		require.Len(t, reqs, 2, summarizeRequests(reqs))
		assert.True(t, reqs[1].ClientAborted, "the interrupted API stream was cut off")
		events := s.query(t, agent.QueryRequest{Prompt: "Are you back?"})
		assert.Equal(t, "Back.", lastEvent(events).Result.Text)
	})

	t.Run("bad tools are refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			q    agent.QueryRequest
			want string
		}{
			{"bad name", agent.QueryRequest{Tools: []agent.ClientTool{{Name: "get weather"}}}, "tools[0].name"},
			{"twice", agent.QueryRequest{Tools: []agent.ClientTool{weatherTool, weatherTool}}, "used twice"},
			{"schema not an object", agent.QueryRequest{Tools: []agent.ClientTool{{Name: "f", Parameters: json.RawMessage(`[1]`)}}}, "parameters"},
			{"unknown choice", agent.QueryRequest{Tools: []agent.ClientTool{weatherTool}, ToolChoice: "get_time"}, "tool_choice"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.q.Prompt, tc.q.APIKey = "Hi.", "sk-ant-test"
				_, err := s.agent.Turn(context.Background(), tc.q)
				var apiErr *agentclient.APIError
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, http.StatusBadRequest, apiErr.Status)
				assert.Contains(t, apiErr.Message, tc.want)
			})
		}
	})
}

// TestAgentClientToolTimeout: calls the client does not answer in time get
// error results, the turn runs to its end unattended, and the next turn's
// stream begins with a tool_timeout notice.
func TestAgentClientToolTimeout(t *testing.T) {
	testenv.Integration(t)
	s := startProcessStackEnv(t, agent.EnvToolResultTimeout+"=1s")
	s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "weather in Quito", HasToolResult: ptr(false)},
		Response: anthropictest.Response{Blocks: []anthropictest.Block{clientCall("get_weather", map[string]string{"city": "Quito"})}},
	}, {
		Match:    anthropictest.Match{HasToolResult: ptr(true)},
		Response: anthropictest.Response{Text: "I could not find out."},
	}}, Default: &anthropictest.Response{Text: "Next answer."}})
	cs := calls(t, s.query(t, agent.QueryRequest{Prompt: "What is the weather in Quito?", Tools: []agent.ClientTool{weatherTool}}))
	require.Len(t, cs, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.mock.WaitForRequests(ctx, 2), "the turn went on without the result")
	s.waitIdle(t)
	res := toolResultBlocks(t, s.requests(t)[1])
	require.Contains(t, res, cs[0].ID)
	assert.True(t, res[cs[0].ID].IsError)
	assert.Contains(t, res[cs[0].ID].ResultText(), "did not answer this call in time")

	_, err := s.agent.ToolResults(context.Background(), agent.ToolResultsRequest{
		Results: []agent.ToolResult{{ID: cs[0].ID, Content: "late"}}, APIKey: "sk-ant-test"})
	var apiErr *agentclient.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "no_pending_tool_calls", apiErr.Code)

	events := s.query(t, agent.QueryRequest{Prompt: "And now?"})
	require.NotEmpty(t, events)
	assert.Equal(t, agent.EventNotice, events[0].Type)
	assert.Equal(t, agent.CodeToolTimeout, events[0].Code)
	assert.Contains(t, events[0].Message, "1s")
	assert.Equal(t, "Next answer.", lastEvent(events).Result.Text)
}
