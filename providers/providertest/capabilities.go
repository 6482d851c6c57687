package providertest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
)

// sleepKeepsFiles: a file written through the agent's files API is there
// after a sleep and a wake; while asleep the agent is listed as stopped
// and does not answer.
func (s *suite) sleepKeepsFiles(t *testing.T) {
	inst := create(t, s.p, s.o.NewSpec())
	name, content := "notes/kept-"+testenv.RandomHex(4)+".txt", "kept across sleep "+testenv.RandomHex(8)
	putFile(t, inst, name, content)

	asleep := sleep(t, s.p, inst)
	list, err := s.p.List(callCtx(t))
	require.NoError(t, err)
	got := find(list, asleep.ID)
	require.NotNil(t, got, "List lacks the sleeping agent %s", asleep.ID)
	assert.Equal(t, providers.StateStopped, got.State, "State in List")
	assertSame(t, inst, got)
	assert.False(t, answers(inst), "the sleeping agent still answers at %s", inst.URL)

	woken := wake(t, s.p, asleep.ID)
	assertSame(t, inst, woken)
	assert.Equal(t, content, getFile(t, woken, name), "the file after wake")
}

// sleepKeepsSession: a turn after a wake continues the conversation: the
// model's request for it carries the turn before the sleep.
func (s *suite) sleepKeepsSession(t *testing.T) {
	s.needModel(t)
	inst := create(t, s.p, s.o.NewSpec())
	key := fakeKey()
	first := "first-" + testenv.RandomHex(6)
	turn(t, inst, "Remember this word: "+first, key)

	woken := wake(t, s.p, sleep(t, s.p, inst).ID)
	second := "second-" + testenv.RandomHex(6)
	turn(t, woken, "Which word did I ask you to remember? "+second, key)

	reqs := s.requestsWith(t, second)
	require.NotEmpty(t, reqs, "the model received the turn after the wake")
	assert.True(t, strings.Contains(reqs[len(reqs)-1], first),
		"the model's request for the turn after the wake lacks the turn before the sleep (%q): the CLI session was lost", first)
}

// sleepIdempotent: waking a running agent returns it as it is, sleeping a
// sleeping one is not an error, and a second wake is harmless.
func (s *suite) sleepIdempotent(t *testing.T) {
	sl := s.p.(providers.Sleeper)
	inst := create(t, s.p, s.o.NewSpec())

	same := wake(t, s.p, inst.ID)
	assert.Equal(t, inst.ID, same.ID, "waking a running agent keeps it")
	assertSame(t, inst, same)

	asleep := sleep(t, s.p, inst)
	again, err := sl.Sleep(callCtx(t), asleep)
	require.NoError(t, err, "sleeping a sleeping agent")
	keep(t, s.p, again)
	assert.Equal(t, asleep.ID, again.ID, "a second sleep with the same session changes nothing")
	assert.Equal(t, providers.StateStopped, again.State)

	w1 := wake(t, s.p, again.ID)
	w2 := wake(t, s.p, again.ID)
	assert.Equal(t, w1.ID, w2.ID)
	assert.Equal(t, w1.URL, w2.URL, "a second wake leaves the agent where it is")
	_, err = w2.Client().Stats(callCtx(t))
	assert.NoError(t, err)
}

// sleepRebinds: a warm-pool agent handed to a session and then put to
// sleep is recorded with that session, so it is found again by it.
func (s *suite) sleepRebinds(t *testing.T) {
	inst := create(t, s.p, s.poolSpec())
	owner := s.o.NewSpec()
	b := agent.Binding{SessionID: owner.SessionID, Owner: owner.Owner, Conversation: owner.Conversation}
	require.NoError(t, inst.Client().Bind(callCtx(t), b))

	bound := *inst
	bound.SessionID, bound.Owner, bound.Conversation = b.SessionID, b.Owner, b.Conversation
	asleep := sleep(t, s.p, &bound)
	assertSame(t, &bound, asleep)

	list, err := s.p.List(callCtx(t))
	require.NoError(t, err)
	got := find(list, asleep.ID)
	require.NotNil(t, got, "List lacks the slept pool agent %s", asleep.ID)
	assertSame(t, &bound, got)
	if asleep.ID != inst.ID {
		assert.Nil(t, find(list, inst.ID), "the instance replaced by %s is still listed", asleep.ID)
	}
	if _, ok := s.p.(providers.Claimer); !ok {
		// Never named for its session: found by what the sleep recorded.
		found, err := providers.Find(callCtx(t), s.p, b.SessionID)
		require.NoError(t, err, "Find of the slept pool agent's session")
		assert.Equal(t, asleep.ID, found.ID)
		assert.Equal(t, providers.StateStopped, found.State)
	}

	woken := wake(t, s.p, asleep.ID)
	assertSame(t, &bound, woken)
	st, err := woken.Client().Binding(callCtx(t))
	require.NoError(t, err)
	assert.True(t, st.Bound, "the woken agent is still bound")
	if st.Binding != nil {
		assert.Equal(t, b, *st.Binding, "the woken agent's binding")
	}
}

