package agentclient

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

func TestReadData(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"one event", "data: {\"a\":1}\n\n", []string{`{"a":1}`}},
		{"no space after colon", "data:{\"a\":1}\n\n", []string{`{"a":1}`}},
		{"crlf", "data: x\r\n\r\n", []string{"x"}},
		{"comments and other fields skipped", ": keep-alive\n\nevent: e\nid: 1\ndata: x\n\n", []string{"x"}},
		{"multi-line data", "data: a\ndata: b\n\n", []string{"a\nb"}},
		{"several events", "data: 1\n\ndata: 2\n\n: ping\n\ndata: 3\n\n", []string{"1", "2", "3"}},
		{"last event without blank line", "data: 1\n\ndata: 2", []string{"1", "2"}},
		{"long line", "data: " + strings.Repeat("x", 100000) + "\n\n", []string{strings.Repeat("x", 100000)}},
		{"only comments", ": a\n\n: b\n\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tt.input), 16)
			var got []string
			for {
				d, err := ReadData(r)
				if errors.Is(err, io.EOF) {
					break
				}
				require.NoError(t, err)
				got = append(got, string(d))
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func FuzzReadData(f *testing.F) {
	f.Add("data: {\"type\":\"text_delta\",\"text\":\"hi\"}\n\n")
	f.Add(": keep-alive\n\ndata: a\ndata: b\n\n")
	f.Add("data:\r\n\r\ndata")
	f.Fuzz(func(t *testing.T, s string) {
		r := bufio.NewReaderSize(strings.NewReader(s), 16)
		for i := 0; i <= len(s); i++ {
			if _, err := ReadData(r); err != nil {
				return
			}
		}
		t.Fatalf("ReadData returned more events than input bytes for %q", s)
	})
}

func TestStreamEndsAtFinalEvent(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantType []agent.EventType
		wantErr  error
	}{
		{"result ends", "data: {\"type\":\"text_delta\",\"text\":\"a\"}\n\ndata: {\"type\":\"result\",\"result\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}\n\n",
			[]agent.EventType{agent.EventTextDelta, agent.EventResult}, io.EOF},
		{"error ends", "data: {\"type\":\"error\",\"code\":\"auth\",\"message\":\"bad key\"}\n\ndata: {\"type\":\"text\"}\n\n",
			[]agent.EventType{agent.EventError}, io.EOF},
		{"client tool calls end", "data: {\"type\":\"client_tool_calls\",\"calls\":[{\"id\":\"t1\",\"name\":\"f\",\"arguments\":\"{}\"}]}\n\n",
			[]agent.EventType{agent.EventClientToolCalls}, io.EOF},
		{"truncated", "data: {\"type\":\"text_delta\",\"text\":\"a\"}\n\n",
			[]agent.EventType{agent.EventTextDelta}, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(io.NopCloser(strings.NewReader(tt.body)))
			var got []agent.EventType
			var err error
			for {
				var e agent.Event
				e, err = s.Next()
				if err != nil {
					break
				}
				got = append(got, e.Type)
			}
			assert.Equal(t, tt.wantType, got)
			assert.ErrorIs(t, err, tt.wantErr)
		})
	}
}

// TestStreamReady: after the first event is read (which buffers all the
// body has), Ready tells whether the next Next returns without reading.
func TestStreamReady(t *testing.T) {
	const first = "data: {\"type\":\"text_delta\",\"text\":\"a\"}\n\n"
	tests := []struct {
		name string
		rest string // what follows the first event
		want bool
	}{
		{"a whole event", "data: {\"type\":\"text_delta\",\"text\":\"b\"}\n\n", true},
		{"a whole event with CRLF", "data: {\"type\":\"text_delta\",\"text\":\"b\"}\r\n\r\n", true},
		{"other fields and a comment first", ": keep-alive\n\nevent: x\n\nid: 2\ndata: {\"type\":\"text\"}\n\n", true},
		{"nothing", "", false},
		{"only a comment", ": keep-alive\n\n", false},
		{"an event still arriving", "data: {\"type\":\"text_delta\",\"text\":\"b\"}\n", false},
		{"a line still arriving", "data: {\"type\":\"text_de", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(io.NopCloser(strings.NewReader(first + tt.rest)))
			_, err := s.Next()
			require.NoError(t, err)
			assert.Equal(t, tt.want, s.Ready())
		})
	}
	t.Run("after the final event", func(t *testing.T) {
		s := NewStream(io.NopCloser(strings.NewReader("data: {\"type\":\"result\"}\n\n")))
		_, err := s.Next()
		require.NoError(t, err)
		assert.True(t, s.Ready(), "Next returns io.EOF at once")
	})
}

func TestClientErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/proxied" {
			w.Header().Set(agent.HeaderServer, "1")
		}
		switch r.URL.Path {
		case "/query":
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"error":{"code":"busy","message":"a turn is already running"}}`)
		case "/proxied":
			w.Header().Set("Server", "Fly/abc")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, "machine 123 not found")
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "not json")
		}
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, Token: "t"}
	get := func(path string) error {
		req, err := c.newRequest(t.Context(), http.MethodGet, path, nil)
		require.NoError(t, err)
		_, err = c.Do(req)
		return err
	}
	tests := []struct {
		name       string
		call       func() error
		apiError   *APIError // nil: not an *APIError
		busy       bool
		notReached bool
		contains   string
	}{
		{"the agent's own error", func() error { _, err := c.Query(t.Context(), "hi", "k"); return err },
			&APIError{Status: http.StatusConflict, Code: "busy", Message: "a turn is already running"}, true, false, "busy"},
		{"the agent's error without a JSON body", func() error { _, err := c.Stats(t.Context()); return err },
			&APIError{Status: http.StatusBadGateway, Code: "http_error", Message: "not json"}, false, false, "not json"},
		{"a proxy's answer: the agent was not reached", func() error { return get("/proxied") },
			nil, false, true, "HTTP 404 from Fly/abc: machine 123 not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.contains)
			assert.Equal(t, tt.busy, errors.Is(err, ErrBusy), "ErrBusy")
			assert.Equal(t, tt.notReached, errors.Is(err, ErrNotReached), "ErrNotReached")
			var ae *APIError
			if tt.apiError == nil {
				assert.False(t, errors.As(err, &ae), "an *APIError")
				return
			}
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tt.apiError, ae)
		})
	}
}

// FuzzDecodeEvent: the delta fast path, when it takes an event, decodes it
// exactly as encoding/json does; events the agent writes take it.
func FuzzDecodeEvent(f *testing.F) {
	for _, e := range []agent.Event{
		{Type: agent.EventTextDelta, Seq: 1, Text: "Hello"},
		{Type: agent.EventTextDelta, Seq: 12, ParentToolUseID: "toolu_1", Text: "<a & b>\u2028\"quoted\"\n"},
		{Type: agent.EventThinkingDelta, Seq: 3, Text: "hmm"},
		{Type: agent.EventToolUse, Seq: 4, ToolUseID: "t", Name: "Bash", Input: json.RawMessage(`{"command":"ls"}`)},
		{Type: agent.EventResult, Seq: 5, Result: &agent.Result{StopReason: "end_turn"}},
	} {
		data, err := json.Marshal(e)
		require.NoError(f, err)
		if e.Type == agent.EventTextDelta || e.Type == agent.EventThinkingDelta {
			got, ok := decodeDelta(data)
			require.True(f, ok, "the agent's own %s takes the fast path: %s", e.Type, data)
			require.Equal(f, e, got)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeDelta(data)
		if !ok {
			return
		}
		var full agent.Event
		if err := json.Unmarshal(data, &full); err != nil {
			t.Fatalf("fast path took %q, which encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(fast, full) {
			t.Fatalf("fast path differs on %q:\nfast %+v\nfull %+v", data, fast, full)
		}
	})
}
