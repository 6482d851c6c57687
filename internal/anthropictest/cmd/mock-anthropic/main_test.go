package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	scriptPath := filepath.Join(dir, "script.json")
	logPath := filepath.Join(dir, "requests.jsonl")
	require.NoError(t, os.WriteFile(scriptPath, []byte(`{"default": {"text": "from the file"}}`), 0o600))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	stdoutR, stdoutW := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"-addr", "127.0.0.1:0", "-script", scriptPath, "-log", logPath}, stdoutW, &stderr)
		_ = stdoutW.Close()
	}()

	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	require.NoError(t, err)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTENING ")
	require.True(t, ok, "first line %q", line)
	assert.True(t, strings.HasPrefix(addr, "127.0.0.1:"), addr)
	go func() { _, _ = io.Copy(io.Discard, stdoutR) }()

	remote := &anthropictest.Remote{BaseURL: "http://" + addr}
	require.NoError(t, remote.WaitHealthy(ctx))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, remote.BaseURL+"/v1/messages",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var msg struct {
		Content []struct{ Text string } `json:"content"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&msg))
	_ = resp.Body.Close()
	require.Len(t, msg.Content, 1)
	assert.Equal(t, "from the file", msg.Content[0].Text)

	reqs, err := remote.Requests(ctx)
	require.NoError(t, err)
	require.Len(t, reqs, 1)

	stop()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("run did not return after cancellation")
	}
	assert.Empty(t, stderr.String())
	logData, err := os.ReadFile(logPath)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(logData)), "\n")
	require.Len(t, lines, 2)
	assert.Contains(t, lines[0], `"type":"request"`)
	assert.Contains(t, lines[1], `"type":"response_done"`)
}

func TestRunBadArguments(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"steps": [{"match": {"typo": 1}}]}`), 0o600))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing script", []string{"-script", filepath.Join(dir, "none.json")}, "read script"},
		{"invalid script", []string{"-script", bad}, `unknown field "typo"`},
		{"extra argument", []string{"extra"}, "unexpected arguments"},
		{"bad address", []string{"-addr", "256.0.0.1:http"}, "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}
