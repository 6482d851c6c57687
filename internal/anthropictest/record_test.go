package anthropictest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

func TestRecording(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Steps: []anthropictest.Step{
		{Match: anthropictest.Match{HasToolResult: new(true)}, Response: text("got it")},
	}})
	var logBuf syncBuffer
	srv.SetLog(&logBuf)

	// Odd spacing and key order must survive: the body is kept as sent.
	body := `{ "stream" : false, "model":"claude-test-1",
	  "messages":[{"role":"user","content":"Run it"},
	  {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{}}]},
	  {"role":"user","content":[
	    {"type":"tool_result","tool_use_id":"toolu_1","content":"plain output"},
	    {"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"line 1"},{"type":"image"},{"type":"text","text":"line 2"}],"is_error":true},
	    {"type":"text","text":"What now? \u003cplease\u003e"}]}]}`
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, srv.URL()+"/v1/messages?beta=true", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("x-api-key", "sk-ant-test")
	req.Header.Set("anthropic-version", "2023-06-01")
	before := time.Now()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()

	require.NoError(t, srv.WaitFor(testContext(t), func(r []anthropictest.RecordedRequest) bool {
		return len(r) == 1 && r[0].Done
	}))
	reqs := srv.Requests()
	r := reqs[0]
	assert.Equal(t, 1, r.Seq)
	assert.WithinDuration(t, before, r.Time, time.Second)
	assert.Equal(t, "POST", r.Method)
	assert.Equal(t, "/v1/messages", r.Path)
	assert.Equal(t, "beta=true", r.Query)
	assert.Equal(t, "sk-ant-test", r.Header.Get("X-Api-Key"))
	assert.Equal(t, "2023-06-01", r.Header.Get("Anthropic-Version"))
	assert.NotEmpty(t, r.Header.Get("Host"))
	assert.Equal(t, body, string(r.Body))
	assert.Equal(t, 0, r.MatchedStep)
	assert.True(t, r.Done)
	assert.Equal(t, http.StatusOK, r.Status)
	assert.False(t, r.ClientAborted)
	assert.Positive(t, r.Duration)

	msgs, err := r.Messages()
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	assert.Equal(t, "assistant", msgs[1].Role)
	assert.Equal(t, "Bash", msgs[1].Blocks()[0].Name)
	assert.Equal(t, "What now? <please>", r.LastUserText())
	assert.True(t, r.HasToolResult())
	assert.Equal(t, []string{"plain output", "line 1\nline 2"}, r.ToolResultTexts())
	assert.True(t, msgs[2].Blocks()[1].IsError)
	assert.Contains(t, r.AllText(), `"stream": false, "model": "claude-test-1"`)
	assert.Contains(t, r.AllText(), `What now? <please>`)

	// Requests returns copies.
	reqs[0].Header.Set("X-Api-Key", "changed")
	reqs[0].Body[0] = 'X'
	assert.Equal(t, "sk-ant-test", srv.Requests()[0].Header.Get("X-Api-Key"))
	assert.Equal(t, body, string(srv.Requests()[0].Body))

	// The log has a request line and a response_done line.
	lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
	require.Len(t, lines, 2)
	var logReq, logDone map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &logReq))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &logDone))
	assert.Equal(t, "request", logReq["type"])
	assert.EqualValues(t, 0, logReq["matched_step"])
	assert.Equal(t, "sk-ant-test", logReq["headers"].(map[string]any)["X-Api-Key"])
	assert.Equal(t, "response_done", logDone["type"])
	assert.EqualValues(t, 200, logDone["status"])
	assert.Equal(t, false, logDone["client_aborted"])
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestClientAbortMidStream(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{
		Text: strings.Repeat("slow ", 100), ChunkChars: 1, ChunkDelayMS: 20, // 10 s in all
	}})
	ctx, cancel := context.WithCancel(testContext(t))
	resp := post(t, ctx, srv.URL()+"/v1/messages", request(true, "hi"))
	r := bufio.NewReader(resp.Body)
	deltas := 0
	for deltas < 2 {
		ev, err := readEvent(r)
		require.NoError(t, err)
		if ev.Name == "content_block_delta" {
			deltas++
		}
	}
	cancel()

	require.NoError(t, srv.WaitFor(testContext(t), func(r []anthropictest.RecordedRequest) bool {
		return len(r) == 1 && r[0].Done
	}))
	rec := srv.Requests()[0]
	assert.True(t, rec.ClientAborted)
	assert.Equal(t, http.StatusOK, rec.Status)
	assert.Less(t, rec.Duration, 2*time.Second)
}

