package session_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/memory"
	"github.com/agcluster/caddy-agcluster/session"
)

// noSleep hides the memory provider's sleep capability.
type noSleep struct{ *memory.Provider }

func (n noSleep) Sleep() {} // not providers.Sleeper's method set

// memManager is a manager over in-memory providers: "mem" (can sleep) and
// "plain" (cannot).
func memManager(t *testing.T, opts session.Options) (*session.Manager, *memory.Provider, *memory.Provider) {
	t.Helper()
	mem, plain := memory.New("mem"), memory.New("plain")
	byName := map[string]providers.Provider{"mem": mem, "plain": noSleep{plain}}
	opts.Providers = func(name string) (providers.Provider, bool) { p, ok := byName[name]; return p, ok }
	opts.Source = routeSource(byName)
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = time.Hour // the tests reap by hand
	}
	m := session.NewManager(opts)
	t.Cleanup(func() { m.Close(false) })
	return m, mem, plain
}

// routeSource creates with the spec's provider and destroys with the
// instance's.
type routeSource map[string]providers.Provider

func (r routeSource) Get(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	return r[spec.Provider].Create(ctx, spec)
}

func (r routeSource) Release(ctx context.Context, inst *providers.Instance) error {
	return r[inst.Provider].Destroy(ctx, inst.ID)
}

func memReq(owner, conv, provider string) session.Request {
	return session.Request{Owner: owner, Conversation: conv, Provider: provider, ConfigID: "agent", Config: &agent.Config{ID: "agent"}}
}

// turn runs one turn and returns the agent's answer.
func turn(t *testing.T, m *session.Manager, req session.Request, prompt string) (*session.Lease, string) {
	t.Helper()
	l, err := m.Acquire(context.Background(), req)
	require.NoError(t, err)
	st, err := l.Query(context.Background(), prompt, "")
	require.NoError(t, err)
	defer st.Close()
	var b strings.Builder
	for {
		e, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		b.WriteString(e.Text)
	}
	l.Done(session.TurnEnd{})
	return l, b.String()
}

func TestSleepAndWake(t *testing.T) {
	tests := []struct {
		name string
		// stop puts the session's agent out of service the way the case
		// says; it returns whether the manager must have been told.
		stop          func(t *testing.T, m *session.Manager, mem *memory.Provider, s *session.Session)
		wantRestarted bool
	}{
		{"idle timeout", func(t *testing.T, m *session.Manager, _ *memory.Provider, s *session.Session) {
			assert.Equal(t, 1, m.ReapIdle(time.Now().Add(2*time.Hour)))
		}, false},
		{"killed behind the gateway's back, event seen", func(t *testing.T, m *session.Manager, mem *memory.Provider, s *session.Session) {
			require.NoError(t, mem.Kill(s.Instance().ID))
			assert.True(t, m.InstanceStopped(s.Instance().ID, providers.ReasonDied))
		}, false},
		{"stopped with no event, reconciled", func(t *testing.T, m *session.Manager, mem *memory.Provider, s *session.Session) {
			require.NoError(t, mem.StopSilently(s.Instance().ID))
			insts, err := mem.List(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 1, m.Reconcile("mem", insts))
		}, false},
		{"workspace gone while asleep", func(t *testing.T, m *session.Manager, mem *memory.Provider, s *session.Session) {
			m.ReapIdle(time.Now().Add(2 * time.Hour))
			mem.Lose(s.Instance().ID)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, mem, _ := memManager(t, session.Options{})
			req := memReq("alice", "c1", "mem")
			l, answer := turn(t, m, req, "remember pineapple")
			assert.Equal(t, "turn 1: remember pineapple", answer)
			s := l.Session
			firstID := s.Instance().ID

			tt.stop(t, m, mem, s)
			if !tt.wantRestarted {
				assert.Equal(t, session.StatusSleeping, s.Status())
				assert.Equal(t, session.Counts{Sleeping: 1}, m.Counts()["mem"])
			}

			l, answer = turn(t, m, req, "what was the word?")
			if tt.wantRestarted {
				assert.True(t, l.Restarted, "a lost workspace is replaced")
				assert.True(t, l.New, "the new agent gets the client's history")
				assert.NotEqual(t, firstID, l.Session.Instance().ID)
				assert.Equal(t, "turn 1: what was the word?", answer)
				return
			}
			assert.True(t, l.Woke, "the agent was woken")
			assert.False(t, l.New, "no re-seeding on wake")
			assert.False(t, l.Restarted)
			assert.Same(t, s, l.Session, "the same session")
			assert.Equal(t, firstID, s.Instance().ID, "the same agent")
			assert.Equal(t, "turn 2: what was the word?", answer, "the agent kept its conversation")
			assert.Equal(t, session.StatusRunning, s.Status())
			assert.Equal(t, 1, mem.Creates())
		})
	}
}

