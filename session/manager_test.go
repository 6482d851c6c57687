package session_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/docker"
	"github.com/agcluster/caddy-agcluster/session"
)

// countingSource wraps the real Docker provider and counts creations.
type countingSource struct {
	session.ProviderSource
	created atomic.Int64
}

func (c *countingSource) Get(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	c.created.Add(1)
	return c.ProviderSource.Get(ctx, spec)
}

type fixture struct {
	src   *countingSource
	runID string
	prov  *docker.Provider
}

// newFixture gives a Source backed by the real Docker provider and agent
// image, labelling everything it makes so the test can count and clean up.
func newFixture(t *testing.T) *fixture {
	testenv.Integration(t)
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.AgentImage())
	runID := testenv.RandomHex(6)
	p, err := docker.New(docker.Options{ExtraLabels: map[string]string{"agcluster.test.run": runID}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		insts, _ := p.List(ctx)
		for _, i := range insts {
			_ = p.Destroy(ctx, i.ID)
		}
		list, _ := cli.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", "agcluster.test.run="+runID))})
		assert.Empty(t, list, "containers left behind")
		_ = p.Close()
	})
	return &fixture{src: &countingSource{ProviderSource: session.ProviderSource{Provider: p}}, runID: runID, prov: p}
}

func (f *fixture) live(t *testing.T) int {
	insts, err := f.prov.List(context.Background())
	require.NoError(t, err)
	return len(insts)
}

func req(owner, conv string) session.Request {
	return session.Request{Owner: owner, Conversation: conv, ConfigID: "agent", Config: &agent.Config{ID: "agent"}}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestManager(t *testing.T) {
	f := newFixture(t)
	m := session.NewManager(session.Options{Source: f.src, MaxSessions: 3, MaxSessionsPerOwner: 2})
	t.Cleanup(func() { m.Close(true) })

	t.Run("simultaneous first requests create one instance", func(t *testing.T) {
		const n = 8
		var wg sync.WaitGroup
		leases := make([]*session.Lease, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				leases[i], errs[i] = m.Acquire(ctx(t), req("alice", "c1"))
			}()
		}
		wg.Wait()
		var got *session.Lease
		for i := range n {
			if errs[i] == nil {
				require.Nil(t, got, "only one request holds the turn")
				got = leases[i]
				continue
			}
			assert.ErrorIs(t, errs[i], session.ErrBusy)
		}
		require.NotNil(t, got)
		assert.True(t, got.New, "the winner knows the agent is new")
		assert.Equal(t, int64(1), f.src.created.Load())
		assert.Equal(t, 1, f.live(t))
		h, status, err := got.Session.Client().Health(ctx(t))
		require.NoError(t, err)
		assert.Equal(t, 200, status, h.Status)
		got.Done(session.TurnEnd{Fingerprint: "fp-1", TurnID: "turn-1"})
	})

	t.Run("the next turn reuses the session", func(t *testing.T) {
		l, err := m.Acquire(ctx(t), req("alice", "c1"))
		require.NoError(t, err)
		assert.False(t, l.New)
		assert.Equal(t, int64(1), f.src.created.Load())
		_, err = m.Acquire(ctx(t), req("alice", "c1"))
		assert.ErrorIs(t, err, session.ErrBusy, "one turn at a time")
		l.Done(session.TurnEnd{Fingerprint: "fp-2", TurnID: "turn-2"})
	})

	t.Run("a conversation without id is found by its fingerprint", func(t *testing.T) {
		l, err := m.Acquire(ctx(t), session.Request{Owner: "alice", Prefixes: []string{"fp-0", "fp-2"}})
		require.NoError(t, err)
		assert.Equal(t, "c1", l.Session.Key.Conversation)
		l.Done(session.TurnEnd{})
		_, err = m.Acquire(ctx(t), session.Request{Owner: "bob", Prefixes: []string{"fp-0", "fp-2"}, ConfigID: "agent"})
		// Bob's request with Alice's fingerprint must not reach her session:
		// it starts a new one of his own.
		require.NoError(t, err)
		assert.Equal(t, int64(2), f.src.created.Load())
	})

	t.Run("owners are isolated", func(t *testing.T) {
		alice := m.List("alice")
		require.Len(t, alice, 1)
		_, err := m.Get("bob", alice[0].ID)
		assert.ErrorIs(t, err, session.ErrNotFound)
		assert.ErrorIs(t, m.Delete("bob", alice[0].ID), session.ErrNotFound)
		_, err = m.Acquire(ctx(t), session.Request{Owner: "bob", SessionID: alice[0].ID})
		assert.ErrorIs(t, err, session.ErrNotFound)
	})

	t.Run("limits", func(t *testing.T) {
		for _, s := range m.List("bob") {
			s := s
			require.NoError(t, m.Delete("bob", s.ID))
		}
		l, err := m.Acquire(ctx(t), req("alice", "c2"))
		require.NoError(t, err)
		l.Done(session.TurnEnd{})
		_, err = m.Acquire(ctx(t), req("alice", "c3"))
		require.ErrorIs(t, err, session.ErrLimit, "per owner")
		assert.Contains(t, err.Error(), "2 live agents")
		l, err = m.Acquire(ctx(t), req("carol", "c1"))
		require.NoError(t, err)
		l.Done(session.TurnEnd{})
		_, err = m.Acquire(ctx(t), req("dave", "c1"))
		require.ErrorIs(t, err, session.ErrLimit, "in total")
		assert.Contains(t, err.Error(), "all 3 agents")
	})

	t.Run("delete removes the instance", func(t *testing.T) {
		before := f.live(t)
		s := m.List("carol")[0]
		require.NoError(t, m.Delete("carol", s.ID))
		assert.Equal(t, before-1, f.live(t))
		assert.ErrorIs(t, m.Delete("carol", s.ID), session.ErrNotFound)
	})
}

