package openai

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

func TestErrorConstructors(t *testing.T) {
	tests := []struct {
		name   string
		err    *Error
		status int
		typ    string
		code   string // "" = null
		param  string // "" = null
		retry  string // x-should-retry header, "" = absent
	}{
		{"bad request", BadRequest("bad", "messages"), 400, TypeInvalidRequest, "", "messages", ""},
		{"bad request without param", BadRequest("bad", ""), 400, TypeInvalidRequest, "", "", ""},
		{"unauthorized", Unauthorized("nope"), 401, TypeAuthentication, "invalid_api_key", "", "false"},
		{"missing key", MissingAPIKey(), 401, TypeAuthentication, "missing_api_key", "", "false"},
		{"model not found", ModelNotFound("gpt-9"), 404, TypeInvalidRequest, "model_not_found", "model", ""},
		{"busy", Busy("a turn is running"), 409, TypeConflict, "conversation_busy", "", "false"},
		{"too large", TooLarge(1024), 413, TypeInvalidRequest, "request_too_large", "", "false"},
		{"rate limited", RateLimited("slow"), 429, TypeRateLimit, "rate_limit_exceeded", "", ""},
		{"upstream", Upstream("bad gateway"), 502, TypeAPI, "upstream_error", "", "false"},
		{"unavailable", Unavailable("no capacity"), 503, TypeAPI, "provider_unavailable", "", ""},
		{"internal", Internal("oops"), 500, TypeAPI, "internal_error", "", "false"},
		{"unset status", &Error{Message: "x", Type: TypeAPI}, 500, TypeAPI, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.err.Write(rec)
			assert.Equal(t, tc.status, rec.Code)
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			assert.Equal(t, tc.retry, rec.Header().Get("X-Should-Retry"))

			var body map[string]map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			require.Len(t, body, 1)
			e := body["error"]
			require.NotNil(t, e)
			assert.Len(t, e, 4, "message, type, param, code")
			assert.Equal(t, tc.err.Message, e["message"])
			assert.Equal(t, tc.typ, e["type"])
			assert.Equal(t, nilIfEmpty(tc.code), e["code"])
			assert.Equal(t, nilIfEmpty(tc.param), e["param"])
			assert.Contains(t, tc.err.Error(), tc.err.Message)
		})
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func TestFromAgentError(t *testing.T) {
	tests := []struct {
		code   string
		status int
		typ    string
		ecode  string
	}{
		{agent.CodeAuth, 401, TypeAuthentication, "invalid_api_key"},
		{agent.CodeRateLimit, 429, TypeRateLimit, "rate_limit_exceeded"},
		{agent.CodeOverloaded, 503, TypeAPI, "overloaded"},
		{agent.CodeUpstream, 502, TypeAPI, "upstream_error"},
		{agent.CodeTimeout, 504, TypeAPI, "timeout"},
		{agent.CodeMaxTurns, 500, TypeAPI, "max_turns"},
		{agent.CodeInterrupted, 500, TypeAPI, "interrupted"},
		{agent.CodeInternal, 500, TypeAPI, "internal_error"},
		{"something_new", 500, TypeAPI, "internal_error"},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			e := FromAgentError(agent.Event{Type: agent.EventError, Code: tc.code, Message: "it broke"})
			assert.Equal(t, tc.status, e.Status)
			assert.Equal(t, tc.typ, e.Type)
			require.NotNil(t, e.Code)
			assert.Equal(t, tc.ecode, *e.Code)
			assert.Equal(t, "it broke", e.Message)
			require.NotNil(t, e.ShouldRetry)
			assert.False(t, *e.ShouldRetry, "the turn ran: never retry")
		})
	}
	e := FromAgentError(agent.Event{Type: agent.EventError, Code: agent.CodeTimeout})
	assert.Equal(t, "the agent turn failed (timeout)", e.Message)
}

func TestWriteModelsAndCompletion(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteModels(rec, []Model{{ID: "agent", Created: 1, OwnedBy: "agcluster"}})
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.JSONEq(t, `{"object":"list","data":[{"id":"agent","object":"model","created":1,"owned_by":"agcluster"}]}`, rec.Body.String())

	rec = httptest.NewRecorder()
	WriteModels(rec, nil)
	assert.JSONEq(t, `{"object":"list","data":[]}`, rec.Body.String())

	rec = httptest.NewRecorder()
	WriteCompletion(rec, NewCollector(Options{Model: "m"}).Completion())
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), `"object":"chat.completion"`)

	h := http.Header{}
	SetStreamHeaders(h)
	assert.Equal(t, "text/event-stream", h.Get("Content-Type"))
	assert.Equal(t, "no", h.Get("X-Accel-Buffering"))
}

func TestErrorWithRequestID(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"message with a final period", Upstream("The agent did not answer; try again."), "The agent did not answer; try again (request id rid-1)."},
		{"message without one", Unavailable("no capacity"), "no capacity (request id rid-1)."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.err.WithRequestID("rid-1").Write(rec)
			assert.Equal(t, "rid-1", rec.Header().Get("X-Request-ID"))
			var body map[string]map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			assert.Len(t, body["error"], 4, "the OpenAI shape is kept")
			assert.Equal(t, tc.want, body["error"]["message"])
		})
	}
}