func TestUnreachableAgentIsWokenByTheTurn(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{})
	req := memReq("alice", "c1", "mem")
	l, _ := turn(t, m, req, "one")
	// Stopped with no event and no reconcile: the gateway still thinks it
	// runs, and the turn's query finds it unreachable.
	require.NoError(t, mem.StopSilently(l.Session.Instance().ID))
	l, answer := turn(t, m, req, "two")
	assert.True(t, l.Woke)
	assert.Equal(t, "turn 2: two", answer)
}

func TestMessageDuringSleepWaitsAndWakes(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{})
	req := memReq("alice", "c1", "mem")
	turn(t, m, req, "one")
	entered, release := make(chan struct{}), make(chan struct{})
	mem.SleepHook = func(string) { close(entered); <-release }
	reaped := make(chan int)
	go func() { reaped <- m.ReapIdle(time.Now().Add(2 * time.Hour)) }()
	<-entered

	// The message arrives while the agent is being put to sleep. The sleep
	// is let go a little later: had the acquire not waited, it would have
	// been refused as busy by then.
	time.AfterFunc(50*time.Millisecond, func() { close(release) })
	l, err := m.Acquire(context.Background(), req)
	require.NoError(t, err, "not refused as busy")
	assert.True(t, l.Woke, "woken after its sleep")
	assert.Equal(t, 1, <-reaped)
	l.Done(session.TurnEnd{})
}

func TestLostAgentFoundByTheTurn(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{})
	req := memReq("alice", "c1", "mem")
	l, _ := turn(t, m, req, "one")
	lost := l.Session
	// Removed with its workspace and no event: the turn finds it gone.
	mem.Lose(lost.Instance().ID)
	l, err := m.Acquire(context.Background(), req)
	require.NoError(t, err)
	_, err = l.Query(context.Background(), "two", "")
	require.ErrorIs(t, err, session.ErrAgentLost)
	_, err = m.Get("alice", lost.ID)
	assert.ErrorIs(t, err, session.ErrNotFound, "the lost session is forgotten")

	l, answer := turn(t, m, req, "two")
	assert.True(t, l.Restarted, "the conversation starts over, told so")
	assert.NotSame(t, lost, l.Session)
	assert.Equal(t, lost.ID, l.Session.ID, "the conversation's session id is derived from it")
	assert.NotEqual(t, lost.Instance().ID, l.Session.Instance().ID)
	assert.Equal(t, "turn 1: two", answer, "a new agent")
	assert.Equal(t, 2, mem.Creates())
}

func TestAdmitIsAskedBeforeANewConversationOnly(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{})
	refused := errors.New("quota reached")
	asked := 0
	req := memReq("alice", "c1", "mem")
	req.Admit = func(context.Context) error { asked++; return refused }

	_, err := m.Acquire(context.Background(), req)
	require.ErrorIs(t, err, refused)
	assert.Equal(t, 1, asked)
	assert.Zero(t, mem.Creates(), "a refused conversation gets no agent")

	req.Admit = func(context.Context) error { asked++; return nil }
	l, _ := turn(t, m, req, "one")
	assert.Equal(t, 2, asked, "the refusal did not keep the conversation reserved")
	l, _ = turn(t, m, req, "two")
	assert.Equal(t, 2, asked, "a started conversation's turns are not asked about")

	// The conversation's agent is lost: its replacement continues a
	// conversation that started already, so it is not refused.
	req.Admit = func(context.Context) error { asked++; return refused }
	mem.Lose(l.Session.Instance().ID)
	l, err = m.Acquire(context.Background(), req)
	require.NoError(t, err)
	_, err = l.Query(context.Background(), "three", "")
	require.ErrorIs(t, err, session.ErrAgentLost)
	l, _ = turn(t, m, req, "three")
	assert.True(t, l.Restarted)
	assert.Equal(t, 2, asked, "a replacement is not a new conversation")
	assert.Equal(t, 2, mem.Creates())
}