func (s *suite) wakeGone(t *testing.T) {
	inst := create(t, s.p, s.o.NewSpec())
	require.NoError(t, s.p.Destroy(callCtx(t), inst.ID))
	woken, err := s.p.(providers.Sleeper).Wake(callCtx(t), inst.ID)
	if woken != nil {
		keep(t, s.p, woken)
	}
	assert.ErrorIs(t, err, providers.ErrGone)
	assert.Nil(t, woken)
}

// killedWakes: an agent killed behind the provider's back is listed as
// stopped and wakes with its files.
func (s *suite) killedWakes(t *testing.T) {
	s.needKill(t)
	inst := create(t, s.p, s.o.NewSpec())
	name, content := "kept-after-kill.txt", "survives a kill "+testenv.RandomHex(8)
	putFile(t, inst, name, content)
	require.NoError(t, s.o.Kill(callCtx(t), inst.ID))

	s.eventuallyStopped(t, inst.ID)
	woken := wake(t, s.p, inst.ID)
	assertSame(t, inst, woken)
	assert.Equal(t, content, getFile(t, woken, name), "the file after the kill and wake")
}

// killReported: the death of an agent killed behind the provider's back
// is reported with its instance id.
func (s *suite) killReported(t *testing.T) {
	s.needKill(t)
	ctx := callCtx(t)
	events, errs := s.p.(providers.Watcher).Events(ctx)
	inst := create(t, s.p, s.o.NewSpec())
	require.NoError(t, s.o.Kill(ctx, inst.ID))

	seen := waitEvent(t, events, errs, func(ev providers.Event) bool {
		return ev.InstanceID == inst.ID && ev.Reason == providers.ReasonDied
	})
	ev := seen[len(seen)-1]
	if ev.SessionID != "" {
		assert.Equal(t, inst.SessionID, ev.SessionID, "SessionID")
	}
	assert.False(t, ev.Time.IsZero(), "Time")
}

// sleepNotDied: putting an agent to sleep is not reported as a death.
// Killing a second agent afterwards marks the end of what to look at.
func (s *suite) sleepNotDied(t *testing.T) {
	if _, ok := s.p.(providers.Sleeper); !ok {
		t.Skipf("%s provider %q cannot sleep", s.p.Kind(), s.p.Name())
	}
	s.needKill(t)
	ctx := callCtx(t)
	events, errs := s.p.(providers.Watcher).Events(ctx)
	a := create(t, s.p, s.o.NewSpec())
	b := create(t, s.p, s.o.NewSpec())
	asleep := sleep(t, s.p, a)
	require.NoError(t, s.o.Kill(ctx, b.ID))

	seen := waitEvent(t, events, errs, func(ev providers.Event) bool {
		return ev.InstanceID == b.ID && ev.Reason == providers.ReasonDied
	})
	for _, ev := range seen {
		if ev.InstanceID == a.ID || ev.InstanceID == asleep.ID {
			assert.NotEqual(t, providers.ReasonDied, ev.Reason, "the sleep was reported as a death: %+v", ev)
		}
	}
}

func (s *suite) eventsEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	events, errs := s.p.(providers.Watcher).Events(ctx)
	cancel()
	bound := time.NewTimer(CallTimeout)
	defer bound.Stop()
	for events != nil || errs != nil {
		select {
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		case _, ok := <-errs:
			if !ok {
				errs = nil
			}
		case <-bound.C:
			t.Fatalf("the event channels were not closed within %s of the context's end", CallTimeout)
		}
	}
}

// eventuallyStopped waits until List reports the instance as stopped.
func (s *suite) eventuallyStopped(t *testing.T, id string) {
	t.Helper()
	testenv.Eventually(t, CallTimeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		list, err := s.p.List(ctx)
		if err != nil {
			return false
		}
		got := find(list, id)
		return got != nil && got.State == providers.StateStopped
	}, "List never reported %s as stopped", id)
}

func (s *suite) needModel(t *testing.T) {
	t.Helper()
	if s.o.ModelRequests == nil {
		t.Skip("no Options.ModelRequests: the agents have no model to run a turn with")
	}
}

func (s *suite) needKill(t *testing.T) {
	t.Helper()
	if s.o.Kill == nil {
		t.Skip("no Options.Kill: cannot kill an agent behind the provider's back")
	}
}

// requestsWith returns the bodies of the model requests holding text, in
// order.
func (s *suite) requestsWith(t *testing.T, text string) []string {
	t.Helper()
	all, err := s.o.ModelRequests(callCtx(t))
	require.NoError(t, err, "ModelRequests")
	var out []string
	for _, r := range all {
		if strings.Contains(r, text) {
			out = append(out, r)
		}
	}
	return out
}
