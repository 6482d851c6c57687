package e2e

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/flyemu"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// The Fly app and API token the emulator accepts. Caddy reads the token
// from its environment, as the README tells operators to.
const (
	flyApp   = "agents"
	flyToken = "fly-e2e-token-secret"
)

// flyEnv is the e2e environment with the Fly emulator beside it: its
// Machines API and proxy on loopback, its machines containers of the real
// agent image on the test network with the mock API. Fly's documented
// rate limits are on.
type flyEnv struct {
	*env
	emu *flyemu.Emulator
}

// setupFly starts the e2e environment and the emulator; when the test ends
// (after its gateways have shut down) no machine may be left.
func setupFly(t testing.TB) *flyEnv {
	t.Helper()
	e := setup(t)
	return &flyEnv{env: e, emu: startFlyEmulator(t, e)}
}

// startFlyEmulator starts the emulator on e's network; see setupFly.
func startFlyEmulator(t testing.TB, e *env) *flyemu.Emulator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emu, err := flyemu.New(ctx, flyemu.Options{
		Token: flyToken, Apps: []string{flyApp}, Network: e.network, Docker: e.docker,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.Empty(t, emu.Machines(), "machines left after the gateways shut down")
		assert.NoError(t, emu.Close())
	})
	return emu
}

// waitNoMachines waits until every machine is destroyed.
func (f *flyEnv) waitNoMachines(t testing.TB) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() bool { return len(f.emu.Machines()) == 0 }, "machines left: %v", f.emu.Machines())
}

// flyOptions vary the fly provider block.
type flyOptions struct {
	private bool   // reach agents at their private address
	token   string // the API token Caddy is given ("" = the emulator's)
	image   string // the agent image ("" = the local agent image)
}

// gateway starts Caddy with the fly provider block: agents reached
// through the emulator's proxy (plain HTTP: tests only), or at their
// private address.
func (f *flyEnv) gateway(t testing.TB, fo flyOptions, o gatewayOptions) *gateway {
	t.Helper()
	reach := "public_url " + f.emu.ProxyURL()
	if fo.private {
		reach = "private"
	}
	o.provider = fmt.Sprintf(`provider fly {
			app %s
			token {env.FLY_API_TOKEN}
			image %s
			api_url %s
			%s
			memory 1g
			env ANTHROPIC_BASE_URL http://%s:8080
			poll_interval 500ms
		}`, flyApp, cmp.Or(fo.image, testenv.AgentImage()), f.emu.APIURL(), reach, testenv.MockAlias)
	o.caddyEnv = append(o.caddyEnv, "FLY_API_TOKEN="+cmp.Or(fo.token, flyToken))
	return f.startGatewayWith(t, o)
}

// machineOf is the id of the machine serving c's session.
func (f *flyEnv) machineOf(c *conversation, g *gateway) string {
	c.t.Helper()
	id := c.session(g).AgentID
	require.NotEmpty(c.t, id)
	return id
}

