package e2e

import (
	"context"
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

	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// startFleet starts n gateways with identical configuration on one Docker
// engine, as operators run several behind a load balancer: sessions
// outlive each gateway (shutdown keep), and whatever the run made is
// removed when the test ends.
func (e *env) startFleet(t *testing.T, n int, o gatewayOptions) []*gateway {
	t.Helper()
	o.keep = true
	if o.runID == "" {
		o.runID = testenv.RandomHex(6)
	}
	runID := o.runID
	t.Cleanup(func() { e.forceRemove(runID) }) // after every gateway stopped
	gs := make([]*gateway, n)
	for i := range gs {
		gs[i] = e.startGatewayWith(t, o)
	}
	return gs
}

// sessionContainers lists the run's containers that serve a session (not
// warm-pool agents waiting to be handed out), by name.
func (e *env) sessionContainers(t testing.TB, runID string) []string {
	var names []string
	for _, c := range e.containers(t, runID) {
		for _, n := range c.Names {
			if strings.HasPrefix(n, "/agcluster-docker-sess_") {
				names = append(names, n)
			}
		}
	}
	return names
}

// history builds a chat's messages: user and assistant texts alternating,
// starting with the user.
func history(texts ...string) openai.ChatCompletionNewParams {
	msgs := make([]openai.ChatCompletionMessageParamUnion, len(texts))
	for i, text := range texts {
		if i%2 == 0 {
			msgs[i] = openai.UserMessage(text)
		} else {
			msgs[i] = openai.AssistantMessage(text)
		}
	}
	return chatRequest(msgs)
}

// heronScript answers the first turn of a conversation about a code word,
// and every later turn from what the agent's context holds.
func heronScript() anthropictest.Script {
	return anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "code word is heron"},
		Response: anthropictest.Response{Text: "Heron, noted."},
		Times:    anthropictest.Unlimited,
	}}, Default: &anthropictest.Response{Text: "The code word was heron."}}
}

// assertContinued checks that the model's last request came from the
// conversation's own agent: the first turn in its context and only the
// new message as the user's text (the history was not re-sent as a seed).
func assertContinued(t *testing.T, e *env, newMessage string) {
	t.Helper()
	last := e.lastCLIRequest(t)
	assert.Contains(t, last.AllText(), "The code word is heron.", "the earlier turn is in the agent's context")
	assert.Equal(t, newMessage, last.LastUserText(), "the agent was not re-seeded with the history")
}

// TestFleetContinuesOnAnotherGateway: three gateways with identical
// configuration and no store of their own; each turn of a conversation
// lands on another of them and is served by the conversation's one agent,
// with its context; every gateway lists the session.
func TestFleetContinuesOnAnotherGateway(t *testing.T) {
	e := setup(t)
	gs := e.startFleet(t, 3, gatewayOptions{})
	e.script(t, heronScript())
	c := &conversation{t: t, key: "sk-ant-test-fleet", id: "c-fleet"}

	a1 := c.send(gs[0], history("The code word is heron."))
	first := c.sessionID
	a2 := c.send(gs[1], history("The code word is heron.", a1, "Which word?"))
	assert.Equal(t, first, c.sessionID, "the same session on the second gateway")
	assertContinued(t, e, "Which word?")
	c.send(gs[2], history("The code word is heron.", a1, "Which word?", a2, "Once more?"))
	assert.Equal(t, first, c.sessionID, "and on the third")
	assertContinued(t, e, "Once more?")
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 1, "one agent served the three gateways")

	for i, g := range gs {
		r := api{t, g, c.key}.do(http.MethodGet, "/api/agents/sessions", nil, "")
		require.Equal(t, http.StatusOK, r.status)
		var list struct{ Sessions []agentsapi.SessionView }
		r.json(t, &list)
		require.Len(t, list.Sessions, 1, "gateway %d lists the fleet's session", i)
		assert.Equal(t, first, list.Sessions[0].SessionID)
	}
}

// TestFleetSimultaneousFirstMessage: the same new conversation sent to
// two gateways at the same instant makes exactly one agent; at most one of
// the two requests is told the conversation is busy.
func TestFleetSimultaneousFirstMessage(t *testing.T) {
	e := setup(t)
	gs := e.startFleet(t, 2, gatewayOptions{})
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "One agent answers."}})
	for round := range 3 {
		id := fmt.Sprintf("c-race-%d", round)
		go1 := make(chan struct{})
		errs := make([]error, len(gs))
		var wg sync.WaitGroup
		for i, g := range gs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-go1
				c := g.client("sk-ant-test-race")
				_, errs[i] = c.Chat.Completions.New(ctxFor(t, 3*time.Minute), user("Race!"), conv(id))
			}()
		}
		close(go1)
		wg.Wait()
		busy := 0
		for _, err := range errs {
			var apiErr *openai.Error
			switch {
			case err == nil:
			case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusConflict:
				busy++
			default:
				t.Errorf("round %d: unexpected error: %v", round, err)
			}
		}
		assert.LessOrEqual(t, busy, 1, "round %d: at most one request is refused as busy", round)
		assert.Len(t, e.sessionContainers(t, gs[0].runID), round+1, "round %d: one agent per conversation", round)
	}
}

