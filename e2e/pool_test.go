package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers/docker"
	"github.com/agcluster/caddy-agcluster/session"
)

// pool reads the admin API's view of the warm pool.
func (g *gateway) pool(t testing.TB) []session.PoolStats {
	t.Helper()
	resp, err := http.Get(g.admin + "/agcluster/pool")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out []session.PoolStats
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

// waitPool waits until the pool holds ready agents for config and makes
// none.
func (g *gateway) waitPool(t testing.TB, config string, ready int) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func() bool {
		for _, s := range g.pool(t) {
			if s.ConfigID == config {
				return s.Ready == ready && s.Creating == 0
			}
		}
		return false
	}, "warm pool for %s never held %d ready agents: %+v", config, ready, g.pool(t))
}

// containerIDs lists the ids of the run's containers.
func (e *env) containerIDs(t testing.TB, runID string) []string {
	var ids []string
	for _, c := range e.containers(t, runID) {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestWarmPool: through Caddy, a new conversation is served by a ready
// agent of the pool, which refills; the agent is bound to its owner; a
// restarted Caddy reuses the ready agents and continues the conversation
// in its agent.
func TestWarmPool(t *testing.T) {
	e := setup(t)
	runID := testenv.RandomHex(6)
	t.Cleanup(func() { e.forceRemove(runID) })
	opts := gatewayOptions{keep: true, runID: runID, extraApp: "warm_pool agent 2\n\t\twarm_pool_check_interval 1s"}
	first := e.startGatewayWith(t, opts)
	first.waitPool(t, "agent", 2)
	warm := e.containerIDs(t, runID)
	require.Len(t, warm, 2)

	e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "favourite tree is the rowan"},
		Response: anthropictest.Response{Text: "Rowans, noted."},
	}}, Default: &anthropictest.Response{Text: "Still the rowan."}})
	key := "sk-ant-test-pool"
	got, err := streamed(t, first.client(key), user("My favourite tree is the rowan."), conv("c-pool"))
	require.NoError(t, err)
	assert.Equal(t, "Rowans, noted.", got.Choices[0].Message.Content)

	sessions := first.adminSessions(t)
	require.Len(t, sessions, 1)
	assert.Contains(t, warm, sessions[0].InstanceID, "the conversation runs in a container of the pool")
	first.waitPool(t, "agent", 2)
	assert.Len(t, e.containers(t, runID), 3, "one session and two ready agents")
	st := first.pool(t)[0]
	assert.Equal(t, int64(1), st.Hits)
	assert.Equal(t, int64(0), st.Misses)

	resp, err := http.Get(first.admin + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), "caddy_agcluster_warm_pool_hits_total 1")
	assert.Contains(t, string(body), "caddy_agcluster_warm_pool_ready 2")

	// The agent is bound: its binding names the conversation's owner.
	prov, err := docker.New(docker.Options{ExtraLabels: map[string]string{"agcluster.test.run": runID}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = prov.Close() })
	insts, err := prov.List(context.Background())
	require.NoError(t, err)
	for _, inst := range insts {
		if inst.ID != sessions[0].InstanceID {
			continue
		}
		b, err := inst.Client().Binding(context.Background())
		require.NoError(t, err)
		require.True(t, b.Bound)
		assert.Equal(t, sessions[0].ID, b.Binding.SessionID)
		assert.Equal(t, "c-pool", b.Binding.Conversation)
	}

	// Restart: the session is rediscovered through its agent's binding and
	// the two ready agents are handed out again, not made anew.
	before := e.containerIDs(t, runID)
	first.stop(t)
	opts.keep = false
	second := e.startGatewayWith(t, opts)
	testenv.Eventually(t, 30*time.Second, func() bool { return len(second.adminSessions(t)) == 1 },
		"the restarted gateway did not rediscover the pooled session")
	second.waitPool(t, "agent", 2)
	assert.Equal(t, before, e.containerIDs(t, runID), "the same containers, none made")
	got, err = streamed(t, second.client(key), user("What is my favourite tree?"), conv("c-pool"))
	require.NoError(t, err)
	assert.Equal(t, "Still the rowan.", got.Choices[0].Message.Content)
	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	assert.Contains(t, reqs[len(reqs)-1].AllText(), "My favourite tree is the rowan.", "with its context")

	_, err = streamed(t, second.client("sk-ant-test-pool-other"), user("Hi."), conv("c-pool"))
	require.NoError(t, err)
	ss := second.adminSessions(t)
	require.Len(t, ss, 2)
	assert.NotEqual(t, ss[0].InstanceID, ss[1].InstanceID, "another owner gets another agent")
	assert.Equal(t, int64(1), second.pool(t)[0].Hits, "served from the reused pool")
}

// TestWarmPoolRefusesUnknownConfigs: warm_pool naming a configuration
// that does not exist, or one that needs MCP credentials, stops the config
// from loading with a clear message.
func TestWarmPoolRefusesUnknownConfigs(t *testing.T) {
	testenv.Integration(t)
	for _, tc := range []struct{ line, want string }{
		{"warm_pool no-such-agent 1", "warm_pool no-such-agent: no such agent configuration"},
		{"warm_pool github-code-review 1", "warm_pool github-code-review: the configuration needs MCP credentials"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "Caddyfile")
			require.NoError(t, os.WriteFile(cfg, []byte("{\n\tadmin off\n\tagcluster {\n\t\t"+tc.line+"\n\t}\n}\n:0 {\n\tagcluster\n}\n"), 0o644))
			out, err := exec.Command(caddyBin(t), "validate", "--config", cfg, "--adapter", "caddyfile").CombinedOutput()
			require.Error(t, err, string(out))
			assert.Contains(t, string(out), tc.want)
		})
	}
}
