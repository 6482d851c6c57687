package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// engineRestartEnv enables TestEngineRestart. Restarting the Docker engine
// stops every container on it, so the test runs alone: `make
// test-engine-restart` (which CI runs after `make test`) sets it.
const engineRestartEnv = "AGCLUSTER_TEST_ENGINE_RESTART"

// TestEngineRestart: the Docker engine is stopped and started again while
// a conversation is open (its container comes back stopped, on a new
// port); the next message wakes the same container with its files and its
// context, and Caddy never restarts.
func TestEngineRestart(t *testing.T) {
	if os.Getenv(engineRestartEnv) != "1" {
		t.Skipf("restarts the Docker engine; run alone with `make test-engine-restart` (sets %s=1)", engineRestartEnv)
	}
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
	c := &conversation{t: t, key: "sk-ant-test-engine-restart", id: "c-engine"}
	c.say(g, "The code word is marmalade.")
	put := api{t, g, c.key}.do(http.MethodPut, "/api/agents/sessions/"+c.sessionID+"/files/w.txt", strings.NewReader("marmalade"), "text/plain")
	require.Equal(t, http.StatusCreated, put.status, string(put.body))
	agentID := c.session(g).AgentID

	restartEngine(t)
	e.restartMock(t)
	assert.False(t, e.running(t, agentID), "the engine restart stopped the agent")

	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Marmalade."}})
	assert.Equal(t, "Marmalade.", c.say(g, "What is the code word?"))
	last := e.lastRequest(t)
	assert.Contains(t, last.AllText(), "The code word is marmalade.", "the CLI resumed its session")
	assert.Equal(t, "What is the code word?", last.LastUserText(), "woken, not re-seeded")
	assert.Equal(t, agentID, c.session(g).AgentID, "the same container")
	read := api{t, g, c.key}.do(http.MethodGet, "/api/agents/sessions/"+c.sessionID+"/files/w.txt", nil, "")
	require.Equal(t, http.StatusOK, read.status)
	assert.Equal(t, "marmalade", string(read.body))
}

// restartEngine stops the local dockerd and starts it again the way
// scripts/ensure-docker.sh does.
func restartEngine(t *testing.T) {
	t.Helper()
	out, err := exec.Command("pidof", "dockerd").Output()
	require.NoError(t, err, "no dockerd process to restart")
	pid := strings.Fields(string(out))[0]
	require.NoError(t, exec.Command("kill", "-TERM", pid).Run())
	testenv.Eventually(t, 2*time.Minute, func() bool {
		return exec.Command("kill", "-0", pid).Run() != nil
	}, "dockerd did not stop")
	cmd := exec.Command(testenv.RepoRoot() + "/scripts/ensure-docker.sh")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Run(), "the engine did not come back")
}

// restartMock starts the mock API's container again after an engine
// restart (it comes back stopped, like every container) and points the
// test's client at its new port.
func (e *env) restartMock(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	list, err := e.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", "agcluster.test=true"), filters.Arg("network", e.network))})
	require.NoError(t, err)
	require.Len(t, list, 1, "the mock container")
	require.NoError(t, e.docker.ContainerStart(ctx, list[0].ID, container.StartOptions{}))
	e.mock.BaseURL = "http://127.0.0.1:" + testenv.PublishedPort(t, e.docker, list[0].ID, "8080/tcp")
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, e.mock.WaitHealthy(wctx))
}