func TestRetentionAndDelete(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{Retention: 24 * time.Hour})
	l, _ := turn(t, m, memReq("alice", "c1", "mem"), "hi")
	l2, _ := turn(t, m, memReq("alice", "c2", "mem"), "hi")
	now := time.Now()
	require.Equal(t, 2, m.ReapIdle(now.Add(2*time.Hour)), "both fall asleep")

	require.NoError(t, m.Delete("alice", l2.Session.ID), "a sleeping session can be deleted")
	insts, _ := mem.List(context.Background())
	assert.Len(t, insts, 1)

	assert.Equal(t, 0, m.ReapIdle(now.Add(3*time.Hour)), "asleep for less than the retention")
	assert.Equal(t, 1, m.ReapIdle(now.Add(48*time.Hour)), "asleep past the retention")
	insts, _ = mem.List(context.Background())
	assert.Empty(t, insts, "destroyed with its workspace")
	_, err := m.Get("alice", l.Session.ID)
	assert.ErrorIs(t, err, session.ErrNotFound)
}

func TestProviderWithoutSleepDestroysIdleSessions(t *testing.T) {
	m, _, plain := memManager(t, session.Options{})
	turn(t, m, memReq("alice", "c1", "plain"), "hi")
	require.Equal(t, 1, m.ReapIdle(time.Now().Add(2*time.Hour)))
	assert.Empty(t, m.List(""))
	insts, _ := plain.List(context.Background())
	assert.Empty(t, insts)
}

