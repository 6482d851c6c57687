package anthropictest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	Name string
	Data map[string]any
}

// typ returns the "type" of the event data.
func (e sseEvent) typ() string {
	s, _ := e.Data["type"].(string)
	return s
}

// readEvent reads the next event from r; io.EOF at a clean end.
func readEvent(r *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	var data strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" && ev.Name == "" && data.Len() == 0 {
				return ev, io.EOF
			}
			if err == io.EOF {
				return ev, io.ErrUnexpectedEOF
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.Name == "" && data.Len() == 0 {
				continue
			}
			if err := json.Unmarshal([]byte(data.String()), &ev.Data); err != nil {
				return ev, err
			}
			return ev, nil
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data.WriteString(strings.TrimPrefix(line, "data: "))
		}
	}
}

// readAllEvents reads events until the end of the stream.
func readAllEvents(t *testing.T, body io.Reader) []sseEvent {
	t.Helper()
	r := bufio.NewReader(body)
	var evs []sseEvent
	for {
		ev, err := readEvent(r)
		if err == io.EOF {
			return evs
		}
		require.NoError(t, err)
		require.Equal(t, ev.Name, ev.typ(), "event name and data type differ")
		evs = append(evs, ev)
	}
}

// names returns the event names.
func names(evs []sseEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Name
	}
	return out
}

// assembled is the content of one streamed block put back together.
type assembled struct {
	Start     map[string]any
	Text      string // text, thinking or partial_json
	Signature string
	Deltas    []string
}

// reassemble puts the streamed blocks back together.
func reassemble(t *testing.T, evs []sseEvent) []*assembled {
	t.Helper()
	var blocks []*assembled
	for _, e := range evs {
		switch e.Name {
		case "content_block_start":
			require.EqualValues(t, len(blocks), e.Data["index"])
			blocks = append(blocks, &assembled{Start: e.Data["content_block"].(map[string]any)})
		case "content_block_delta":
			require.EqualValues(t, len(blocks)-1, e.Data["index"])
			b := blocks[len(blocks)-1]
			d := e.Data["delta"].(map[string]any)
			switch d["type"] {
			case "text_delta":
				b.Deltas = append(b.Deltas, d["text"].(string))
			case "thinking_delta":
				b.Deltas = append(b.Deltas, d["thinking"].(string))
			case "input_json_delta":
				b.Deltas = append(b.Deltas, d["partial_json"].(string))
			case "signature_delta":
				b.Signature = d["signature"].(string)
				continue
			default:
				t.Fatalf("unknown delta type %v", d["type"])
			}
			b.Text += b.Deltas[len(b.Deltas)-1]
		case "content_block_stop":
			require.EqualValues(t, len(blocks)-1, e.Data["index"])
		}
	}
	return blocks
}

// post sends body (JSON-encoded unless it is []byte or string) to the mock.
func post(t *testing.T, ctx context.Context, url string, body any) *http.Response {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case []byte:
		data = b
	case string:
		data = []byte(b)
	default:
		var err error
		data, err = json.Marshal(body)
		require.NoError(t, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// request builds a Messages API body with one user message per text.
func request(stream bool, texts ...string) map[string]any {
	msgs := make([]any, 0, len(texts))
	for i, text := range texts {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		msgs = append(msgs, map[string]any{"role": role, "content": text})
	}
	return map[string]any{"model": "claude-test-1", "max_tokens": 1024, "stream": stream, "messages": msgs}
}

// streamEvents posts a streaming request and reads the whole stream.
func streamEvents(t *testing.T, srv *anthropictest.Server, body any) (*http.Response, []sseEvent) {
	t.Helper()
	resp := post(t, testContext(t), srv.URL()+"/v1/messages?beta=true", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return resp, readAllEvents(t, resp.Body)
}

// decodeJSON decodes a JSON response body.
func decodeJSON(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

// testContext returns a context that ends with the test, after 5 s at most.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