// TestFly runs conversations through Caddy on Fly Machines (the
// emulator): answers streamed and whole, a Bash turn on the machine, a
// follow-up on the same machine, another key on another machine, a
// machine lost behind the gateway's back, and Fly's rate limits absorbed;
// no API key ever reaches the Machines API.
func TestFly(t *testing.T) {
	f := setupFly(t)
	g := f.gateway(t, flyOptions{}, gatewayOptions{})
	alice := &conversation{t: t, key: "sk-ant-test-fly-alice", id: "c-fly"}
	keys := []string{alice.key}

	t.Run("answers streamed and whole", func(t *testing.T) {
		assertAnswers(t, f.env, g, alice.key, "Fly")
		assert.Len(t, f.emu.Machines(), 2, "one machine per conversation")
	})

	t.Run("a Bash turn runs on the machine", func(t *testing.T) {
		content := bashTurn(t, f.env, g, alice, "echo on-$(hostname)")
		machine := f.machineOf(alice, g)
		assert.Contains(t, content, "1 2 3 on-", "run on a machine")
		assert.Equal(t, "started", f.emu.State(machine))
	})

	t.Run("a follow-up goes to the same machine", func(t *testing.T) {
		before := len(f.emu.Machines())
		machine := f.machineOf(alice, g)
		f.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Still here."}})
		assert.Equal(t, "Still here.", alice.say(g, "Are you there?"))
		assert.Equal(t, machine, f.machineOf(alice, g))
		assert.Len(t, f.emu.Machines(), before, "no new machine")
		last := f.lastCLIRequest(t)
		assert.Contains(t, last.AllText(), "Please count to three.", "the CLI's own session carries the earlier turn")
		assert.Equal(t, int64(2), alice.session(g).Turns, "the Bash turn and this one")
	})

	t.Run("another key gets another machine", func(t *testing.T) {
		before := len(f.emu.Machines())
		bob := &conversation{t: t, key: "sk-ant-test-fly-bob", id: alice.id}
		keys = append(keys, bob.key)
		f.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hello Bob."}})
		assert.Equal(t, "Hello Bob.", bob.say(g, "Hi, I am Bob."))
		assert.NotEqual(t, f.machineOf(alice, g), f.machineOf(bob, g))
		assert.Len(t, f.emu.Machines(), before+1)
	})

	t.Run("a machine destroyed behind the gateway's back is replaced", func(t *testing.T) {
		carol := &conversation{t: t, key: "sk-ant-test-fly-carol", id: "c-fly-lost"}
		keys = append(keys, carol.key)
		f.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
		first := carol.say(g, "Remember the number 4711.")
		lost := f.machineOf(carol, g)
		require.NoError(t, f.emu.DestroyBehindBack(ctxFor(t, time.Minute), lost))

		content := carol.send(g, chatRequest([]openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("Remember the number 4711."),
			openai.AssistantMessage(first),
			openai.UserMessage("Which number?"),
		}))
		assert.Contains(t, content, "replaced", "the answer says the agent was replaced")
		assert.Contains(t, f.lastCLIRequest(t).AllText(), "Remember the number 4711.", "the history reached the model as context")
		now := f.machineOf(carol, g)
		assert.NotEqual(t, lost, now)
		assert.NotContains(t, f.emu.Machines(), lost)
		assert.Equal(t, "started", f.emu.State(now))
	})

	t.Run("Fly's rate limits are absorbed", func(t *testing.T) {
		// Five conversations at once: more creates than Fly's burst allows.
		since := time.Now()
		f.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hi."}})
		const n = 5
		var wg sync.WaitGroup
		errs := make([]error, n)
		sessions := make([]string, n)
		for i := range n {
			key := fmt.Sprintf("sk-ant-test-fly-burst-%d", i)
			keys = append(keys, key)
			wg.Go(func() {
				var resp *http.Response
				client := g.client(key)
				_, errs[i] = client.Chat.Completions.New(ctxFor(t, 3*time.Minute), user("Hi."), conv("c-burst"), option.WithResponseInto(&resp))
				if resp != nil {
					sessions[i] = resp.Header.Get("X-Session-ID")
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			assert.NoError(t, err, "conversation %d", i)
		}
		limited := 0
		for _, r := range f.emu.Requests() {
			if r.Time.After(since) && r.Status == http.StatusTooManyRequests {
				limited++
			}
		}
		assert.Positive(t, limited, "the Machines API answered some calls with 429")
		for i, id := range sessions {
			del := api{t, g, fmt.Sprintf("sk-ant-test-fly-burst-%d", i)}.do(http.MethodDelete, "/api/agents/sessions/"+id, nil, "")
			assert.Equal(t, http.StatusOK, del.status, string(del.body))
		}
	})

	t.Run("no API key reached the Machines API", func(t *testing.T) {
		reqs := f.emu.Requests()
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			seen := fmt.Sprintf("%s %v %s", r.Route, r.Header, r.Body)
			for _, key := range keys {
				assert.NotContains(t, seen, key, "%s carried a user's key", r.Route)
			}
			assert.NotContains(t, seen, "sk-ant-", "%s carried something like a key", r.Route)
		}
	})
}

// TestFlySleepWakeAndRestart: runSleepWakeAndRestart on Fly: asleep is a
// suspended Machine, woken by the resume.
func TestFlySleepWakeAndRestart(t *testing.T) {
	f := setupFly(t)
	state := func(want string) func(*testing.T, string) bool {
		return func(_ *testing.T, id string) bool { return f.emu.State(id) == want }
	}
	runSleepWakeAndRestart(t, f.env, sleepScenario{
		start:  func(t *testing.T, o gatewayOptions) *gateway { return f.gateway(t, flyOptions{}, o) },
		asleep: state("suspended"),
		awake:  state("started"),
	}, &conversation{t: t, key: "sk-ant-test-fly-sleep", id: "c-fly-sleep"})
	assert.Len(t, f.emu.Machines(), 1)
}

// TestFlyPrivate: with private, Caddy reaches agents at their private
// address, never through the proxy.
func TestFlyPrivate(t *testing.T) {
	f := setupFly(t)
	g := f.gateway(t, flyOptions{private: true}, gatewayOptions{})
	f.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Privately answered."}})
	c := &conversation{t: t, key: "sk-ant-test-fly-private", id: "c-fly-private"}
	assert.Equal(t, "Privately answered.", c.say(g, "Hello?"))
	assert.Equal(t, "Privately answered.", c.say(g, "Again?"))
	machine := f.machineOf(c, g)
	assert.Zero(t, f.emu.ProxiedRequests()[machine], "nothing went through Fly's proxy")
	assert.Len(t, f.emu.Machines(), 1)
}

// TestFlyAPIErrors: what Fly refuses (the token, the app, the image) is a
// clear 503 for the client, with the request id and no detail; the detail
// is in Caddy's log.
func TestFlyAPIErrors(t *testing.T) {
	f := setupFly(t)
	tests := []struct {
		name    string
		fo      flyOptions
		message string
		logged  string
	}{
		{"a token Fly refuses", flyOptions{token: "wrong-fly-token-secret"},
			"platform that runs the agents is unreachable or refused the gateway", "refused the token"},
		{"an image Fly cannot pull", flyOptions{image: "agcluster/no-such-image:missing"},
			"agent image cannot be found", "cannot pull image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := f.gateway(t, tt.fo, gatewayOptions{})
			_, err := streamed(t, g.client("sk-ant-test-fly-errors"), user("Hello?"), conv("c-fly-errors"))
			apiErr := apiError(t, err)
			assert.Equal(t, http.StatusServiceUnavailable, apiErr.StatusCode)
			assert.Contains(t, apiErr.Message, tt.message)
			assert.NotContains(t, apiErr.Message, "fly")
			testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(g.logs.String(), tt.logged) },
				"the detail %q is not in Caddy's log", tt.logged)
			assert.NotContains(t, g.logs.String(), "wrong-fly-token-secret", "the token is never logged")
			assert.Empty(t, f.emu.Machines())
		})
	}
}

// TestFlyFleet: two gateways with the same fly provider block share the
// app's Machines: a conversation continued through the other gateway is
// served by its Machine, found by its session's metadata, with its
// context. (Fly does not document Machine names as unique: the
// simultaneous first message is not covered there.)
func TestFlyFleet(t *testing.T) {
	f := setupFly(t)
	gs := [2]*gateway{f.gateway(t, flyOptions{}, gatewayOptions{}), f.gateway(t, flyOptions{}, gatewayOptions{})}
	fleetSteps(t, f.env, gs, false, func() int { return len(f.emu.Machines()) })
}
