// Package providertest is the conformance suite every provider must pass,
// checked through the agents' real HTTP API: creating a ready agent with a
// token of its own, listing (also from a new provider value, as after a
// restart), destroying idempotently, refusing a cancelled create, keeping
// out of another provider's agents, and each optional capability
// ([providers.Sleeper], [providers.Watcher], [providers.Expirer],
// [providers.Pinger], [providers.Finder], [providers.Claimer]), and what
// gateways sharing one fleet rely on (a session's agent found by its id).
//
// Like rclone's fstests, every subtest that needs a capability the
// provider lacks, or a hook the caller did not give in [Options], skips
// with the reason, so one suite serves every backend. The suite imports no
// backend: hooks reach behind the provider's back.
//
// It is a test library: call [Run] from a provider's tests.
package providertest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
)

// CallTimeout bounds each provider call the suite makes, and each wait
// for an event.
const CallTimeout = 3 * time.Minute

// Options give the suite what it cannot get from the provider itself.
// Only NewSpec is required; a nil hook skips the subtests that need it.
type Options struct {
	// NewSpec returns a valid Spec for a fresh session: a new SessionID,
	// Owner and Conversation on every call.
	NewSpec func() providers.Spec

	// Reopen returns a new provider value with the same configuration (and
	// name), as a restarted control plane makes it; the caller closes it
	// when the test ends.
	Reopen func(t *testing.T) providers.Provider

	// Other is a provider with another name on the same backend: neither
	// may see, destroy, sleep or wake the other's agents.
	Other providers.Provider

	// Kill kills the agent behind the provider's back, as a crash or the
	// host's out-of-memory killer would, leaving its workspace.
	Kill func(ctx context.Context, id string) error

	// Stored returns, as text, everything the backend keeps about the
	// instance: labels or metadata, environment, configuration, and the
	// content of its state storage where the backend can read it.
	Stored func(ctx context.Context, id string) (string, error)

	// ModelRequests returns the bodies of the Messages API requests the
	// agents' model endpoint (a mock) has received so far, in order. Nil
	// means the agents have no model to talk to: subtests that run a turn
	// skip.
	ModelRequests func(ctx context.Context) ([]string, error)
}

// Run runs the conformance suite against p. Every subtest removes what it
// creates, even when it fails.
func Run(t *testing.T, p providers.Provider, o Options) {
	t.Helper()
	require.NotNil(t, o.NewSpec, "providertest.Options.NewSpec is required")
	s := &suite{p: p, o: o}

	t.Run("name and kind", s.nameAndKind)
	t.Run("create returns a ready instance matching the spec", s.createReady)
	t.Run("ready means a turn can start", s.readyTurn)
	t.Run("the token is required", s.tokenRequired)
	t.Run("two creates give distinct instances and tokens", s.distinct)
	t.Run("list has created instances and not destroyed ones", s.list)
	t.Run("a warm-pool instance is listed with its pool and no session", s.poolListed)
	t.Run("destroy removes the instance and is idempotent", s.destroy)
	t.Run("destroy of an unknown id is not an error", s.destroyUnknown)
	t.Run("create with a cancelled context fails and leaves nothing", s.createCancelled)
	t.Run("a new provider value finds existing agents", s.reopen)
	t.Run("another provider's agents are out of reach", s.other)
	t.Run("nothing stored holds the API key", s.noKeyStored)
	t.Run("a session's agent is found by its session id", s.findBySession)
	t.Run("a second agent for one session is refused", s.secondCreateRefused)
	t.Run("a warm agent is claimed for a session once", s.claimOnce)

	t.Run("sleep", func(t *testing.T) {
		if _, ok := p.(providers.Sleeper); !ok {
			t.Skipf("%s provider %q cannot sleep", p.Kind(), p.Name())
		}
		t.Run("sleep then wake keeps the workspace", s.sleepKeepsFiles)
		t.Run("sleep then wake keeps the CLI session", s.sleepKeepsSession)
		t.Run("sleep and wake are idempotent", s.sleepIdempotent)
		t.Run("sleep records the session of a warm-pool agent", s.sleepRebinds)
		t.Run("wake of a destroyed agent is ErrGone", s.wakeGone)
		t.Run("a killed agent can be woken with its files", s.killedWakes)
	})
	t.Run("events", func(t *testing.T) {
		if _, ok := p.(providers.Watcher); !ok {
			t.Skipf("%s provider %q reports no events", p.Kind(), p.Name())
		}
		t.Run("a killed agent is reported as died", s.killReported)
		t.Run("a sleep is not reported as a death", s.sleepNotDied)
		t.Run("the stream ends with its context", s.eventsEnd)
	})
	t.Run("expiry", func(t *testing.T) {
		if _, ok := p.(providers.Expirer); !ok {
			t.Skipf("%s provider %q has no expiry", p.Kind(), p.Name())
		}
		t.Run("expiry is in the future and extension is allowed or unsupported", s.expiry)
	})
	t.Run("ping", func(t *testing.T) {
		if _, ok := p.(providers.Pinger); !ok {
			t.Skipf("%s provider %q cannot be pinged", p.Kind(), p.Name())
		}
		t.Run("the backend answers", s.ping)
	})
}

