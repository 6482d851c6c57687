package agent_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/server"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// TestAgentRestoreFromSnapshot is a Cloudflare container's sleep: the
// agent's disk is saved with GET /snapshot, the agent stops, and a new one
// starts on empty directories with AGENT_RESTORE=1; it waits, restoring,
// until PUT /snapshot gives it the disk back, then carries on: the same CLI
// session with its history, the workspace files, the binding.
func TestAgentRestoreFromSnapshot(t *testing.T) {
	testenv.Integration(t)
	const (
		firstPrompt  = "Please remember the word pineapple."
		firstAnswer  = "I will remember: pineapple."
		secondPrompt = "Which word did I ask you to remember?"
	)
	mock := anthropictest.NewServer(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "remember the word pineapple"},
		Response: anthropictest.Response{Text: firstAnswer},
	}}, Default: &anthropictest.Response{Text: "Noted."}})
	binding := agent.Binding{SessionID: "sess_restored", Owner: "owner-a", Conversation: "conv-1"}

	dirs := newAgentDirs(t)
	first := startProcessStackOn(t, mock, dirs, agent.EnvStateDir+"="+dirs.state)
	require.NoError(t, first.agent.Bind(context.Background(), binding))
	last := lastEvent(first.turn(t, firstPrompt))
	require.Equal(t, agent.EventResult, last.Type)
	_, err := first.agent.WriteFile(context.Background(), "notes/fruit.txt", []byte("quince"))
	require.NoError(t, err)

	snap := first.get(t, "/snapshot")
	require.Equal(t, http.StatusOK, snap.status, snap.body)
	assert.Equal(t, strconv.Itoa(len(snap.body)), snap.header.Get("Content-Length"), "a snapshot has a known length")
	names, _ := untar(t, snap.body)
	assert.Contains(t, names, "workspace/notes/fruit.txt")
	assert.Contains(t, names, "state/agent.json")
	token := first.agent.Token
	first.agent.Token = "wrong"
	assert.Equal(t, http.StatusUnauthorized, first.get(t, "/snapshot").status, "GET /snapshot needs the token")
	first.agent.Token = token
	first.stop()

	// A new container: empty disk, a new HOME, the agent told to wait.
	fresh := newAgentDirs(t)
	mock.Reset()
	second := launchProcessStack(t, mock, fresh, agent.EnvStateDir+"="+fresh.state, agent.EnvRestore+"=1")
	testenv.Eventually(t, time.Minute, func() bool {
		h, status, err := second.agent.Health(context.Background())
		return err == nil && status == http.StatusServiceUnavailable && h.Status == server.StatusRestoring
	}, "the agent never said it was restoring; logs:\n%s", second.logs())
	early := second.raw(t, http.MethodPost, "/query", `{"prompt":"too early","api_key":"sk-ant-test"}`)
	assert.Equal(t, http.StatusServiceUnavailable, early.status, "no turn before the restore")
	assert.Empty(t, mock.Requests(), "nothing reached the API before the restore")

	put := second.put(t, "/snapshot", snap.body)
	require.Equal(t, http.StatusOK, put.status, put.body)
	second.waitReady(t)

	h, _, err := second.agent.Health(context.Background())
	require.NoError(t, err)
	assert.True(t, h.Resumed, "the CLI session is resumed from the restored state")
	assert.Equal(t, last.Result.SessionID, h.SessionID)
	got := second.get(t, "/files/notes/fruit.txt")
	assert.Equal(t, "quince", got.body, "the workspace file is back")
	bs, err := second.agent.Binding(context.Background())
	require.NoError(t, err)
	require.True(t, bs.Bound, "the binding is back")
	assert.Equal(t, binding, *bs.Binding)

	end := lastEvent(second.turn(t, secondPrompt))
	require.Equal(t, agent.EventResult, end.Type, "logs:\n%s", second.logs())
	var seen []string
	for _, r := range mock.Requests() {
		if strings.Contains(r.LastUserText(), secondPrompt) {
			seen = append(seen, r.AllText())
		}
	}
	require.NotEmpty(t, seen, "the second turn reached the API")
	assert.Contains(t, seen[len(seen)-1], firstAnswer, "the turn before the sleep is in the context")
}
