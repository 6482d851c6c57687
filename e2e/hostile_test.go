package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// TestHostileInput sends malformed and hostile requests through Caddy:
// each gets a clear OpenAI-shaped 4xx, and none starts a container.
func TestHostileInput(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	a := api{t: t, g: g, key: "sk-ant-test-hostile"}
	msg := func(content any) string {
		b, _ := json.Marshal(map[string]any{"model": "agent", "messages": []any{map[string]any{"role": "user", "content": content}}})
		return string(b)
	}
	tests := []struct {
		name   string
		body   string
		header map[string]string
		path   string
		want   int
	}{
		{name: "not JSON", body: `{"model":`, want: 400},
		{name: "messages not a list", body: `{"model":"agent","messages":"hi"}`, want: 400},
		{name: "stream not a bool", body: `{"model":"agent","stream":"yes","messages":[{"role":"user","content":"hi"}]}`, want: 400},
		{name: "no messages", body: `{"model":"agent","messages":[]}`, want: 400},
		{name: "empty content", body: msg("   "), want: 400},
		{name: "content a number", body: msg(42), want: 400},
		{name: "unknown role", body: `{"model":"agent","messages":[{"role":"wizard","content":"hi"}]}`, want: 400},
		{name: "an image that is no image", body: msg([]any{map[string]any{"type": "image_url", "image_url": map[string]string{"url": "data:image/png;base64,AAAA"}}}), want: 400},
		{name: "NUL in content", body: msg("a\x00b"), want: 400},
		{name: "body too large", body: msg(strings.Repeat("x", 33<<20)), want: 413},
		{name: "conversation id too long", body: msg("hi"), header: map[string]string{"X-Conversation-ID": strings.Repeat("c", 5000)}, want: 400},
		{name: "conversation id with control characters", body: msg("hi"), header: map[string]string{"X-Conversation-ID": "a\tb"}, want: 400},
		{name: "unknown model", body: `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, want: 404},
		{name: "NUL in a path", path: "/api/agents/sessions/x%00y/files/a", want: 400},
		{name: "traversal in a path", path: "/api/agents/sessions/../../etc/passwd", want: 400},
		{name: "wrong method", path: "GET /v1/chat/completions", want: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.t = t
			method, path := http.MethodPost, "/v1/chat/completions"
			if tt.path != "" {
				method, path = http.MethodGet, tt.path
				if m, p, ok := strings.Cut(tt.path, " "); ok {
					method, path = m, p
				}
			}
			req, err := http.NewRequestWithContext(ctxFor(t, time.Minute), method, g.url, strings.NewReader(tt.body))
			require.NoError(t, err)
			req.URL.Opaque = "//" + req.URL.Host + path
			req.Header.Set("Authorization", "Bearer "+a.key)
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			assert.Equal(t, tt.want, resp.StatusCode, string(b))
			if resp.StatusCode != http.StatusMethodNotAllowed {
				r := reply{status: resp.StatusCode, body: b}
				assert.NotEmpty(t, r.errorMessage(t))
			}
		})
	}
	assert.Empty(t, e.containers(t, g.runID), "no hostile request started an agent")
}

// TestReloadKeepsStreamsAndSessions reloads Caddy with a changed Caddyfile
// while a turn streams: the stream finishes and the session is kept.
func TestReloadKeepsStreamsAndSessions(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: strings.Repeat("steady ", 40), ChunkChars: 7, ChunkDelayMS: 50}})
	c := g.client("sk-ant-test-reload")
	s := c.Chat.Completions.NewStreaming(ctxFor(t, 2*time.Minute), user("Keep talking."), conv("c-reload"))
	require.True(t, s.Next(), "%v", s.Err())
	before := e.containers(t, g.runID)
	require.Len(t, before, 1)

	// Reload with a changed config (another idle timeout and tool rendering).
	cfg, err := os.ReadFile(g.cfgPath)
	require.NoError(t, err)
	changed := strings.Replace(strings.Replace(string(cfg), "idle_timeout 30m", "idle_timeout 45m", 1), "tools full", "tools summary", 1)
	require.NotEqual(t, string(cfg), changed)
	adapted := adaptCaddyfile(t, changed)
	resp, err := http.Post(g.admin+"/load", "application/json", bytes.NewReader(adapted))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))

	var content strings.Builder
	for s.Next() {
		ch := s.Current()
		if len(ch.Choices) > 0 {
			content.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	require.NoError(t, s.Err(), "the in-flight stream finished across the reload")
	assert.Contains(t, content.String(), "steady steady")

	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Same agent."}})
	got, err := streamed(t, c, user("Still there?"), conv("c-reload"))
	require.NoError(t, err)
	assert.Equal(t, "Same agent.", got.Choices[0].Message.Content)
	after := e.containers(t, g.runID)
	require.Len(t, after, 1)
	assert.Equal(t, before[0].ID, after[0].ID, "the session survived the reload")
	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	assert.Contains(t, reqs[len(reqs)-1].AllText(), "Keep talking.")
}

// adaptCaddyfile turns a Caddyfile into JSON with the binary under test.
func adaptCaddyfile(t *testing.T, caddyfile string) []byte {
	t.Helper()
	f := t.TempDir() + "/Caddyfile"
	require.NoError(t, os.WriteFile(f, []byte(caddyfile), 0o644))
	out, err := execOutput(caddyBin(t), "adapt", "--config", f, "--adapter", "caddyfile")
	require.NoError(t, err, string(out))
	return out
}

func execOutput(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return append(out, stderr.Bytes()...), err
	}
	return out, nil
}