func TestHangAfterDeltas(t *testing.T) {
	script := anthropictest.Script{Default: &anthropictest.Response{
		Text: "abcdefgh", ChunkChars: 2, HangAfterDeltas: new(2),
	}}

	// readUntilStall reads the stream up to the stall and returns the
	// events read so far and a channel that gets the rest of the stream.
	readUntilStall := func(t *testing.T, resp *http.Response) ([]sseEvent, <-chan error) {
		r := bufio.NewReader(resp.Body)
		var evs []sseEvent
		for len(evs) < 5 {
			ev, err := readEvent(r)
			require.NoError(t, err)
			evs = append(evs, ev)
		}
		rest := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, r)
			rest <- err
		}()
		return evs, rest
	}

	t.Run("stalls until the client goes away", func(t *testing.T) {
		srv := anthropictest.NewServer(t, script)
		ctx, cancel := context.WithCancel(testContext(t))
		defer cancel()
		resp := post(t, ctx, srv.URL()+"/v1/messages", request(true, "hi"))
		evs, rest := readUntilStall(t, resp)
		assert.Equal(t, []string{"message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta"}, names(evs))
		select {
		case err := <-rest:
			t.Fatalf("stream went on after the stall: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		assert.False(t, srv.Requests()[0].Done, "the handler is still stalled")

		cancel()
		require.NoError(t, srv.WaitFor(testContext(t), func(r []anthropictest.RecordedRequest) bool { return r[0].Done }))
		assert.True(t, srv.Requests()[0].ClientAborted)
	})

	t.Run("Close ends the stall", func(t *testing.T) {
		srv := anthropictest.New(script)
		require.NoError(t, srv.Start(""))
		t.Cleanup(srv.Close)
		resp := post(t, testContext(t), srv.URL()+"/v1/messages", request(true, "hi"))
		_, rest := readUntilStall(t, resp)

		closed := make(chan struct{})
		go func() { srv.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(2 * time.Second):
			t.Fatal("Close did not return")
		}
		select {
		case <-rest: // the stream ended (cleanly or not) without message_stop
		case <-time.After(2 * time.Second):
			t.Fatal("the stream did not end")
		}
		rec := srv.Requests()[0]
		assert.True(t, rec.Done)
		assert.False(t, rec.ClientAborted)
	})
}

func TestWaitForRequestsTimeout(t *testing.T) {
	srv := anthropictest.NewServer(t, anthropictest.Script{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := srv.WaitForRequests(ctx, 1)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.DeadlineExceeded))

	waited := make(chan error, 1)
	go func() { waited <- srv.WaitForRequests(testContext(t), 1) }()
	post(t, testContext(t), srv.URL()+"/v1/messages", request(false, "hi"))
	require.NoError(t, <-waited)
}

// The body of a real request of Claude Code 2.1.328, recorded by the Python
// mock, must get a valid stream with the same token estimates the Python
// mock gave it.
func TestRealRecording(t *testing.T) {
	// Copied from shared/fixtures/claude-stream-json (see its README).
	data, err := os.ReadFile("testdata/a_plain.request_full.json")
	require.NoError(t, err)
	var rec struct {
		Method  string            `json:"method"`
		Path    string            `json:"path"`
		Query   string            `json:"query"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	}
	require.NoError(t, json.Unmarshal(data, &rec))

	srv := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hi! How can I help you today?"}})
	req, err := http.NewRequestWithContext(testContext(t), rec.Method, srv.URL()+rec.Path+"?"+rec.Query, bytes.NewReader(rec.Body))
	require.NoError(t, err)
	for k, v := range rec.Headers {
		switch strings.ToLower(k) {
		case "host", "content-length", "connection", "accept-encoding":
		default:
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	evs := readAllEvents(t, resp.Body)
	require.Equal(t, []string{
		"message_start", "content_block_start", "ping",
		"content_block_delta", "content_block_delta", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop",
	}, names(evs))

	msg := evs[0].Data["message"].(map[string]any)
	assert.Equal(t, "claude-opus-5-5", msg["model"])
	// a_plain.stdout.jsonl: "input_tokens":2544 ... "output_tokens":7
	assert.EqualValues(t, 2544, msg["usage"].(map[string]any)["input_tokens"])
	assert.EqualValues(t, 7, evs[len(evs)-2].Data["usage"].(map[string]any)["output_tokens"])
	assert.Equal(t, "Hi! How can I help you today?", reassemble(t, evs)[0].Text)

	got := srv.Requests()[0]
	assert.Equal(t, "beta=true", got.Query)
	assert.Equal(t, "sk-ant-test", got.Header.Get("X-Api-Key"))
	assert.Equal(t, "claude-cli/2.1.328 (external, sdk-cli)", got.Header.Get("User-Agent"))
	assert.Contains(t, got.LastUserText(), "say hi")
	assert.False(t, got.HasToolResult())
}

func TestBodies(t *testing.T) {
	reqs := []anthropictest.RecordedRequest{{Body: []byte(`{"a":1}`)}, {}, {Body: []byte("x")}}
	assert.Equal(t, []string{`{"a":1}`, "", "x"}, anthropictest.Bodies(reqs))
	assert.Empty(t, anthropictest.Bodies(nil))
}
