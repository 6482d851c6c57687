package providertest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// What gateways sharing one fleet rely on: a session's agent is found by
// its session id (providers.Find, through Finder or by listing); a
// provider that finds by name (Finder) refuses a second agent for a
// session; a Claimer names a warm agent for its session once.

func (s *suite) findBySession(t *testing.T) {
	spec := s.o.NewSpec()
	inst := create(t, s.p, spec)
	got, err := providers.Find(callCtx(t), s.p, spec.SessionID)
	require.NoError(t, err, "Find")
	assertSame(t, inst, got)
	assert.Equal(t, providers.StateRunning, got.State)

	if sl, ok := s.p.(providers.Sleeper); ok {
		asleep := sleep(t, s.p, inst)
		got, err = providers.Find(callCtx(t), s.p, spec.SessionID)
		require.NoError(t, err, "Find after Sleep")
		assert.Equal(t, asleep.ID, got.ID)
		assert.Equal(t, providers.StateStopped, got.State, "found asleep")
		_, err = sl.Wake(callCtx(t), got.ID)
		require.NoError(t, err)
	}

	_, err = providers.Find(callCtx(t), s.p, s.o.NewSpec().SessionID)
	assert.ErrorIs(t, err, providers.ErrGone, "an unknown session")
}

func (s *suite) secondCreateRefused(t *testing.T) {
	if _, ok := s.p.(providers.Finder); !ok {
		t.Skipf("%s provider %q names agents by no session (not a Finder)", s.p.Kind(), s.p.Name())
	}
	spec := s.o.NewSpec()
	first := create(t, s.p, spec)
	again, err := s.p.Create(callCtx(t), spec)
	if again != nil {
		keep(t, s.p, again)
	}
	require.ErrorIs(t, err, providers.ErrExists, "a second agent for one session")
	got, err := providers.Find(callCtx(t), s.p, spec.SessionID)
	require.NoError(t, err)
	assert.Equal(t, first.ID, got.ID, "the first agent is left as it was")
	assert.True(t, answers(got), "and still answers")
}

func (s *suite) claimOnce(t *testing.T) {
	c, ok := s.p.(providers.Claimer)
	if !ok {
		t.Skipf("%s provider %q cannot claim warm agents", s.p.Kind(), s.p.Name())
	}
	warm := create(t, s.p, s.poolSpec())
	other := create(t, s.p, s.poolSpec())
	spec := s.o.NewSpec()
	b := agent.Binding{SessionID: spec.SessionID, Owner: spec.Owner, Conversation: spec.Conversation}
	require.NoError(t, warm.Client().Bind(callCtx(t), b))

	claimed, err := c.Claim(callCtx(t), warm, spec)
	require.NoError(t, err, "Claim")
	assert.Equal(t, warm.ID, claimed.ID)
	assert.Equal(t, spec.SessionID, claimed.SessionID)
	got, err := providers.Find(callCtx(t), s.p, spec.SessionID)
	require.NoError(t, err, "a claimed agent is found by its session")
	assert.Equal(t, warm.ID, got.ID)
	assert.Equal(t, spec.Owner, got.Owner, "with its binding's owner")

	_, err = c.Claim(callCtx(t), other, spec)
	require.ErrorIs(t, err, providers.ErrExists, "a second warm agent for the session")
	again, err := s.p.Create(callCtx(t), spec)
	if again != nil {
		keep(t, s.p, again)
	}
	require.ErrorIs(t, err, providers.ErrExists, "a new agent for a claimed session")
	assert.True(t, answers(other), "the unclaimed agent is left as it was")
}
