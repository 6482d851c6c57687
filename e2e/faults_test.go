package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// adminSessions lists the gateway's sessions through its admin API.
func (g *gateway) adminSessions(t *testing.T) []struct{ ID, Conversation, InstanceID string } {
	t.Helper()
	resp, err := http.Get(g.admin + "/agcluster/sessions")
	require.NoError(t, err)
	defer resp.Body.Close()
	var out []struct {
		ID           string `json:"id"`
		Conversation string `json:"conversation"`
		InstanceID   string `json:"instance_id"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	res := make([]struct{ ID, Conversation, InstanceID string }, len(out))
	for i, s := range out {
		res[i] = struct{ ID, Conversation, InstanceID string }{s.ID, s.Conversation, s.InstanceID}
	}
	return res
}

// TestRestartKeepsConversations: with `shutdown keep`, a restarted Caddy
// rediscovers its sessions' containers by label, and a conversation goes
// on in the same container with its context.
func TestRestartKeepsConversations(t *testing.T) {
	e := setup(t)
	runID := testenv.RandomHex(6)
	t.Cleanup(func() { e.forceRemove(runID) })
	first := e.startGatewayWith(t, gatewayOptions{keep: true, runID: runID})
	e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "favourite bird is the heron"},
		Response: anthropictest.Response{Text: "Herons, noted."},
	}}, Default: &anthropictest.Response{Text: "Still the heron."}})
	key := "sk-ant-test-restart"
	_, err := streamed(t, first.client(key), user("My favourite bird is the heron."), conv("c-restart"))
	require.NoError(t, err)
	before := e.containers(t, runID)
	require.Len(t, before, 1)
	first.stop(t)
	require.Len(t, e.containers(t, runID), 1, "shutdown keep leaves the container running")

	second := e.startGatewayWith(t, gatewayOptions{runID: runID})
	testenv.Eventually(t, 30*time.Second, func() bool { return len(second.adminSessions(t)) == 1 },
		"the restarted gateway did not rediscover the session")
	got, err := streamed(t, second.client(key), user("What is my favourite bird?"), conv("c-restart"))
	require.NoError(t, err)
	assert.Equal(t, "Still the heron.", got.Choices[0].Message.Content)
	after := e.containers(t, runID)
	require.Len(t, after, 1)
	assert.Equal(t, before[0].ID, after[0].ID, "the same container")
	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	assert.Contains(t, reqs[len(reqs)-1].AllText(), "My favourite bird is the heron.", "with its context")

	_, err = streamed(t, second.client("sk-ant-test-other"), user("Hi."), conv("c-restart"))
	require.NoError(t, err)
	assert.Len(t, e.containers(t, runID), 2, "ownership survives the restart: another key gets its own agent")
}

// TestCLIKilledInContainer: the claude process inside a container dies
// between turns; the next turn through Caddy works, keeps the context and
// says the agent was restarted.
func TestCLIKilledInContainer(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
	c := g.client("sk-ant-test-cli-killed")
	_, err := streamed(t, c, user("The password is swordfish."), conv("c-cli"))
	require.NoError(t, err)
	conts := e.containers(t, g.runID)
	require.Len(t, conts, 1)
	ctx := context.Background()
	ex, err := e.docker.ContainerExecCreate(ctx, conts[0].ID, container.ExecOptions{Cmd: []string{"pkill", "-KILL", "-x", "claude"}})
	require.NoError(t, err)
	require.NoError(t, e.docker.ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{}))
	testenv.Eventually(t, 10*time.Second, func() bool {
		ins, err := e.docker.ContainerExecInspect(ctx, ex.ID)
		return err == nil && !ins.Running && ins.ExitCode == 0
	}, "pkill did not run")

	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "It is swordfish."}})
	got, err := streamed(t, c, user("What is the password?"), conv("c-cli"))
	require.NoError(t, err)
	content := got.Choices[0].Message.Content
	assert.Contains(t, content, "restarted")
	assert.Contains(t, content, "It is swordfish.")
	after := e.containers(t, g.runID)
	require.Len(t, after, 1)
	assert.Equal(t, conts[0].ID, after[0].ID, "the same container")
	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, reqs, "the turn reached the model")
	assert.Contains(t, reqs[len(reqs)-1].AllText(), "The password is swordfish.", "the context was resumed")
}

// TestUpstreamFailures: a stalled, rate-limited or overloaded API gives the
// client a clean end or an OpenAI-shaped error, never a hang.
func TestUpstreamFailures(t *testing.T) {
	e := setup(t)
	g := e.startGatewayWith(t, gatewayOptions{extraApp: "turn_timeout 10s"})
	c := g.client("sk-ant-test-upstream")

	t.Run("stalled stream ends at the turn timeout", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "I will never finish this sentence", ChunkChars: 4, HangAfterDeltas: ptr(2)}})
		start := time.Now()
		got, err := streamed(t, c, user("Start talking."), conv("c-stall"))
		require.NoError(t, err, "a clean end of stream")
		took := time.Since(start)
		content := got.Choices[0].Message.Content
		assert.True(t, strings.HasPrefix(content, "I will n"), content)
		assert.Contains(t, content, "longer than 10s")
		assert.Less(t, took, 60*time.Second, "bounded by the turn timeout and the interrupt grace")
		t.Logf("stalled turn ended after %s", took)

		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Back to normal."}})
		got, err = streamed(t, c, user("Hello?"), conv("c-stall"))
		require.NoError(t, err)
		assert.Contains(t, got.Choices[0].Message.Content, "Back to normal.")
	})

	t.Run("error in the middle of a stream", func(t *testing.T) {
		e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{Stream: ptr(true)},
			Response: anthropictest.Response{Text: "This stream breaks after a while", ChunkChars: 4, StreamErrorAfterDeltas: ptr(2)},
		}}, Default: &anthropictest.Response{Text: "Recovered without streaming."}})
		got, err := streamed(t, c, user("Talk to me."), conv("c-midstream"))
		require.NoError(t, err, "a clean end of stream")
		assert.Contains(t, got.Choices[0].Message.Content, "Recovered without streaming.", "the CLI's non-streaming fallback answered")
	})

	for _, tc := range []struct {
		name   string
		status int
		want   int
	}{
		{"rate limited", 429, http.StatusTooManyRequests},
		{"overloaded", 529, http.StatusServiceUnavailable},
		{"server error", 500, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.script(t, anthropictest.Script{Default: &anthropictest.Response{Error: &anthropictest.ErrorResponse{
				Status: tc.status, Headers: map[string]string{"retry-after": "0"}}}})
			_, err := c.Chat.Completions.New(ctxFor(t, 2*time.Minute), user("Hi."), conv("c-"+strings.ReplaceAll(tc.name, " ", "-")))
			var apiErr *openai.Error
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, tc.want, apiErr.StatusCode)
		})
	}
}