// TestFleetGatewayKilledMidTurn: a gateway killed (SIGKILL) while it
// streams a turn ends its client's stream; the conversation goes on through
// another gateway, in the same agent, with its context.
func TestFleetGatewayKilledMidTurn(t *testing.T) {
	e := setup(t)
	gs := e.startFleet(t, 2, gatewayOptions{})
	e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "code word is heron"},
		Response: anthropictest.Response{Text: strings.Repeat("Heron. ", 60), ChunkChars: 7, ChunkDelayMS: 100},
	}}, Default: &anthropictest.Response{Text: "The code word was heron."}})
	c := &conversation{t: t, key: "sk-ant-test-killed", id: "c-killed"}

	client0 := gs[0].client(c.key)
	s := client0.Chat.Completions.NewStreaming(ctxFor(t, 2*time.Minute), user("The code word is heron. Tell me a long story."), conv(c.id))
	for s.Next() && len(s.Current().Choices) > 0 && s.Current().Choices[0].Delta.Content == "" {
	} // the answer streams: the model is answering the turn
	require.NoError(t, s.Err())
	require.NoError(t, gs[0].cmd.Process.Kill())
	_ = gs[0].cmd.Wait()
	gs[0].stopped = true
	for s.Next() {
	}
	require.Error(t, s.Err(), "the client's stream ends with an error")

	// The agent's turn ends once its gateway is gone; until then the
	// conversation is busy.
	var answer *openai.ChatCompletion
	testenv.Eventually(t, 2*time.Minute, func() bool {
		var err error
		client1 := gs[1].client(c.key)
		answer, err = client1.Chat.Completions.New(ctxFor(t, 2*time.Minute),
			history("The code word is heron. Tell me a long story.", "Heron.", "Which word?"), conv(c.id))
		var apiErr *openai.Error
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusConflict {
			return false
		}
		require.NoError(t, err)
		return true
	}, "the conversation stayed busy after its gateway died")
	assert.Equal(t, "The code word was heron.", answer.Choices[0].Message.Content)
	assert.Contains(t, e.lastCLIRequest(t).AllText(), "code word is heron", "the same agent, with its context")
	assert.Len(t, e.sessionContainers(t, gs[1].runID), 1)
}

// TestFleetSleepAndWake: two gateways that both served a conversation;
// once it has been idle for both, one of them puts its agent to sleep (the
// agent grants one claim), and a message through the other wakes it with
// its context.
func TestFleetSleepAndWake(t *testing.T) {
	e := setup(t)
	gs := e.startFleet(t, 2, gatewayOptions{idle: "2s"})
	e.script(t, heronScript())
	c := &conversation{t: t, key: "sk-ant-test-fleet-sleep", id: "c-fleet-sleep"}
	a1 := c.send(gs[0], history("The code word is heron."))
	c.send(gs[1], history("The code word is heron.", a1, "Which word?"))
	names := e.sessionContainers(t, gs[0].runID)
	require.Len(t, names, 1)
	id := strings.TrimPrefix(names[0], "/")

	testenv.Eventually(t, 2*time.Minute, func() bool { return !e.running(t, id) }, "the idle agent was not put to sleep")
	// Each gateway's reaper runs every half second: give the other one
	// time to have tried.
	testenv.Eventually(t, time.Minute, func() bool {
		return strings.Contains(gs[0].logs.String(), "session asleep") || strings.Contains(gs[1].logs.String(), "session asleep")
	}, "no gateway logged the sleep")
	sleeper, other := gs[0], gs[1]
	if !strings.Contains(gs[0].logs.String(), "session asleep") {
		sleeper, other = gs[1], gs[0]
	}
	assert.Equal(t, 1, strings.Count(sleeper.logs.String(), `"session asleep"`), "put to sleep once")
	assert.NotContains(t, other.logs.String(), `"session asleep"`, "by one gateway")

	e.script(t, heronScript())
	c.send(other, history("The code word is heron.", a1, "Which word?", "The code word was heron.", "Still there?"))
	assertContinued(t, e, "Still there?")
	assert.True(t, e.running(t, id), "the same agent woke")
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 1)
}

