package e2e

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/cftest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// TestMain runs the package's tests, then stops the Cloudflare Worker
// (wrangler dev) if a test started it: wrangler removes its containers.
func TestMain(m *testing.M) { os.Exit(cftest.Main(m)) }

// cfProvider is the provider's name in the test Caddyfile (its kind).
const cfProvider = "cloudflare"

// cfEnv is the e2e environment with the agcluster Worker beside it, run
// by wrangler dev (the real Workers runtime, Durable Objects and a local
// R2), its agent containers of the agent image on a Docker network of the
// Worker's own, where the mock API is relayed from loopback.
type cfEnv struct {
	*env
	worker  *cftest.Worker
	mockURL string // the mock API as the agents reach it
}

// setupCloudflare starts the e2e environment beside the Worker (started
// once per test binary); when the test ends (after its gateways have shut
// down) no agent container may be left.
func setupCloudflare(t testing.TB) *cfEnv {
	t.Helper()
	return prepareCloudflare(t, setup(t))
}

// prepareCloudflare puts the Worker beside e; see setupCloudflare.
func prepareCloudflare(t testing.TB, e *env) *cfEnv {
	t.Helper()
	w := cftest.Start(t)
	target := strings.TrimPrefix(e.mock.BaseURL, "http://")
	c := &cfEnv{env: e, worker: w, mockURL: "http://" + testenv.Forward(t, w.HostAddr+":0", target)}
	t.Cleanup(func() { c.waitNoContainers(t) })
	return c
}

// cfOptions vary the cloudflare provider block.
type cfOptions struct {
	secret string // the secret Caddy is given ("" = the Worker's)
}

// gateway starts Caddy with the cloudflare provider block: the
// Worker on loopback (plain HTTP: wrangler dev), its secret from Caddy's
// environment.
func (c *cfEnv) gateway(t testing.TB, co cfOptions, o gatewayOptions) *gateway {
	t.Helper()
	o.provider = fmt.Sprintf(`provider cloudflare {
			worker_url %s
			secret {env.AGCLUSTER_WORKER_SECRET}
			env ANTHROPIC_BASE_URL %s
			poll_interval 500ms
		}`, c.worker.URL, c.mockURL)
	o.caddyEnv = append(o.caddyEnv, "AGCLUSTER_WORKER_SECRET="+cmp.Or(co.secret, c.worker.Secret))
	return c.startGatewayWith(t, o)
}

// containers names the Worker's agent containers with their states.
func (c *cfEnv) containers(t testing.TB) map[string]string {
	t.Helper()
	cs, err := c.worker.Containers(context.Background())
	require.NoError(t, err)
	out := map[string]string{}
	for _, ct := range cs {
		out[strings.Join(ct.Names, ",")] = ct.State
	}
	return out
}

// waitNoContainers waits until the Worker has no agent container (a dead
// one goes just after its agent is destroyed).
func (c *cfEnv) waitNoContainers(t testing.TB) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() bool { return len(c.containers(t)) == 0 },
		"agent containers left: %v", c.containers(t))
}

// containerOf is the id of the container serving c's session (empty when
// it has none). The agent's id is the session's: its Durable Object is
// named by it.
func (c *cfEnv) containerOf(conv *conversation) string {
	conv.t.Helper()
	require.NotEmpty(conv.t, conv.sessionID)
	ct, err := c.worker.AgentContainer(context.Background(), cfProvider, conv.sessionID)
	require.NoError(conv.t, err)
	if ct == nil {
		return ""
	}
	return ct.ID
}

