package session_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/session"
)

// poolEntry keeps n agents of the "agent" configuration that req asks for.
func poolEntry(n int) session.PoolEntry {
	return session.PoolEntry{Size: n, Spec: providers.Spec{ConfigID: "agent", Config: &agent.Config{ID: "agent"}}}
}

func newPool(t *testing.T, f *fixture, opts session.PoolOptions) *session.Pool {
	opts.Source = f.src
	opts.Logger = zaptest.NewLogger(t)
	if opts.CheckInterval == 0 {
		opts.CheckInterval = 200 * time.Millisecond
	}
	return session.NewPool(opts)
}

// ready waits until the pool's only entry holds n ready agents and
// nothing is being made.
func ready(t *testing.T, p *session.Pool, n int) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func() bool {
		st := p.Stats()
		return len(st) == 1 && st[0].Ready == n && st[0].Creating == 0
	}, "pool never settled at %d ready agents: %+v", n, p.Stats())
}

func TestWarmPool(t *testing.T) {
	f := newFixture(t)
	var m *session.Manager
	pool := newPool(t, f, session.PoolOptions{Entries: []session.PoolEntry{poolEntry(2)},
		Headroom: func() int { return m.Headroom() }})
	m = session.NewManager(session.Options{Source: pool, MaxSessions: 3})
	t.Cleanup(func() { m.Close(true); pool.Close(true) })
	pool.Start()
	ready(t, pool, 2)
	require.Equal(t, int64(2), f.src.created.Load())

	var first *session.Session
	t.Run("a new conversation gets a ready agent bound to it", func(t *testing.T) {
		l, err := m.Acquire(ctx(t), req("alice", "c1"))
		require.NoError(t, err)
		defer l.Done(session.TurnEnd{})
		first = l.Session
		assert.True(t, l.New)
		assert.True(t, l.Session.Warm, "served from the pool")
		assert.Equal(t, int64(2), f.src.created.Load(), "no container was made for the session itself")
		st, err := l.Session.Client().Binding(ctx(t))
		require.NoError(t, err)
		require.True(t, st.Bound)
		assert.Equal(t, agent.Binding{SessionID: l.Session.ID, Owner: "alice", Conversation: "c1"}, *st.Binding)
		assert.Equal(t, "alice", l.Session.Instance().Owner)
	})

	t.Run("the pool refills in the background", func(t *testing.T) {
		// One session of three: room for both ready agents again.
		ready(t, pool, 2)
		assert.Equal(t, int64(3), f.src.created.Load())
	})

	t.Run("another owner never gets the same agent", func(t *testing.T) {
		l, err := m.Acquire(ctx(t), req("bob", "c1"))
		require.NoError(t, err)
		defer l.Done(session.TurnEnd{})
		assert.True(t, l.Session.Warm)
		assert.NotEqual(t, first.Instance().ID, l.Session.Instance().ID)
		assert.NotEqual(t, first.Instance().Token, l.Session.Instance().Token)
	})

	t.Run("the pool shrinks to what max_sessions leaves", func(t *testing.T) {
		// Two sessions of three: one ready agent at most, then none.
		ready(t, pool, 1)
		l, err := m.Acquire(ctx(t), req("carol", "c1"))
		require.NoError(t, err)
		l.Done(session.TurnEnd{})
		ready(t, pool, 0)
		assert.Equal(t, 3, f.live(t), "three sessions, no ready agent beyond the limit")
		require.NoError(t, m.Delete("carol", l.Session.ID))
		ready(t, pool, 1)
	})

	t.Run("an agent of another shape is made cold", func(t *testing.T) {
		r := req("dave", "c1")
		r.Limits.Pids = 99
		before := f.src.created.Load()
		l, err := m.Acquire(ctx(t), r)
		require.NoError(t, err)
		assert.False(t, l.Session.Warm, "own limits: not from the pool")
		assert.Equal(t, before+1, f.src.created.Load())
		l.Done(session.TurnEnd{})
		require.NoError(t, m.Delete("dave", l.Session.ID))
	})

	t.Run("ending a session destroys its agent", func(t *testing.T) {
		require.NoError(t, m.Delete("alice", first.ID))
		insts, err := f.prov.List(ctx(t))
		require.NoError(t, err)
		for _, i := range insts {
			assert.NotEqual(t, first.Instance().ID, i.ID, "a used agent never goes back to the pool")
		}
	})
}

func TestWarmPoolReplacesDeadAgents(t *testing.T) {
	f := newFixture(t)
	pool := newPool(t, f, session.PoolOptions{Entries: []session.PoolEntry{poolEntry(1)}})
	t.Cleanup(func() { pool.Close(true) })
	pool.Start()
	ready(t, pool, 1)
	insts, err := f.prov.List(ctx(t))
	require.NoError(t, err)
	require.Len(t, insts, 1)
	victim := insts[0].ID

	// Killed behind the pool's back: the health check notices.
	cli := testenv.Docker(t)
	require.NoError(t, cli.ContainerKill(ctx(t), victim, "KILL"))
	testenv.Eventually(t, 2*time.Minute, func() bool {
		insts, err := f.prov.List(ctx(t))
		return err == nil && len(insts) == 1 && insts[0].ID != victim && pool.Stats()[0].Ready == 1
	}, "dead agent not replaced: %+v", pool.Stats())
	_, err = cli.ContainerInspect(ctx(t), victim)
	assert.Error(t, err, "the dead agent's container is removed")

	// Reported by the provider's events: replaced at once.
	insts, err = f.prov.List(ctx(t))
	require.NoError(t, err)
	require.True(t, pool.InstanceDied(insts[0].ID))
	assert.False(t, pool.InstanceDied("no-such-instance"))
	ready(t, pool, 1)
	assert.Equal(t, int64(3), f.src.created.Load())
}

