package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// conversation is one chat through a gateway: it keeps the session id
// the gateway answered with.
type conversation struct {
	t         *testing.T
	key, id   string
	sessionID string
}

// say runs a turn in the conversation on g and returns the answer.
func (c *conversation) say(g *gateway, text string) string {
	c.t.Helper()
	return c.send(g, user(text))
}

// send runs a turn with the messages of params and returns the answer.
func (c *conversation) send(g *gateway, params openai.ChatCompletionNewParams) string {
	c.t.Helper()
	var resp *http.Response
	got, err := streamed(c.t, g.client(c.key), params, conv(c.id), option.WithResponseInto(&resp))
	require.NoError(c.t, err)
	c.sessionID = resp.Header.Get("X-Session-ID")
	require.NotEmpty(c.t, c.sessionID)
	return got.Choices[0].Message.Content
}

// session is the conversation's session as the management API shows it.
func (c *conversation) session(g *gateway) agentsapi.SessionView {
	c.t.Helper()
	r := api{c.t, g, c.key}.do(http.MethodGet, "/api/agents/sessions/"+c.sessionID, nil, "")
	require.Equal(c.t, http.StatusOK, r.status, string(r.body))
	var v agentsapi.SessionView
	r.json(c.t, &v)
	return v
}

// running reports whether the container with id runs.
func (e *env) running(t testing.TB, id string) bool {
	t.Helper()
	info, err := e.docker.ContainerInspect(context.Background(), id)
	require.NoError(t, err)
	return info.State != nil && info.State.Running
}

// lastRequest is the last request the mock API received.
func (e *env) lastRequest(t testing.TB) anthropictest.RecordedRequest {
	t.Helper()
	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, reqs)
	return reqs[len(reqs)-1]
}

// TestSleepWakeAndRetention: an idle conversation's agent sleeps (its
// container stopped, its volumes kept), stays asleep across a Caddy
// restart, wakes on the next message with its files and its context (the
// CLI resumes its session: the API request carries the earlier turn, and
// the client's history is not re-sent as a seed), and is removed with its
// workspace once it has slept longer than the retention.
func TestSleepWakeAndRetention(t *testing.T) {
	e := setup(t)
	runID := testenv.RandomHex(6)
	t.Cleanup(func() { e.forceRemove(runID) })
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
	c := &conversation{t: t, key: "sk-ant-test-sleep", id: "c-sleep"}

	first := e.startGatewayWith(t, gatewayOptions{keep: true, runID: runID, idle: "2s", extraApp: "retention 0"})
	c.say(first, "The secret fruit is a quince.")
	files := api{t, first, c.key}
	put := files.do(http.MethodPut, "/api/agents/sessions/"+c.sessionID+"/files/notes.txt", strings.NewReader("quince notes\n"), "text/plain")
	require.Equal(t, http.StatusCreated, put.status, string(put.body))
	conts := e.containers(t, runID)
	require.Len(t, conts, 1)
	agentID := conts[0].ID

	testenv.Eventually(t, time.Minute, func() bool { return !e.running(t, agentID) },
		"the idle agent's container was not stopped")
	assert.Len(t, e.volumes(t, runID), 2, "workspace and CLI state volumes are kept")
	assert.Equal(t, "sleeping", c.session(first).Status)

	// Caddy restarts: the conversation is found asleep and stays asleep.
	first.stop(t)
	second := e.startGatewayWith(t, gatewayOptions{keep: true, runID: runID, idle: "30m", extraApp: "retention 0"})
	testenv.Eventually(t, 30*time.Second, func() bool { return len(second.adminSessions(t)) == 1 },
		"the restarted gateway did not rediscover the sleeping conversation")
	assert.Equal(t, "sleeping", c.session(second).Status)
	assert.False(t, e.running(t, agentID), "rediscovery does not wake it")
	providersReply := api{t, second, c.key}.do(http.MethodGet, "/api/providers", nil, "")
	require.Equal(t, http.StatusOK, providersReply.status)
	assert.Contains(t, string(providersReply.body), `"sleeping":1`)

	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "The fruit is a quince."}})
	answer := c.say(second, "Which fruit?")
	assert.Equal(t, "The fruit is a quince.", answer, "no note: nothing was lost")
	last := e.lastRequest(t)
	assert.Contains(t, last.AllText(), "The secret fruit is a quince.", "the woken CLI resumed its session")
	assert.Equal(t, "Which fruit?", last.LastUserText(), "the client's history was not re-sent as a seed")
	after := e.containers(t, runID)
	require.Len(t, after, 1)
	assert.Equal(t, agentID, after[0].ID, "the same container woke")
	assert.True(t, e.running(t, agentID))
	get := api{t, second, c.key}.do(http.MethodGet, "/api/agents/sessions/"+c.sessionID+"/files/notes.txt", nil, "")
	require.Equal(t, http.StatusOK, get.status)
	assert.Equal(t, "quince notes\n", string(get.body), "the workspace survived")
	assert.Equal(t, int64(2), c.session(second).Turns)

	// Asleep again, then past the retention: removed with its volumes.
	second.stop(t)
	third := e.startGatewayWith(t, gatewayOptions{keep: true, runID: runID, idle: "1s", extraApp: "retention 1s"})
	testenv.Eventually(t, 2*time.Minute, func() bool {
		return len(e.containers(t, runID)) == 0 && len(e.volumes(t, runID)) == 0
	}, "the conversation was not removed after the retention")
	assert.Empty(t, third.adminSessions(t))
}

