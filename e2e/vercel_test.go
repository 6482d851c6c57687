package e2e

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/internal/vercelemu"
)

// The Vercel project, team and token the emulator accepts. Caddy reads the
// token from its environment, as the README tells operators to.
const (
	vercelProject = "prj_e2e"
	vercelTeam    = "team_e2e"
	vercelToken   = "vercel-e2e-token-secret"
)

// vercelEnv is the e2e environment with the Vercel Sandbox emulator
// beside it: its API and route proxy on loopback, its sandboxes
// containers of the plain base image (no agent: the provider installs it)
// on the test network with the mock API.
type vercelEnv struct {
	*env
	emu                       *vercelemu.Emulator
	agentBinary, claudeBinary string
}

// setupVercel starts the e2e environment and the emulator; when the test
// ends (after its gateways have shut down) no agent sandbox may be left,
// and once the emulator closes, none of its containers and images.
func setupVercel(t testing.TB) *vercelEnv {
	t.Helper()
	return startVercelEmulator(t, setup(t))
}

// startVercelEmulator starts the emulator beside e; see setupVercel.
func startVercelEmulator(t testing.TB, e *env) *vercelEnv {
	t.Helper()
	testenv.RequireImage(t, e.docker, testenv.BaseImage())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emu, err := vercelemu.New(ctx, vercelemu.Options{
		Token: vercelToken, TeamID: vercelTeam, Projects: []string{vercelProject}, Image: testenv.BaseImage(),
		Network: e.network, Docker: e.docker, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	v := &vercelEnv{env: e, emu: emu, agentBinary: testenv.GoBinary(t, "./agent/cmd/agcluster-agent"), claudeBinary: testenv.ClaudeBin(t)}
	t.Cleanup(func() {
		assert.Empty(t, v.agents(), "agent sandboxes left after the gateways shut down")
		assert.NoError(t, emu.Close())
		f := filters.NewArgs(filters.Arg("label", vercelemu.LabelEmulator+"="+emu.ID()))
		left, err := e.docker.ContainerList(context.Background(), container.ListOptions{All: true, Filters: f})
		assert.NoError(t, err)
		assert.Empty(t, left, "the emulator's containers outlived it")
		imgs, err := e.docker.ImageList(context.Background(), image.ListOptions{Filters: f})
		assert.NoError(t, err)
		assert.Empty(t, imgs, "the emulator's snapshot images outlived it")
	})
	return v
}

// agents are the agent sandboxes by name with their status: every
// sandbox but the one the agent snapshot was prepared in.
func (v *vercelEnv) agents() map[string]string {
	out := v.emu.Sandboxes()
	for name := range out {
		if strings.HasPrefix(name, "agcluster-snapshot-") {
			delete(out, name)
		}
	}
	return out
}

// vercelOptions vary the vercel provider block.
type vercelOptions struct {
	token        string // the token Caddy is given ("" = the emulator's)
	project      string // the project ("" = the emulator's)
	timeout      string // the sandboxes' timeout ("" = 10m)
	pollInterval string // how often statuses are listed ("" = 500ms)
}

// gateway starts Caddy with the vercel provider block: the
// emulator's API, the binaries to prepare the snapshot from, agents
// reached at their routes (plain HTTP: tests only).
func (v *vercelEnv) gateway(t testing.TB, vo vercelOptions, o gatewayOptions) *gateway {
	t.Helper()
	o.provider = fmt.Sprintf(`provider vercel {
			token {env.VERCEL_TOKEN}
			project_id %s
			team_id %s
			api_url %s
			agent_binary %s
			claude_binary %s
			vcpus 1
			timeout %s
			env ANTHROPIC_BASE_URL http://%s:8080
			poll_interval %s
		}`, cmp.Or(vo.project, vercelProject), vercelTeam, v.emu.APIURL(), v.agentBinary, v.claudeBinary,
		cmp.Or(vo.timeout, "10m"), testenv.MockAlias, cmp.Or(vo.pollInterval, "500ms"))
	o.caddyEnv = append(o.caddyEnv, "VERCEL_TOKEN="+cmp.Or(vo.token, vercelToken))
	return v.startGatewayWith(t, o)
}

// sandboxOf is the name of the sandbox serving c's session.
func (v *vercelEnv) sandboxOf(c *conversation, g *gateway) string {
	c.t.Helper()
	id := c.session(g).AgentID
	require.NotEmpty(c.t, id)
	return id
}

// waitNoAgents waits until every agent sandbox is deleted.
func (v *vercelEnv) waitNoAgents(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() bool { return len(v.agents()) == 0 }, "agent sandboxes left: %v", v.agents())
}

// TestVercel runs conversations through Caddy on Vercel Sandboxes (the
// emulator): the first prepares the agent snapshot; answers streamed and
// whole, a Bash turn in the sandbox, a client function's round trip, a
// follow-up in the same sandbox, another key in another sandbox, 429s
// waited out; no API key ever reaches the Sandbox API, and nothing is
// left once Caddy stops.
func TestVercel(t *testing.T) {
	v := setupVercel(t)
	g := v.gateway(t, vercelOptions{}, gatewayOptions{})
	alice := &conversation{t: t, key: "sk-ant-test-vercel-alice", id: "c-vercel"}
	keys := []string{alice.key}

	t.Run("answers streamed and whole", func(t *testing.T) {
		assertAnswers(t, v.env, g, alice.key, "Vercel")
		assert.Len(t, v.agents(), 2, "one sandbox per conversation")
		assert.Equal(t, 1, v.emu.Calls()[vercelemu.RouteSnapshot], "the agent snapshot was prepared once")
		assert.Contains(t, g.logs.String(), "preparing the vercel agent snapshot", "the preparation is in Caddy's log")
	})

	t.Run("a Bash turn runs in the sandbox", func(t *testing.T) {
		content := bashTurn(t, v.env, g, alice, "echo in-$(pwd)")
		assert.Contains(t, content, "1 2 3 in-/vercel/sandbox/workspace", "run in the sandbox's workspace")
		assert.Equal(t, "running", v.emu.Status(v.sandboxOf(alice, g)))
	})

	t.Run("a client function's round trip", func(t *testing.T) {
		v.script(t, weatherScript())
		rt := goToolRoundTrip(t, g.client(alice.key), true, conv("c-vercel-tools"))
		assertToolRoundTrip(t, v.env, rt, true)
	})

	t.Run("a follow-up goes to the same sandbox", func(t *testing.T) {
		before := len(v.agents())
		sandbox := v.sandboxOf(alice, g)
		v.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Still here."}})
		assert.Equal(t, "Still here.", alice.say(g, "Are you there?"))
		assert.Equal(t, sandbox, v.sandboxOf(alice, g))
		assert.Len(t, v.agents(), before, "no new sandbox")
		assert.Contains(t, v.lastCLIRequest(t).AllText(), "Please count to three.", "the CLI's own session carries the earlier turn")
		assert.Equal(t, int64(2), alice.session(g).Turns, "the Bash turn and this one")
	})

	t.Run("another key gets another sandbox", func(t *testing.T) {
		before := len(v.agents())
		bob := &conversation{t: t, key: "sk-ant-test-vercel-bob", id: alice.id}
		keys = append(keys, bob.key)
		v.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hello Bob."}})
		assert.Equal(t, "Hello Bob.", bob.say(g, "Hi, I am Bob."))
		assert.NotEqual(t, v.sandboxOf(alice, g), v.sandboxOf(bob, g))
		assert.Len(t, v.agents(), before+1)
	})

	t.Run("429s are waited out", func(t *testing.T) {
		since := time.Now()
		v.emu.Throttle(3)
		carol := &conversation{t: t, key: "sk-ant-test-vercel-carol", id: "c-vercel-429"}
		keys = append(keys, carol.key)
		v.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hi Carol."}})
		assert.Equal(t, "Hi Carol.", carol.say(g, "Hi."))
		limited := 0
		for _, r := range v.emu.Requests() {
			if r.Time.After(since) && r.Status == http.StatusTooManyRequests {
				limited++
			}
		}
		assert.Equal(t, 3, limited, "the Sandbox API answered 429 three times")
	})

	t.Run("no API key reached the Sandbox API", func(t *testing.T) {
		reqs := v.emu.Requests()
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			seen := fmt.Sprintf("%s %s %v %s", r.Method, r.URI, r.Header, r.Body)
			for _, key := range keys {
				assert.NotContains(t, seen, key, "%s carried a user's key", r.Route)
			}
			assert.NotContains(t, seen, "sk-ant-", "%s carried something like a key", r.Route)
		}
	})

	g.stop(t)
	assert.Empty(t, v.agents(), "Caddy's shutdown deletes its sandboxes")
}