// TestCloudflare runs conversations through Caddy on Cloudflare
// Containers (the Worker under wrangler dev): answers streamed and whole,
// a Bash turn in the container, a follow-up in the same container, another
// key in another container, a destroyed conversation leaving no
// container; no API key in anything the Worker stores or logs.
func TestCloudflare(t *testing.T) {
	c := setupCloudflare(t)
	g := c.gateway(t, cfOptions{}, gatewayOptions{})
	alice := &conversation{t: t, key: "sk-ant-test-cf-alice", id: "c-cf"}
	keys := []string{alice.key}

	t.Run("answers streamed and whole", func(t *testing.T) {
		for _, stream := range []bool{true, false} {
			text := fmt.Sprintf("Answered on Cloudflare (stream %v).", stream)
			c.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: text, ChunkChars: 4}})
			got, sum := completeChat(t, g.client(alice.key), user("Hello, Cloudflare."), stream, conv(fmt.Sprintf("c-cf-%v", stream)))
			assert.Equal(t, text, sum.Content)
			assert.Equal(t, "stop", sum.FinishReason)
			assert.Positive(t, got.Usage.CompletionTokens)
		}
		assert.Len(t, c.containers(t), 2, "one container per conversation")
	})

	t.Run("a Bash turn runs in the container", func(t *testing.T) {
		c.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "count to three"},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{
				anthropictest.ToolUse("Bash", map[string]string{"command": "seq 1 3 | tr '\\n' ' '; echo in-$(pwd) as-$(id -un)", "description": "count"}),
			}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "Counted."},
		}}})
		content := alice.say(g, "Please count to three.")
		assert.Contains(t, content, "1 2 3 in-/workspace as-agent", "the command's real output, run in the container's workspace")
		assert.True(t, strings.HasSuffix(strings.TrimSpace(content), "Counted."), content)
		assert.NotEmpty(t, c.containerOf(alice), "the agent's container runs")
		assert.Equal(t, alice.sessionID, alice.session(g).AgentID, "the agent's Durable Object is named by the session id")
	})

	t.Run("a follow-up goes to the same container", func(t *testing.T) {
		before := c.containers(t)
		container := c.containerOf(alice)
		c.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Still here."}})
		assert.Equal(t, "Still here.", alice.say(g, "Are you there?"))
		assert.Equal(t, container, c.containerOf(alice))
		assert.Equal(t, before, c.containers(t), "no new container")
		assert.Contains(t, c.lastCLIRequest(t).AllText(), "Please count to three.", "the CLI's own session carries the earlier turn")
		assert.Equal(t, int64(2), alice.session(g).Turns, "the Bash turn and this one")
	})

	t.Run("another key gets another container", func(t *testing.T) {
		before := len(c.containers(t))
		bob := &conversation{t: t, key: "sk-ant-test-cf-bob", id: alice.id}
		keys = append(keys, bob.key)
		c.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hello Bob."}})
		assert.Equal(t, "Hello Bob.", bob.say(g, "Hi, I am Bob."))
		assert.NotEqual(t, c.containerOf(alice), c.containerOf(bob))
		assert.Len(t, c.containers(t), before+1)
	})

	t.Run("a destroyed conversation leaves no container", func(t *testing.T) {
		dave := &conversation{t: t, key: "sk-ant-test-cf-dave", id: "c-cf-destroy"}
		keys = append(keys, dave.key)
		c.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Bye."}})
		dave.say(g, "Hello, then goodbye.")
		container := c.containerOf(dave)
		require.NotEmpty(t, container)
		del := api{t, g, dave.key}.do(http.MethodDelete, "/api/agents/sessions/"+dave.sessionID, nil, "")
		require.Equal(t, http.StatusOK, del.status, string(del.body))
		_, err := c.docker.ContainerInspect(context.Background(), container)
		assert.Error(t, err, "the container is removed when the conversation is")
		_, err = c.worker.ObjectID(context.Background(), cfProvider, dave.sessionID)
		assert.Error(t, err, "the Worker forgot the agent")
	})

	t.Run("no API key in anything the Worker stores or logs", func(t *testing.T) {
		stored, err := c.worker.Stored()
		require.NoError(t, err)
		require.Contains(t, stored, alice.sessionID, "the Worker's storage and logs were read")
		require.Contains(t, stored, "Please count to three.", "the snapshots' content (the CLI's session) was read too")
		for id := range c.containers(t) {
			stored += testenv.ContainerLogs(c.docker, strings.TrimPrefix(strings.Split(id, ",")[0], "/"))
		}
		for _, key := range keys {
			assert.NotContains(t, stored, key, "a user's key was stored or logged")
		}
		assert.NotContains(t, stored, "sk-ant-", "something like a key was stored or logged")
	})

	g.stop(t)
	c.waitNoContainers(t)
}

