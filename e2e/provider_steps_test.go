package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// The steps every platform provider's end-to-end tests take, each
// provider giving its own view of its agents.

// assertAnswers runs one new conversation answered as a stream and one as
// a whole completion on g, each in its own agent.
func assertAnswers(t *testing.T, e *env, g *gateway, key, platform string) {
	t.Helper()
	for _, stream := range []bool{true, false} {
		text := fmt.Sprintf("Answered on %s (stream %v).", platform, stream)
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: text, ChunkChars: 4}})
		got, sum := completeChat(t, g.client(key), user("Hello, "+platform+"."), stream, conv(fmt.Sprintf("c-%s-%v", platform, stream)))
		assert.Equal(t, text, sum.Content)
		assert.Equal(t, "stop", sum.FinishReason)
		assert.Positive(t, got.Usage.CompletionTokens)
	}
}

// bashTurn runs a turn in which the model has Bash run "seq 1 3" then
// command, and answers "Counted."; it returns the answer, which must end so
// and show the real output.
func bashTurn(t *testing.T, e *env, g *gateway, c *conversation, command string) string {
	t.Helper()
	e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match: anthropictest.Match{LastUserTextContains: "count to three"},
		Response: anthropictest.Response{Blocks: []anthropictest.Block{
			anthropictest.ToolUse("Bash", map[string]string{"command": "seq 1 3 | tr '\\n' ' '; " + command, "description": "count"}),
		}},
	}, {
		Match:    anthropictest.Match{HasToolResult: ptr(true)},
		Response: anthropictest.Response{Text: "Counted."},
	}}})
	content := c.say(g, "Please count to three.")
	assert.Contains(t, content, "1 2 3 ", "the command's real output is in the answer")
	assert.True(t, strings.HasSuffix(strings.TrimSpace(content), "Counted."), content)
	return content
}

// sleepScenario is a platform's part in runSleepWakeAndRestart.
type sleepScenario struct {
	// start starts a gateway with the platform's provider block.
	start func(t *testing.T, o gatewayOptions) *gateway
	// asleep and awake tell, from the platform's own view, whether the
	// agent with this id sleeps (suspended, stopped, its pod gone) or runs.
	asleep, awake func(t *testing.T, agentID string) bool
	// incarnation, if set, names what runs the agent now (a pod's UID), to
	// tell that a restart kept the very same one.
	incarnation func(t *testing.T, agentID string) string
}

// runSleepWakeAndRestart: an idle conversation's agent goes to sleep
// (idle_timeout 2s) and stays asleep across a Caddy restart (shutdown
// keep); the next message wakes the same agent with its file and its
// context (the CLI resumes its session: the model request has the first
// turn, and the client's history is not re-sent as a seed). A second
// restart with the agent running continues the conversation there. It
// returns the last gateway, still running.
func runSleepWakeAndRestart(t *testing.T, e *env, sc sleepScenario, c *conversation) *gateway {
	t.Helper()
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
	first := sc.start(t, gatewayOptions{keep: true, idle: "2s", extraApp: "retention 0"})
	c.say(first, "The secret fruit is a quince.")
	put := api{t, first, c.key}.do(http.MethodPut, "/api/agents/sessions/"+c.sessionID+"/files/notes.txt", strings.NewReader("quince notes\n"), "text/plain")
	require.Equal(t, http.StatusCreated, put.status, string(put.body))
	agentID := c.session(first).AgentID
	testenv.Eventually(t, 2*time.Minute, func() bool { return c.session(first).Status == "sleeping" && sc.asleep(t, agentID) },
		"the idle conversation's agent did not go to sleep")

	first.stop(t)
	second := sc.start(t, gatewayOptions{keep: true, extraApp: "retention 0"})
	testenv.Eventually(t, 30*time.Second, func() bool { return len(second.adminSessions(t)) == 1 },
		"the restarted gateway did not rediscover the sleeping conversation")
	assert.Equal(t, "sleeping", c.session(second).Status)
	assert.True(t, sc.asleep(t, agentID), "rediscovery does not wake it")

	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "The fruit is a quince."}})
	assert.Equal(t, "The fruit is a quince.", c.say(second, "Which fruit?"), "no note: nothing was lost")
	last := e.lastCLIRequest(t)
	assert.Contains(t, last.AllText(), "The secret fruit is a quince.", "the woken agent kept its context")
	assert.Equal(t, "Which fruit?", last.LastUserText(), "the client's history was not re-sent as a seed")
	assert.Equal(t, agentID, c.session(second).AgentID, "the same agent woke")
	assert.True(t, sc.awake(t, agentID))
	get := api{t, second, c.key}.do(http.MethodGet, "/api/agents/sessions/"+c.sessionID+"/files/notes.txt", nil, "")
	require.Equal(t, http.StatusOK, get.status)
	assert.Equal(t, "quince notes\n", string(get.body), "the workspace survived")

	second.stop(t)
	assert.True(t, sc.awake(t, agentID), "shutdown keep leaves the agent running")
	var running string
	if sc.incarnation != nil {
		running = sc.incarnation(t, agentID)
	}
	third := sc.start(t, gatewayOptions{})
	testenv.Eventually(t, 30*time.Second, func() bool { return len(third.adminSessions(t)) == 1 },
		"the restarted gateway did not rediscover the running conversation")
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Yes, a quince."}})
	assert.Equal(t, "Yes, a quince.", c.say(third, "Still a quince?"))
	assert.Contains(t, e.lastCLIRequest(t).AllText(), "Which fruit?")
	assert.Equal(t, agentID, c.session(third).AgentID, "the same agent")
	if sc.incarnation != nil {
		assert.Equal(t, running, sc.incarnation(t, agentID), "still the same one")
	}
	assert.Equal(t, int64(3), c.session(third).Turns)
	return third
}

// fleetSteps runs, on two gateways with the same provider block, what
// gateways sharing a fleet rely on: a conversation continued through the
// other gateway in its one agent, with its context; and, where the
// platform's names are unique (unique), the same new conversation sent
// to both at the same instant making one agent, at most one request told
// it is busy. agents counts the platform's agents.
func fleetSteps(t *testing.T, e *env, gs [2]*gateway, unique bool, agents func() int) {
	t.Helper()
	e.script(t, heronScript())
	c := &conversation{t: t, key: "sk-ant-test-fleet-steps", id: "c-fleet-steps"}
	a1 := c.send(gs[0], history("The code word is heron."))
	first := c.sessionID
	c.send(gs[1], history("The code word is heron.", a1, "Which word?"))
	assert.Equal(t, first, c.sessionID, "the same session on the other gateway")
	assertContinued(t, e, "Which word?")
	assert.Equal(t, 1, agents(), "one agent served both gateways")
	if !unique {
		return
	}

	start := make(chan struct{})
	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for i, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			client := g.client(c.key)
			_, errs[i] = client.Chat.Completions.New(ctxFor(t, 5*time.Minute), user("Race!"), conv("c-fleet-steps-race"))
		}()
	}
	close(start)
	wg.Wait()
	busy := 0
	for _, err := range errs {
		var apiErr *openai.Error
		switch {
		case err == nil:
		case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusConflict:
			busy++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	assert.LessOrEqual(t, busy, 1, "at most one request is refused as busy")
	assert.Equal(t, 2, agents(), "the simultaneous new conversation has one agent")
}