func TestWarmPoolMemoryPressure(t *testing.T) {
	f := newFixture(t)
	opts := session.PoolOptions{Entries: []session.PoolEntry{poolEntry(2)}}
	pool := newPool(t, f, opts)
	t.Cleanup(func() { pool.Close(true) })
	pool.Start()
	ready(t, pool, 2)

	// Ask for more free memory than the machine has: the pool gives its
	// agents back, one per check, and makes none.
	free, err := session.HostAvailableMemory()
	require.NoError(t, err)
	opts.MinFreeMemory = free + 1<<40
	pool.Reconfigure(opts)
	ready(t, pool, 0)
	assert.Equal(t, 0, pool.Stats()[0].Target)
	testenv.Eventually(t, time.Minute, func() bool { return f.live(t) == 0 }, "the pool's agents were not removed")
	time.Sleep(time.Second)
	assert.Equal(t, 0, f.live(t), "no agent is made under pressure")

	opts.MinFreeMemory = 0
	pool.Reconfigure(opts)
	ready(t, pool, 2)
}

func TestWarmPoolAdoptsAfterRestart(t *testing.T) {
	f := newFixture(t)
	opts := session.PoolOptions{Entries: []session.PoolEntry{poolEntry(2)}, Generation: "g1"}
	first := newPool(t, f, opts)
	m := session.NewManager(session.Options{Source: first})
	first.Start()
	ready(t, first, 2)
	l, err := m.Acquire(ctx(t), req("alice", "kept"))
	require.NoError(t, err)
	require.True(t, l.Session.Warm)
	sessionID, instID := l.Session.ID, l.Session.Instance().ID
	l.Done(session.TurnEnd{})
	first.Close(false) // Caddy exits with "shutdown keep"
	m.Close(false)
	require.Equal(t, 2, f.live(t), "one session and one ready agent are left running")
	made := f.src.created.Load()

	second := newPool(t, f, opts)
	m2 := session.NewManager(session.Options{Source: second})
	t.Cleanup(func() { m2.Close(true); second.Close(true) })
	insts, err := f.prov.List(ctx(t))
	require.NoError(t, err)
	sessions := second.Adopt(ctx(t), insts)
	require.Len(t, sessions, 1, "the handed-out agent is a session")
	assert.Equal(t, sessionID, sessions[0].SessionID)
	assert.Equal(t, "alice", sessions[0].Owner)
	assert.Equal(t, "kept", sessions[0].Conversation)
	assert.Equal(t, 1, second.Stats()[0].Ready, "the unbound agent is ready again")
	require.Equal(t, 1, m2.Adopt(sessions))

	l, err = m2.Acquire(ctx(t), req("alice", "kept"))
	require.NoError(t, err)
	assert.Equal(t, instID, l.Session.Instance().ID, "the conversation continues in its agent")
	l.Done(session.TurnEnd{})
	l, err = m2.Acquire(ctx(t), req("bob", "new"))
	require.NoError(t, err)
	assert.True(t, l.Session.Warm, "the rediscovered ready agent is handed out")
	l.Done(session.TurnEnd{})
	assert.Equal(t, made, f.src.created.Load(), "nothing was made to serve them")

	// A pool of another generation (the provider setup changed) does not
	// reuse the agents: it destroys them.
	second.Start()
	ready(t, second, 2)
	third := newPool(t, f, session.PoolOptions{Entries: []session.PoolEntry{poolEntry(1)}, Generation: "g2"})
	t.Cleanup(func() { third.Close(true) })
	insts, err = f.prov.List(ctx(t))
	require.NoError(t, err)
	third.Adopt(ctx(t), insts)
	assert.Equal(t, 0, third.Stats()[0].Ready)
}

func TestParseMemAvailable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    int64
		wantErr string
	}{
		{name: "proc meminfo", in: "MemTotal:       24601268 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\nBuffers: 1 kB\n", want: 20000000 << 10},
		{name: "no MemAvailable (old kernel)", in: "MemTotal: 1 kB\nMemFree: 1 kB\n", wantErr: "no MemAvailable"},
		{name: "garbage number", in: "MemAvailable: lots kB\n", wantErr: `MemAvailable "lots"`},
		{name: "empty value", in: "MemAvailable:\n", wantErr: "no MemAvailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := session.ParseMemAvailable([]byte(tc.in))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	free, err := session.HostAvailableMemory()
	require.NoError(t, err, "this machine's /proc/meminfo")
	assert.Positive(t, free)
}