// TestFleetWarmPool: two gateways with warm pools on one engine: a warm
// agent is handed out once (its binding is made once, and its session's
// name is claimed once); a conversation started from the pool on one
// gateway continues in the same agent on the other; the same new
// conversation on both at once still makes one agent.
func TestFleetWarmPool(t *testing.T) {
	e := setup(t)
	o := gatewayOptions{extraApp: "warm_pool agent 1\n\t\twarm_pool_check_interval 1s"}
	gs := e.startFleet(t, 2, o)
	for _, g := range gs {
		g.waitPool(t, "agent", 1)
	}
	e.script(t, heronScript())
	c := &conversation{t: t, key: "sk-ant-test-fleet-pool", id: "c-fleet-pool"}
	a1 := c.send(gs[0], history("The code word is heron."))
	c.send(gs[1], history("The code word is heron.", a1, "Which word?"))
	assertContinued(t, e, "Which word?")
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 1, "one agent for the conversation")

	// Both gateways' pools may hold the same warm agents (a gateway takes
	// in what it finds at start): a second hand-out of one is refused by
	// the agent, and the gateway takes another.
	for i, g := range gs {
		other := &conversation{t: t, key: c.key, id: fmt.Sprintf("c-fleet-pool-%d", i)}
		other.send(g, history("The code word is heron."))
	}
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 3, "three conversations, three agents")

	go1 := make(chan struct{})
	var wg sync.WaitGroup
	for _, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-go1
			client := g.client(c.key)
			_, _ = client.Chat.Completions.New(ctxFor(t, 3*time.Minute), history("The code word is heron."), conv("c-fleet-pool-race"))
		}()
	}
	close(go1)
	wg.Wait()
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 4, "the simultaneous conversation has one agent")
	for _, name := range e.sessionContainers(t, gs[0].runID) {
		info, err := e.docker.ContainerInspect(context.Background(), strings.TrimPrefix(name, "/"))
		require.NoError(t, err)
		assert.True(t, info.State.Running, "%s runs", name)
	}
}

// TestFleetFingerprint: a client that sends no conversation id (only its
// history) continues its conversation through any gateway: how the
// conversation opened names it, and its transcript is kept with the agent.
// A client that names the conversation from its second message on
// (LibreChat) is bound to it on the gateway it reaches; a new chat that
// opens the same way gets an agent of its own.
func TestFleetFingerprint(t *testing.T) {
	e := setup(t)
	gs := e.startFleet(t, 2, gatewayOptions{})
	e.script(t, heronScript())
	key := "sk-ant-test-fleet-fp"
	var first, second, third, named, fresh string
	c0, c1 := gs[0].client(key), gs[1].client(key)

	a1, err := c0.Chat.Completions.New(ctxFor(t, 2*time.Minute), history("The code word is heron."), sessionInto(&first))
	require.NoError(t, err)
	t1 := a1.Choices[0].Message.Content
	a2, err := c1.Chat.Completions.New(ctxFor(t, 2*time.Minute), history("The code word is heron.", t1, "Which word?"), sessionInto(&second))
	require.NoError(t, err)
	assert.Equal(t, first, second, "the other gateway found the conversation by its history")
	assertContinued(t, e, "Which word?")
	t2 := a2.Choices[0].Message.Content

	_, err = c0.Chat.Completions.New(ctxFor(t, 2*time.Minute), history("The code word is heron.", t1, "Which word?", t2, "Sure?"), sessionInto(&third))
	require.NoError(t, err)
	assert.Equal(t, first, third)
	assertContinued(t, e, "Sure?")

	_, err = c1.Chat.Completions.New(ctxFor(t, 2*time.Minute),
		history("The code word is heron.", t1, "Which word?", t2, "Sure?", "The code word was heron.", "Named now."),
		conv("lc-fleet-1"), sessionInto(&named))
	require.NoError(t, err)
	assert.Equal(t, first, named, "a conversation id sent from a later message is bound to the conversation")
	assertContinued(t, e, "Named now.")
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 1)

	_, err = c1.Chat.Completions.New(ctxFor(t, 2*time.Minute), history("The code word is heron."), sessionInto(&fresh))
	require.NoError(t, err)
	assert.NotEqual(t, first, fresh, "a new chat that opens the same way is another conversation")
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 2)
}

// TestFleetClientTools: the client's function call made through one
// gateway is answered through another: the turn that waits for the result
// goes on in the same agent (the calls it waits for are kept with the
// agent, not in the first gateway's memory).
func TestFleetClientTools(t *testing.T) {
	e := setup(t)
	gs := e.startFleet(t, 2, gatewayOptions{})
	e.script(t, weatherScript())
	const key = "sk-ant-test-fleet-tools"
	rt := goToolRoundTripVia(t, gs[0].client(key), gs[1].client(key), true, conv("c-fleet-tools"))
	assertToolRoundTrip(t, e, rt, true)
	assert.Len(t, e.sessionContainers(t, gs[0].runID), 1)
}