// suite holds the provider under test and the caller's hooks.
type suite struct {
	p providers.Provider
	o Options
}

func (s *suite) nameAndKind(t *testing.T) {
	assert.NotEmpty(t, s.p.Name(), "Name")
	assert.NotEmpty(t, s.p.Kind(), "Kind")
}

func (s *suite) createReady(t *testing.T) {
	spec := s.o.NewSpec()
	inst := create(t, s.p, spec)
	assert.NotEmpty(t, inst.ID, "ID")
	assert.Equal(t, s.p.Name(), inst.Provider, "Provider")
	assert.Equal(t, spec.SessionID, inst.SessionID, "SessionID")
	assert.Equal(t, spec.Owner, inst.Owner, "Owner")
	assert.Equal(t, spec.ConfigID, inst.ConfigID, "ConfigID")
	assert.Equal(t, spec.Conversation, inst.Conversation, "Conversation")
	assert.Equal(t, providers.StateRunning, inst.State, "State")
	assert.NotEmpty(t, inst.URL, "URL")
	assert.NotEmpty(t, inst.Token, "Token")
	assert.False(t, inst.CreatedAt.IsZero(), "CreatedAt")

	h, status, err := inst.Client().Health(callCtx(t))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "ready", h.Status)
}

func (s *suite) readyTurn(t *testing.T) {
	s.needModel(t)
	inst := create(t, s.p, s.o.NewSpec())
	marker := "ready-" + testenv.RandomHex(6)
	turn(t, inst, "Say hello: "+marker, fakeKey())
	assert.NotEmpty(t, s.requestsWith(t, marker), "the model received the turn's prompt")
}

func (s *suite) tokenRequired(t *testing.T) {
	inst := create(t, s.p, s.o.NewSpec())
	ctx := callCtx(t)

	_, err := (&agentclient.Client{BaseURL: inst.URL, Header: inst.Header}).Stats(ctx)
	var apiErr *agentclient.APIError
	require.ErrorAs(t, err, &apiErr, "GET /stats without a token")
	assert.Equal(t, http.StatusUnauthorized, apiErr.Status)

	_, err = (&agentclient.Client{BaseURL: inst.URL, Header: inst.Header, Token: inst.Token + "x"}).Stats(ctx)
	require.ErrorAs(t, err, &apiErr, "GET /stats with a wrong token")
	assert.Equal(t, http.StatusUnauthorized, apiErr.Status)

	_, err = inst.Client().Stats(ctx)
	assert.NoError(t, err, "GET /stats with the token")
}

func (s *suite) distinct(t *testing.T) {
	a := create(t, s.p, s.o.NewSpec())
	b := create(t, s.p, s.o.NewSpec())
	assert.NotEqual(t, a.ID, b.ID, "IDs")
	assert.NotEqual(t, a.Token, b.Token, "tokens")
	_, err := (&agentclient.Client{BaseURL: b.URL, Header: b.Header, Token: a.Token}).Stats(callCtx(t))
	assert.Error(t, err, "one agent's token does not open another")
}

func (s *suite) list(t *testing.T) {
	kept := create(t, s.p, s.o.NewSpec())
	gone := create(t, s.p, s.o.NewSpec())
	require.NoError(t, s.p.Destroy(callCtx(t), gone.ID))

	list, err := s.p.List(callCtx(t))
	require.NoError(t, err)
	got := find(list, kept.ID)
	require.NotNil(t, got, "List lacks created instance %s", kept.ID)
	assertSame(t, kept, got)
	assert.Equal(t, providers.StateRunning, got.State, "State")
	assert.Equal(t, kept.URL, got.URL, "URL")
	assert.Equal(t, kept.Token, got.Token, "Token")
	assert.Nil(t, find(list, gone.ID), "List has destroyed instance %s", gone.ID)
}