// TestAgentStoppedBehindTheGatewaysBack: an agent stopped without the
// gateway asking (docker stop, a kill of the whole container, as an OOM
// kill does) is woken by the next message with the same files and
// context; only an agent whose workspace is really gone is replaced, with
// the client's history and a note.
func TestAgentStoppedBehindTheGatewaysBack(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	tests := []struct {
		name     string
		stop     func(t *testing.T, id string)
		replaced bool
	}{
		{"docker stop", func(t *testing.T, id string) {
			require.NoError(t, e.docker.ContainerStop(context.Background(), id, container.StopOptions{}))
		}, false},
		{"killed", func(t *testing.T, id string) {
			require.NoError(t, e.docker.ContainerKill(context.Background(), id, "KILL"))
		}, false},
		{"container and volumes removed", func(t *testing.T, id string) {
			ctx := context.Background()
			info, err := e.docker.ContainerInspect(ctx, id)
			require.NoError(t, err)
			require.NoError(t, e.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}))
			for _, m := range info.Mounts {
				require.NoError(t, e.docker.VolumeRemove(ctx, m.Name, true))
			}
		}, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
			c := &conversation{t: t, key: "sk-ant-test-behind-" + string(rune('a'+i)), id: "c-behind"}
			first := c.say(g, "Remember the number 4711.")
			files := api{t, g, c.key}
			put := files.do(http.MethodPut, "/api/agents/sessions/"+c.sessionID+"/files/n.txt", strings.NewReader("4711"), "text/plain")
			require.Equal(t, http.StatusCreated, put.status, string(put.body))
			id := c.session(g).AgentID
			tt.stop(t, id)

			next := openai.ChatCompletionNewParams{Model: "agent", Messages: []openai.ChatCompletionMessageParamUnion{
				openai.UserMessage("Remember the number 4711."),
				openai.AssistantMessage(first),
				openai.UserMessage("Which number?"),
			}}
			content := c.send(g, next)
			last := e.lastRequest(t)
			assert.Contains(t, last.AllText(), "Remember the number 4711.", "the context reached the model")
			read := files.do(http.MethodGet, "/api/agents/sessions/"+c.sessionID+"/files/n.txt", nil, "")
			if tt.replaced {
				assert.Contains(t, content, "replaced", "the answer says the agent was replaced")
				assert.NotEqual(t, id, c.session(g).AgentID)
				assert.Equal(t, http.StatusNotFound, read.status, "the file went with the workspace")
				return
			}
			assert.NotContains(t, content, "replaced")
			assert.Equal(t, "Which number?", last.LastUserText(), "woken, not re-seeded")
			assert.Equal(t, id, c.session(g).AgentID, "the same container")
			assert.Equal(t, http.StatusOK, read.status)
			assert.Equal(t, "4711", string(read.body))
		})
	}
}

// TestMaxConversations: sleeping conversations count toward
// max_conversations (and its per-owner form) but not toward max_sessions.
func TestMaxConversations(t *testing.T) {
	e := setup(t)
	g := e.startGatewayWith(t, gatewayOptions{idle: "1s", maxSessions: "1", extraApp: "max_conversations 3\n\t\tmax_conversations_per_owner 2"})
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hi."}})
	asleep := func(n int) {
		testenv.Eventually(t, time.Minute, func() bool {
			running := 0
			for _, c := range e.containers(t, g.runID) {
				if c.State == container.StateRunning {
					running++
				}
			}
			return running == 0 && len(e.containers(t, g.runID)) == n
		}, "the conversations did not fall asleep")
	}
	alice := func(id string) *conversation { return &conversation{t: t, key: "sk-ant-test-max-alice", id: id} }
	alice("a1").say(g, "Hi.")
	asleep(1)
	alice("a2").say(g, "Hi.") // max_sessions 1 counts only the live agent
	asleep(2)

	_, err := streamed(t, g.client("sk-ant-test-max-alice"), user("Hi."), conv("a3"))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
	assert.Contains(t, apiErr.Message, "conversations")

	(&conversation{t: t, key: "sk-ant-test-max-bob", id: "b1"}).say(g, "Hi.")
	asleep(3)
	_, err = streamed(t, g.client("sk-ant-test-max-carol"), user("Hi."), conv("c1"))
	require.ErrorAs(t, err, &apiErr, "the gateway's cap of 3 conversations is reached")
	assert.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
}