func TestLimitsCountSleepingConversations(t *testing.T) {
	tests := []struct {
		name    string
		opts    session.Options
		owner   string // of the third conversation
		wantErr bool
	}{
		{"max_sessions counts live agents only", session.Options{MaxSessions: 2}, "alice", false},
		{"max_conversations counts sleeping ones", session.Options{MaxConversations: 2}, "bob", true},
		{"max_conversations_per_owner", session.Options{MaxConversationsPerOwner: 2}, "alice", true},
		{"another owner is not limited per owner", session.Options{MaxConversationsPerOwner: 2}, "bob", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, _ := memManager(t, tt.opts)
			turn(t, m, memReq("alice", "c1", "mem"), "hi")
			turn(t, m, memReq("alice", "c2", "mem"), "hi")
			m.ReapIdle(time.Now().Add(2 * time.Hour))
			_, err := m.Acquire(context.Background(), memReq(tt.owner, "c3", "mem"))
			if tt.wantErr {
				assert.ErrorIs(t, err, session.ErrLimit)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

func TestWakeRespectsMaxSessions(t *testing.T) {
	m, _, _ := memManager(t, session.Options{MaxSessions: 1})
	turn(t, m, memReq("alice", "c1", "mem"), "hi")
	m.ReapIdle(time.Now().Add(2 * time.Hour))
	turn(t, m, memReq("alice", "c2", "mem"), "hi") // the one live agent
	_, err := m.Acquire(context.Background(), memReq("alice", "c1", "mem"))
	assert.ErrorIs(t, err, session.ErrLimit, "waking c1 would make two live agents")
}

func TestAdoptFindsSleepingSessions(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{})
	l, _ := turn(t, m, memReq("alice", "c1", "mem"), "one")
	m.ReapIdle(time.Now().Add(2 * time.Hour))
	id := l.Session.ID

	// A restarted gateway: a new manager over the same backend.
	m2 := session.NewManager(session.Options{
		Source:    routeSource{"mem": mem},
		Providers: func(string) (providers.Provider, bool) { return mem, true },
	})
	t.Cleanup(func() { m2.Close(false) })
	insts, err := mem.List(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, m2.Adopt(insts))
	s, err := m2.Get("alice", id)
	require.NoError(t, err)
	assert.Equal(t, session.StatusSleeping, s.Status())

	l, answer := turn(t, m2, memReq("alice", "c1", "mem"), "two")
	assert.True(t, l.Woke)
	assert.Equal(t, id, l.Session.ID)
	assert.Equal(t, "turn 2: two", answer)
}

// TestPoolAdoptsStoppedBoundAgent: a warm-pool agent handed to a
// conversation and then stopped behind the gateway's back (a host reboot)
// carries its session only in its binding; a restarted gateway wakes it to
// read the binding, puts it back to sleep under its session's labels, and
// adopts it as a sleeping conversation. A stopped unbound one is destroyed.
func TestPoolAdoptsStoppedBoundAgent(t *testing.T) {
	ctx := context.Background()
	mem := memory.New("mem")
	bound, err := mem.Create(ctx, providers.Spec{ConfigID: "agent", Pool: "agent@x"})
	require.NoError(t, err)
	require.NoError(t, bound.Client().Bind(ctx, agent.Binding{SessionID: "sess_1", Owner: "alice", Conversation: "c1"}))
	unbound, err := mem.Create(ctx, providers.Spec{ConfigID: "agent", Pool: "agent@x"})
	require.NoError(t, err)
	require.NoError(t, mem.StopSilently(bound.ID))
	require.NoError(t, mem.StopSilently(unbound.ID))

	lookup := func(string) (providers.Provider, bool) { return mem, true }
	pool := session.NewPool(session.PoolOptions{Source: routeSource{"mem": mem}, Providers: lookup})
	t.Cleanup(func() { pool.Close(false) })
	m := session.NewManager(session.Options{Source: pool, Providers: lookup})
	t.Cleanup(func() { m.Close(false) })
	insts, err := mem.List(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, m.Adopt(pool.Adopt(ctx, insts)))

	s, err := m.Get("alice", "sess_1")
	require.NoError(t, err)
	assert.Equal(t, session.StatusSleeping, s.Status())
	left, err := mem.List(ctx)
	require.NoError(t, err)
	require.Len(t, left, 1, "the unbound stopped agent was destroyed")
	assert.Equal(t, "sess_1", left[0].SessionID, "the backend now records the session")
	assert.Empty(t, left[0].Pool)

	l, answer := turn(t, m, memReq("alice", "c1", "mem"), "hello again")
	assert.True(t, l.Woke)
	assert.Equal(t, "turn 1: hello again", answer)
}

// TestLifecycleFollowsEvents: a provider's death event reaches the
// session through the lifecycle's watcher, and rediscovery adopts what a
// provider lists.
func TestLifecycleFollowsEvents(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{})
	pool := session.NewPool(session.PoolOptions{})
	t.Cleanup(func() { pool.Close(false) })
	lc := &session.Lifecycle{Manager: m, Pool: pool}
	stop := lc.Watch(mem)
	t.Cleanup(stop)

	l, _ := turn(t, m, memReq("alice", "c1", "mem"), "hi")
	require.NoError(t, mem.Kill(l.Session.Instance().ID))
	testenv.Eventually(t, 10*time.Second, func() bool { return l.Session.Asleep() }, "the death event did not reach the session")

	// Another manager over the same backend finds the sleeping session.
	m2 := session.NewManager(session.Options{Source: routeSource{"mem": mem},
		Providers: func(string) (providers.Provider, bool) { return mem, true }})
	t.Cleanup(func() { m2.Close(false) })
	(&session.Lifecycle{Manager: m2, Pool: pool}).Rediscover(mem)
	s, err := m2.Get("alice", l.Session.ID)
	require.NoError(t, err)
	assert.Equal(t, session.StatusSleeping, s.Status())
}