func (s *suite) poolListed(t *testing.T) {
	spec := s.poolSpec()
	inst := create(t, s.p, spec)
	assert.Equal(t, spec.Pool, inst.Pool, "Pool")

	list, err := s.p.List(callCtx(t))
	require.NoError(t, err)
	got := find(list, inst.ID)
	require.NotNil(t, got, "List lacks pool instance %s", inst.ID)
	assert.Equal(t, spec.Pool, got.Pool, "Pool")
	assert.Empty(t, got.SessionID+got.Owner+got.Conversation, "a pool instance serves nobody yet")
	st, err := inst.Client().Binding(callCtx(t))
	require.NoError(t, err)
	assert.False(t, st.Bound, "the agent is not bound")
}

func (s *suite) destroy(t *testing.T) {
	inst := create(t, s.p, s.o.NewSpec())
	require.NoError(t, s.p.Destroy(callCtx(t), inst.ID))

	list, err := s.p.List(callCtx(t))
	require.NoError(t, err)
	assert.Nil(t, find(list, inst.ID), "List still has destroyed instance")
	testenv.Eventually(t, 30*time.Second, func() bool { return !answers(inst) },
		"the destroyed agent at %s still answers", inst.URL)

	assert.NoError(t, s.p.Destroy(callCtx(t), inst.ID), "second Destroy")
}

func (s *suite) destroyUnknown(t *testing.T) {
	assert.NoError(t, s.p.Destroy(callCtx(t), "agcluster-unknown-"+testenv.RandomHex(8)))
}

func (s *suite) createCancelled(t *testing.T) {
	spec := s.o.NewSpec()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	inst, err := s.p.Create(ctx, spec)
	if inst != nil {
		t.Cleanup(func() { _ = s.p.Destroy(context.Background(), inst.ID) })
	}
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.Canceled), "error wraps context.Canceled: %v", err)
	assert.Nil(t, inst)

	list, err := s.p.List(callCtx(t))
	require.NoError(t, err)
	for _, i := range list {
		assert.NotEqual(t, spec.SessionID, i.SessionID, "List has an instance of the cancelled create")
	}
}

// reopen: a new provider value (a restarted control plane) lists the
// running agents with their URL, token and labels, and sleeping ones as
// stopped, and can reach, wake and destroy them.
func (s *suite) reopen(t *testing.T) {
	if s.o.Reopen == nil {
		t.Skip("no Options.Reopen: cannot make a new provider value")
	}
	running := create(t, s.p, s.o.NewSpec())
	var asleep *providers.Instance
	_, canSleep := s.p.(providers.Sleeper)
	if canSleep {
		asleep = sleep(t, s.p, create(t, s.p, s.o.NewSpec()))
	}

	after := s.o.Reopen(t)
	require.Equal(t, s.p.Name(), after.Name(), "the reopened provider's name")
	list, err := after.List(callCtx(t))
	require.NoError(t, err)
	got := find(list, running.ID)
	require.NotNil(t, got, "the running agent is found again")
	assertSame(t, running, got)
	assert.Equal(t, providers.StateRunning, got.State, "State")
	assert.Equal(t, running.URL, got.URL, "URL")
	assert.Equal(t, running.Token, got.Token, "Token")
	assert.WithinDuration(t, running.CreatedAt, got.CreatedAt, time.Second, "CreatedAt")
	_, err = got.Client().Stats(callCtx(t))
	assert.NoError(t, err, "the recovered URL and token work")

	if !canSleep {
		return
	}
	got = find(list, asleep.ID)
	require.NotNil(t, got, "the sleeping agent is found again")
	assertSame(t, asleep, got)
	assert.Equal(t, providers.StateStopped, got.State, "State of the sleeping agent")
	woken, err := after.(providers.Sleeper).Wake(callCtx(t), got.ID)
	require.NoError(t, err, "the reopened provider wakes the sleeping agent")
	keep(t, after, woken)
	assertSame(t, asleep, woken)
	_, err = woken.Client().Stats(callCtx(t))
	assert.NoError(t, err, "the woken agent answers")
}