// TestVercelSleepWakeAndRestart: runSleepWakeAndRestart on Vercel: asleep
// is a stopped (persistent) sandbox, woken by a resume and a new agent
// command; three gateways share one agent snapshot and one upload.
func TestVercelSleepWakeAndRestart(t *testing.T) {
	v := setupVercel(t)
	status := func(want string) func(*testing.T, string) bool {
		return func(_ *testing.T, name string) bool { return v.emu.Status(name) == want }
	}
	third := runSleepWakeAndRestart(t, v.env, sleepScenario{
		start:  func(t *testing.T, o gatewayOptions) *gateway { return v.gateway(t, vercelOptions{}, o) },
		asleep: status("stopped"),
		awake:  status("running"),
	}, &conversation{t: t, key: "sk-ant-test-vercel-sleep", id: "c-vercel-sleep"})
	assert.Len(t, v.agents(), 1)
	assert.Equal(t, 1, v.emu.Calls()[vercelemu.RouteSnapshot], "three gateways, one agent snapshot")
	assert.Equal(t, 1, v.emu.Calls()[vercelemu.RouteWrite], "the binaries were uploaded once")
	third.stop(t)
	v.waitNoAgents(t)
}

// TestVercelTimeLimit: a sandbox that Vercel stops by its time limit in
// the middle of a conversation is a conversation that went to sleep, not
// one that died: the next message resumes the same sandbox, with its
// files and context. Both ways the gateway can learn of the stop are
// covered: the provider's poll (the session is marked asleep first) and
// the next turn finding the sandbox's route answering 410 before any poll.
func TestVercelTimeLimit(t *testing.T) {
	for _, tc := range []struct {
		name, poll string
		noticed    bool // the poll reports the stop before the next message
	}{
		{"noticed by the poll", "500ms", true},
		{"found by the next turn", "1h", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := setupVercel(t)
			g := v.gateway(t, vercelOptions{pollInterval: tc.poll}, gatewayOptions{})
			v.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
			c := &conversation{t: t, key: "sk-ant-test-vercel-limit", id: "c-vercel-limit"}
			c.say(g, "The secret number is 4711.")
			put := api{t, g, c.key}.do(http.MethodPut, "/api/agents/sessions/"+c.sessionID+"/files/n.txt", strings.NewReader("4711\n"), "text/plain")
			require.Equal(t, http.StatusCreated, put.status, string(put.body))
			sandbox := v.sandboxOf(c, g)

			require.NoError(t, v.emu.Expire(ctxFor(t, time.Minute), sandbox))
			if tc.noticed {
				testenv.Eventually(t, 30*time.Second, func() bool { return c.session(g).Status == "sleeping" },
					"the expired sandbox's conversation was not marked asleep")
				assert.Contains(t, g.logs.String(), `"reason":"expired"`, "the stop is reported as an expiry")
			}

			v.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "It is 4711."}})
			assert.Equal(t, "It is 4711.", c.say(g, "Which number?"), "no note: nothing was lost")
			last := v.lastCLIRequest(t)
			assert.Contains(t, last.AllText(), "The secret number is 4711.", "the resumed agent kept its context")
			assert.Equal(t, "Which number?", last.LastUserText())
			assert.Equal(t, sandbox, v.sandboxOf(c, g), "the same sandbox resumed")
			assert.Equal(t, "running", v.emu.Status(sandbox))
			assert.Len(t, v.agents(), 1)
			get := api{t, g, c.key}.do(http.MethodGet, "/api/agents/sessions/"+c.sessionID+"/files/n.txt", nil, "")
			require.Equal(t, http.StatusOK, get.status)
			assert.Equal(t, "4711\n", string(get.body), "the workspace survived")
			assert.NotContains(t, g.logs.String(), "starting over in a new agent", "the conversation was not started over")
			if !tc.noticed {
				assert.Contains(t, g.logs.String(), "session agent unreachable; waking it", "the turn found the route answering for a stopped sandbox")
			}
		})
	}
}

