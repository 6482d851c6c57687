package cftest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// call sends a request to the Worker's API with its secret.
func call(t *testing.T, w *Worker, method, path string, body any) (int, []byte) {
	t.Helper()
	var in io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		in = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, w.URL+path, in)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+w.Secret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, out
}

// TestAgentContainerIsolated: the Worker's agent container is on the
// Worker's network with its port on loopback only, in a PID namespace of
// its own, labelled for the run, and its agent answers through the
// Worker; destroyed, it is gone.
func TestAgentContainerIsolated(t *testing.T) {
	w := Start(t)
	require.NoError(t, w.Ping(context.Background()))
	id := "sess_cftest" + testenv.RandomHex(4)
	status, body := call(t, w, http.MethodPut, "/v1/agents/"+id, map[string]any{
		"provider": "cftest", "session_id": id, "token": "cftest-token-" + testenv.RandomHex(8),
	})
	require.Equal(t, http.StatusCreated, status, string(body))
	t.Cleanup(func() { call(t, w, http.MethodDelete, "/v1/agents/"+id+"?provider=cftest", nil) })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := w.AgentContainer(ctx, "cftest", id)
	require.NoError(t, err)
	require.NotNil(t, c, "the agent's container")
	info, err := w.docker.ContainerInspect(ctx, c.ID)
	require.NoError(t, err)
	assert.Equal(t, w.Network, string(info.HostConfig.NetworkMode))
	assert.Contains(t, info.NetworkSettings.Networks, w.Network)
	assert.NotContains(t, info.NetworkSettings.Networks, "bridge", "not on the engine's default bridge")
	assert.False(t, info.HostConfig.PublishAllPorts)
	for port, bindings := range info.NetworkSettings.Ports {
		for _, b := range bindings {
			assert.Equal(t, "127.0.0.1", b.HostIP, "port %s is published on loopback only", port)
		}
	}
	assert.NotEqual(t, "host", string(info.HostConfig.PidMode), "a PID namespace of its own")
	assert.Equal(t, w.Run, info.Config.Labels[LabelRun])

	req, err := http.NewRequest(http.MethodGet, w.URL+"/v1/agents/"+id+"/agent/health?wait=30s", nil)
	require.NoError(t, err)
	req.Header.Set("Agcluster-Worker-Authorization", "Bearer "+w.Secret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var h agent.Health
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%+v", h)
	assert.Equal(t, "1", resp.Header.Get(agent.HeaderServer), "the agent's own answer, through the Worker")

	status, body = call(t, w, http.MethodDelete, "/v1/agents/"+id+"?provider=cftest", nil)
	require.Equal(t, http.StatusNoContent, status, string(body))
	left, err := w.ContainerOf(ctx, c.Names[0][len(c.Names[0])-64:])
	require.NoError(t, err)
	assert.Nil(t, left, "the container is gone with the agent")
}