// other: agents of another provider name on the same backend are not
// listed, and cannot be destroyed, slept or woken through this provider.
func (s *suite) other(t *testing.T) {
	o := s.o.Other
	if o == nil {
		t.Skip("no Options.Other: no second provider on the same backend")
	}
	require.NotEqual(t, s.p.Name(), o.Name(), "Options.Other must have another name")
	theirs := create(t, o, s.o.NewSpec())
	mine := create(t, s.p, s.o.NewSpec())

	list, err := s.p.List(callCtx(t))
	require.NoError(t, err)
	assert.Nil(t, find(list, theirs.ID), "%q lists an agent of %q", s.p.Name(), o.Name())
	assert.NotNil(t, find(list, mine.ID), "%q lists its own agent", s.p.Name())
	list, err = o.List(callCtx(t))
	require.NoError(t, err)
	assert.Nil(t, find(list, mine.ID), "%q lists an agent of %q", o.Name(), s.p.Name())

	assert.Error(t, s.p.Destroy(callCtx(t), theirs.ID), "destroying another provider's agent is refused")
	if sl, ok := s.p.(providers.Sleeper); ok {
		_, err := sl.Sleep(callCtx(t), theirs)
		assert.Error(t, err, "sleeping another provider's agent is refused")
		_, err = sl.Wake(callCtx(t), theirs.ID)
		assert.Error(t, err, "waking another provider's agent is refused")
	}
	_, err = theirs.Client().Stats(callCtx(t))
	assert.NoError(t, err, "the other provider's agent still runs")

	w, ok := s.p.(providers.Watcher)
	if !ok || s.o.Kill == nil {
		return
	}
	// Events: the other's death is not reported here. Our own agent's
	// death, caused after it, marks the end of what to look at.
	ctx := callCtx(t)
	events, errs := w.Events(ctx)
	require.NoError(t, s.o.Kill(ctx, theirs.ID))
	require.NoError(t, s.o.Kill(ctx, mine.ID))
	before := waitEvent(t, events, errs, func(ev providers.Event) bool {
		return ev.InstanceID == mine.ID && ev.Reason == providers.ReasonDied
	})
	for _, ev := range before {
		assert.NotEqual(t, theirs.ID, ev.InstanceID, "%q reported an event of %q's agent: %+v", s.p.Name(), o.Name(), ev)
	}
}

// noKeyStored: a turn's API key travels with the query only; nothing the
// backend keeps about the instance holds it, before or after a sleep.
func (s *suite) noKeyStored(t *testing.T) {
	if s.o.Stored == nil {
		t.Skip("no Options.Stored: cannot read what the backend stores")
	}
	s.needModel(t)
	inst := create(t, s.p, s.o.NewSpec())
	key := fakeKey()
	marker := "key-" + testenv.RandomHex(6)
	turn(t, inst, "Remember "+marker, key)
	require.NotEmpty(t, s.requestsWith(t, marker), "the turn reached the model")

	stored, err := s.o.Stored(callCtx(t), inst.ID)
	require.NoError(t, err)
	require.Contains(t, stored, inst.SessionID, "Stored returns what the backend keeps (its session at least)")
	assert.NotContains(t, stored, key, "the backend stores the API key")

	if _, ok := s.p.(providers.Sleeper); !ok {
		return
	}
	asleep := sleep(t, s.p, inst)
	stored, err = s.o.Stored(callCtx(t), asleep.ID)
	require.NoError(t, err)
	assert.NotContains(t, stored, key, "the backend stores the API key once the agent sleeps")
}

func (s *suite) expiry(t *testing.T) {
	e := s.p.(providers.Expirer)
	inst := create(t, s.p, s.o.NewSpec())
	if at := e.ExpiresAt(inst); !at.IsZero() {
		assert.True(t, at.After(inst.CreatedAt), "expiry %s after creation %s", at, inst.CreatedAt)
	}
	err := e.Extend(callCtx(t), inst.ID, time.Minute)
	if err != nil {
		assert.ErrorIs(t, err, providers.ErrUnsupported, "Extend fails only as unsupported")
	}
}

func (s *suite) ping(t *testing.T) {
	assert.NoError(t, s.p.(providers.Pinger).Ping(callCtx(t)))
}

// poolSpec is a Spec for a warm-pool agent: no session yet.
func (s *suite) poolSpec() providers.Spec {
	spec := s.o.NewSpec()
	spec.SessionID, spec.Owner, spec.Conversation = "", "", ""
	spec.Pool = spec.ConfigID + "@conformance"
	return spec
}