// TestVercelAPIErrors: what Vercel refuses (the token, the project) is a
// clear 503 for the client, with no detail; the detail is in Caddy's log.
func TestVercelAPIErrors(t *testing.T) {
	v := setupVercel(t)
	for _, tt := range []struct {
		name    string
		vo      vercelOptions
		message string
		logged  string
	}{
		{"a token Vercel refuses", vercelOptions{token: "wrong-vercel-token-secret"},
			"platform that runs the agents is unreachable or refused the gateway", "refused the token"},
		{"a project that does not exist", vercelOptions{project: "prj_missing"},
			"platform that runs the agents is unreachable or refused the gateway", `Vercel project \"prj_missing\" not found`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := v.gateway(t, tt.vo, gatewayOptions{})
			_, err := streamed(t, g.client("sk-ant-test-vercel-errors"), user("Hello?"), conv("c-vercel-errors"))
			apiErr := apiError(t, err)
			assert.Equal(t, http.StatusServiceUnavailable, apiErr.StatusCode)
			assert.Contains(t, apiErr.Message, tt.message)
			assert.NotContains(t, strings.ToLower(apiErr.Message), "vercel")
			testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(g.logs.String(), tt.logged) },
				"the detail %q is not in Caddy's log", tt.logged)
			assert.NotContains(t, g.logs.String(), "wrong-vercel-token-secret", "the token is never logged")
			assert.Empty(t, v.emu.Sandboxes())
		})
	}
}

