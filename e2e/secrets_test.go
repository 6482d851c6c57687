package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// TestKeyNeverStored runs turns with a recognisable key and then looks for
// it everywhere it must not be: container environment and labels,
// `docker inspect`, container logs, Caddy's logs, the workspace volume on
// the host's disk, and files the agent can read. Only the mock Anthropic
// API, the key's rightful recipient, may see it.
func TestKeyNeverStored(t *testing.T) {
	e := setup(t)
	// Access logs on: Caddy must not write the bearer key into them.
	g := e.startGatewayWith(t, gatewayOptions{extraSite: "log {\n\t\toutput stderr\n\t}"})
	canary := "sk-ant-test-CANARY-" + testenv.RandomHex(8)
	e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match: anthropictest.Match{LastUserTextContains: "look around"},
		Response: anthropictest.Response{Blocks: []anthropictest.Block{anthropictest.ToolUse("Bash", map[string]string{
			"command":     "env; cat /proc/self/environ | tr '\\0' '\\n'; ls -la ~ /tmp; env > env-dump.txt",
			"description": "look around",
		})}},
	}, {Match: anthropictest.Match{HasToolResult: ptr(true)}, Response: anthropictest.Response{Text: "Looked."}}},
		Default: &anthropictest.Response{Text: "Fine."}})
	c := g.client(canary)
	got, err := streamed(t, c, user("Please look around."), conv("c-canary"))
	require.NoError(t, err)
	_, err = streamed(t, c, user("And again."), conv("c-canary"))
	require.NoError(t, err)
	content := got.Choices[0].Message.Content
	assert.NotContains(t, content, canary, "the agent's own tools cannot see the key")

	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, reqs)
	assert.Equal(t, canary, reqs[0].Header.Get("X-Api-Key"), "the key reaches the API")
	for _, r := range reqs {
		assert.NotContains(t, r.AllText(), canary, "the key is never in a request body (tool output, history)")
	}

	conts := e.containers(t, g.runID)
	require.Len(t, conts, 1)
	ctx := context.Background()
	info, err := e.docker.ContainerInspect(ctx, conts[0].ID)
	require.NoError(t, err)
	raw, err := json.Marshal(info)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), canary, "docker inspect (env, labels, args)")
	for _, m := range info.Mounts {
		assert.NotEqual(t, "/var/run/docker.sock", m.Source, "no Docker socket in an agent")
	}
	assert.NotContains(t, testenv.ContainerLogs(e.docker, conts[0].ID), canary, "container logs")

	// The workspace and state volumes as stored on the host.
	for _, m := range info.Mounts {
		if m.Type != "volume" {
			continue
		}
		if m.Destination == "/workspace" {
			_, err := os.Stat(filepath.Join(m.Source, "env-dump.txt"))
			require.NoError(t, err, "the volume's files are where grep looks")
		}
		out, err := exec.Command("grep", "-rl", canary, m.Source).CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "grep found the key in the volume: %s", out)
		assert.Equal(t, 1, exit.ExitCode(), "grep ran and found nothing: %s", out)
	}
	// Files the agent wrote itself, including its environment.
	r := api{t: t, g: g, key: canary}.do(http.MethodGet, "/api/agents/sessions", nil, "")
	require.Equal(t, http.StatusOK, r.status)
	var list struct {
		Sessions []struct {
			SessionID string `json:"session_id"`
		} `json:"sessions"`
	}
	r.json(t, &list)
	require.Len(t, list.Sessions, 1)
	arch := api{t: t, g: g, key: canary}.do(http.MethodGet, "/api/agents/sessions/"+list.Sessions[0].SessionID+"/archive", nil, "")
	require.Equal(t, http.StatusOK, arch.status)
	dir := t.TempDir()
	untarTo(t, arch.body, dir)
	dump, err := os.ReadFile(filepath.Join(dir, "env-dump.txt"))
	require.NoError(t, err, "the agent wrote its environment")
	assert.Contains(t, string(dump), "HOME=", "the dump is real")
	assert.NotContains(t, string(dump), canary)

	// Caddy's own logs, with the container removed at shutdown.
	g.stop(t)
	time.Sleep(100 * time.Millisecond)
	assert.Contains(t, g.logs.String(), `"uri":"/v1/chat/completions"`, "access logs were written")
	assert.NotContains(t, g.logs.String(), canary, "caddy logs, access logs included")
	assert.False(t, strings.Contains(g.logs.String(), "Bearer "+canary))
}