func TestIdleReaping(t *testing.T) {
	f := newFixture(t)
	m := session.NewManager(session.Options{Source: f.src, IdleTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { m.Close(true) })
	l, err := m.Acquire(ctx(t), req("alice", "idle"))
	require.NoError(t, err)
	time.Sleep(time.Second) // longer than the idle timeout, but busy
	assert.Equal(t, 1, f.live(t), "a session in a turn is never reaped")
	l.Done(session.TurnEnd{})
	testenv.Eventually(t, 30*time.Second, func() bool { return f.live(t) == 0 && len(m.List("")) == 0 },
		"idle session not reaped")
}

func TestAdoptAfterRestart(t *testing.T) {
	f := newFixture(t)
	first := session.NewManager(session.Options{Source: f.src})
	l, err := first.Acquire(ctx(t), req("alice", "keep-me"))
	require.NoError(t, err)
	id := l.Session.ID
	l.Done(session.TurnEnd{})
	first.Close(false) // Caddy exits with "shutdown keep"
	require.Equal(t, 1, f.live(t))

	second := session.NewManager(session.Options{Source: f.src})
	t.Cleanup(func() { second.Close(true) })
	insts, err := f.prov.List(ctx(t))
	require.NoError(t, err)
	assert.Equal(t, 1, second.Adopt(insts))
	assert.Equal(t, 0, second.Adopt(insts), "adopting twice adds nothing")
	l, err = second.Acquire(ctx(t), req("alice", "keep-me"))
	require.NoError(t, err)
	assert.Equal(t, id, l.Session.ID, "the conversation continues in the same container")
	assert.False(t, l.New)
	l.Done(session.TurnEnd{})
	assert.Equal(t, int64(1), f.src.created.Load())
}

func TestCreateFailureIsReported(t *testing.T) {
	testenv.Integration(t)
	p, err := docker.New(docker.Options{Image: "agcluster/no-such-image:never"}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	m := session.NewManager(session.Options{Source: session.ProviderSource{Provider: p}, MaxSessions: 1})
	t.Cleanup(func() { m.Close(true) })
	_, err = m.Acquire(ctx(t), req("alice", "c"))
	require.Error(t, err)
	assert.True(t, errors.Is(err, providers.ErrImageMissing) || errors.Is(err, providers.ErrUnavailable), err.Error())
	// The failed creation does not hold a slot.
	_, err = m.Acquire(ctx(t), req("alice", "c2"))
	assert.NotErrorIs(t, err, session.ErrLimit)
}