// TestCloudflareWrongSecret: a gateway given a secret the Worker does not
// take gets a clear 503 for its client, the detail in its log, and no
// container is made.
func TestCloudflareWrongSecret(t *testing.T) {
	c := setupCloudflare(t)
	const wrong = "not-the-worker-secret-0123456789"
	g := c.gateway(t, cfOptions{secret: wrong}, gatewayOptions{})
	_, err := streamed(t, g.client("sk-ant-test-cf-wrong"), user("Hello?"), conv("c-cf-wrong"))
	apiErr := apiError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, apiErr.StatusCode)
	assert.Contains(t, apiErr.Message, "platform that runs the agents is unreachable or refused the gateway")
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(g.logs.String(), "refused the secret") },
		"the Worker's refusal is not in Caddy's log")
	assert.NotContains(t, g.logs.String(), wrong, "the secret is never logged")
	assert.NotContains(t, g.logs.String(), c.worker.Secret)
	assert.Empty(t, c.containers(t), "no container without the secret")
	assert.Contains(t, c.worker.Logs(), "401 Unauthorized", "the Worker refused it")
}

// TestCloudflareSleepWakeAndRestart: an idle conversation's agent sleeps
// (its disk saved to R2, its container removed: a Cloudflare container's
// disk does not outlive it) and stays asleep across a Caddy restart; the
// next message starts a new container with the disk restored from R2: the
// files and the CLI's context are back. A second restart with the
// container running continues the conversation in it.
func TestCloudflareSleepWakeAndRestart(t *testing.T) {
	c := setupCloudflare(t)
	c.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
	conv := &conversation{t: t, key: "sk-ant-test-cf-sleep", id: "c-cf-sleep"}

	first := c.gateway(t, cfOptions{}, gatewayOptions{keep: true, idle: "2s", extraApp: "retention 0"})
	conv.say(first, "The secret fruit is a quince.")
	put := api{t, first, conv.key}.do(http.MethodPut, "/api/agents/sessions/"+conv.sessionID+"/files/notes.txt", strings.NewReader("quince notes\n"), "text/plain")
	require.Equal(t, http.StatusCreated, put.status, string(put.body))
	before := c.containerOf(conv)
	require.NotEmpty(t, before)
	testenv.Eventually(t, time.Minute, func() bool { return conv.session(first).Status == "sleeping" },
		"the idle conversation did not go to sleep")
	assert.Empty(t, c.containerOf(conv), "asleep, the agent has no container")
	stored, err := c.worker.Stored()
	require.NoError(t, err)
	assert.Contains(t, stored, "workspace/notes.txt", "the workspace is in R2")
	assert.Contains(t, stored, "The secret fruit is a quince.", "and the CLI's session")

	first.stop(t)
	second := c.gateway(t, cfOptions{}, gatewayOptions{keep: true, extraApp: "retention 0"})
	testenv.Eventually(t, 30*time.Second, func() bool { return len(second.adminSessions(t)) == 1 },
		"the restarted gateway did not rediscover the sleeping conversation")
	assert.Equal(t, "sleeping", conv.session(second).Status)
	assert.Empty(t, c.containers(t), "rediscovery does not wake it")

	c.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "The fruit is a quince."}})
	assert.Equal(t, "The fruit is a quince.", conv.say(second, "Which fruit?"), "no note: nothing was lost")
	last := c.lastCLIRequest(t)
	assert.Contains(t, last.AllText(), "The secret fruit is a quince.", "the woken agent kept its context")
	assert.Equal(t, "Which fruit?", last.LastUserText(), "the client's history was not re-sent as a seed")
	woken := c.containerOf(conv)
	assert.NotEmpty(t, woken)
	assert.NotEqual(t, before, woken, "a new container, its disk restored from R2")
	get := api{t, second, conv.key}.do(http.MethodGet, "/api/agents/sessions/"+conv.sessionID+"/files/notes.txt", nil, "")
	require.Equal(t, http.StatusOK, get.status)
	assert.Equal(t, "quince notes\n", string(get.body), "the workspace survived")

	// Caddy restarts while the container runs: the conversation goes on there.
	second.stop(t)
	assert.Equal(t, woken, c.containerOf(conv), "shutdown keep leaves the container running")
	third := c.gateway(t, cfOptions{}, gatewayOptions{})
	testenv.Eventually(t, 30*time.Second, func() bool { return len(third.adminSessions(t)) == 1 },
		"the restarted gateway did not rediscover the running conversation")
	c.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Yes, a quince."}})
	assert.Equal(t, "Yes, a quince.", conv.say(third, "Still a quince?"))
	assert.Contains(t, c.lastCLIRequest(t).AllText(), "Which fruit?")
	assert.Equal(t, woken, c.containerOf(conv), "the same container")
	assert.Len(t, c.containers(t), 1)
	assert.Equal(t, int64(3), conv.session(third).Turns)
}