// TestVercelFleetWarmPool: two gateways with warm pools on Vercel, which
// cannot rename a sandbox: a conversation started on a warm sandbox
// through one gateway is found by the other through the sandbox's binding
// (it keeps its pool name until it first sleeps) and goes on there, in
// the same sandbox with its context.
func TestVercelFleetWarmPool(t *testing.T) {
	v := setupVercel(t)
	o := gatewayOptions{extraApp: "warm_pool agent 1\n\t\twarm_pool_check_interval 1s"}
	gs := []*gateway{v.gateway(t, vercelOptions{}, o)}
	gs[0].waitPool(t, "agent", 1)
	gs = append(gs, v.gateway(t, vercelOptions{}, o))
	gs[1].waitPool(t, "agent", 1)
	v.script(t, heronScript())
	c := &conversation{t: t, key: "sk-ant-test-vercel-fleet-pool", id: "c-vercel-fleet-pool"}

	a1 := c.send(gs[0], history("The code word is heron."))
	sandbox := v.sandboxOf(c, gs[0])
	assert.True(t, strings.HasPrefix(sandbox, "agc-pool-"), "served by a warm sandbox: %s", sandbox)
	c.send(gs[1], history("The code word is heron.", a1, "Which word?"))
	assertContinued(t, v.env, "Which word?")
	assert.Equal(t, sandbox, v.sandboxOf(c, gs[1]), "the other gateway found the warm sandbox by its binding")
}

// TestVercelFleet: two gateways with the same vercel provider block share
// the project's sandboxes: a conversation continued through the other
// gateway is served by its sandbox (named for the session), and the same
// new conversation sent to both at once makes one sandbox (Vercel refuses
// a taken name).
func TestVercelFleet(t *testing.T) {
	v := setupVercel(t)
	gs := [2]*gateway{v.gateway(t, vercelOptions{}, gatewayOptions{}), v.gateway(t, vercelOptions{}, gatewayOptions{})}
	fleetSteps(t, v.env, gs, true, func() int { return len(v.agents()) })
}
