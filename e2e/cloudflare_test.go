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
	return c.agentContainer(conv.t, conv.sessionID)
}

// agentContainer is the id of the container of the agent with id (empty
// when it has none).
func (c *cfEnv) agentContainer(t *testing.T, id string) string {
	t.Helper()
	ct, err := c.worker.AgentContainer(context.Background(), cfProvider, id)
	require.NoError(t, err)
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
		assertAnswers(t, c.env, g, alice.key, "Cloudflare")
		assert.Len(t, c.containers(t), 2, "one container per conversation")
	})

	t.Run("a Bash turn runs in the container", func(t *testing.T) {
		content := bashTurn(t, c.env, g, alice, "echo in-$(pwd) as-$(id -un)")
		assert.Contains(t, content, "1 2 3 in-/workspace as-agent", "run in the container's workspace")
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

// TestCloudflareSleepWakeAndRestart: runSleepWakeAndRestart on
// Cloudflare: asleep, the agent has no container (the Worker saved its disk
// to R2 and stopped it); a wake starts a new container with the disk
// restored; the restart with the container running keeps that one.
func TestCloudflareSleepWakeAndRestart(t *testing.T) {
	c := setupCloudflare(t)
	runSleepWakeAndRestart(t, c.env, sleepScenario{
		start:       func(t *testing.T, o gatewayOptions) *gateway { return c.gateway(t, cfOptions{}, o) },
		asleep:      func(t *testing.T, id string) bool { return c.agentContainer(t, id) == "" },
		awake:       func(t *testing.T, id string) bool { return c.agentContainer(t, id) != "" },
		incarnation: c.agentContainer,
	}, &conversation{t: t, key: "sk-ant-test-cf-sleep", id: "c-cf-sleep"})
	assert.Len(t, c.containers(t), 1)
	stored, err := c.worker.Stored()
	require.NoError(t, err)
	assert.Contains(t, stored, "workspace/notes.txt", "the workspace is in R2")
	assert.Contains(t, stored, "The secret fruit is a quince.", "and the CLI's session")
}

// TestCloudflareFleet: two gateways with the same cloudflare provider
// block share the Worker's agents: a conversation continued through the
// other gateway is served by its container (its Durable Object is named by
// the session), and the same new conversation sent to both at once makes
// one agent (the Durable Object refuses a second create).
func TestCloudflareFleet(t *testing.T) {
	c := setupCloudflare(t)
	gs := [2]*gateway{c.gateway(t, cfOptions{}, gatewayOptions{}), c.gateway(t, cfOptions{}, gatewayOptions{})}
	fleetSteps(t, c.env, gs, true, func() int { return len(c.containers(t)) })
}
