package session_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/session"
)

// history gives the prefix fingerprints of a history whose messages are
// named by fps: prefixes[i] is "fp(first i)", here simply the i-th name
// ("" for the empty prefix).
func history(fps ...string) []string { return append([]string{""}, fps...) }

func TestContinuation(t *testing.T) {
	m, _, _ := memManager(t, session.Options{})
	l, err := m.Acquire(ctx(t), memReq("alice", "c1", "mem"))
	require.NoError(t, err)
	s := l.Session
	assert.Equal(t, session.Continuation{Seen: 0}, s.Continuation(history()), "a first turn")
	// Three turns: u1 a1 | u2 a2 | u3 a3. A turn's fingerprint covers the
	// whole transcript after it; the history names each message.
	l.Done(session.TurnEnd{Fingerprint: "a1", TurnID: "t1"})
	assert.Equal(t, session.Continuation{Seen: 0}, s.Continuation(history()),
		"a client that has sent no history yet: an empty one is just the next message")
	for _, tt := range []struct{ fp, id string }{{"a2", "t2"}, {"a3", "t3"}} {
		l, err = m.Acquire(ctx(t), memReq("alice", "c1", "mem"))
		require.NoError(t, err)
		l.Done(session.TurnEnd{Fingerprint: tt.fp, TurnID: tt.id, SentHistory: true})
	}

	tests := []struct {
		name    string
		history []string
		want    session.Continuation
	}{
		{"the next turn", history("u1", "a1", "u2", "a2", "u3", "a3"),
			session.Continuation{Seen: 6}},
		{"regenerate the last answer", history("u1", "a1", "u2", "a2"),
			session.Continuation{Branch: &agent.Branch{After: "t2"}, Seen: 4}},
		{"edit the second message", history("u1", "a1"),
			session.Continuation{Branch: &agent.Branch{After: "t1"}, Seen: 2}},
		{"edit the first message", history(),
			session.Continuation{Branch: &agent.Branch{}, Seen: 0}},
		{"after the last turn, messages the agent has not seen", history("u1", "a1", "u2", "a2", "u3", "a3", "x", "y"),
			session.Continuation{Seen: 6}},
		{"after an earlier turn, messages the agent has not seen", history("u1", "a1", "x", "y"),
			session.Continuation{Branch: &agent.Branch{After: "t1"}, Seen: 2}},
		{"a history it does not know", history("p", "q"),
			session.Continuation{Seen: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, s.Continuation(tt.history))
		})
	}

	t.Run("a branch becomes the tip; the abandoned turns stay reachable", func(t *testing.T) {
		l, err := m.Acquire(ctx(t), memReq("alice", "c1", "mem"))
		require.NoError(t, err)
		l.Done(session.TurnEnd{Fingerprint: "b2", TurnID: "t4"}) // u1 a1 u2' b2
		assert.Equal(t, session.Continuation{Seen: 4}, s.Continuation(history("u1", "a1", "u2'", "b2")))
		assert.Equal(t, session.Continuation{Branch: &agent.Branch{After: "t3"}, Seen: 6},
			s.Continuation(history("u1", "a1", "u2", "a2", "u3", "a3")), "back to the first branch")
	})
}

func TestConversationBinding(t *testing.T) {
	m, mem, _ := memManager(t, session.Options{})
	noID := func(prefixes ...string) session.Request {
		r := memReq("alice", "", "mem")
		r.Prefixes = prefixes
		return r
	}
	withID := func(conv string, prefixes ...string) session.Request {
		r := memReq("alice", conv, "mem")
		r.Prefixes = prefixes
		return r
	}

	// LibreChat: the first message comes without an id ...
	l, err := m.Acquire(ctx(t), noID(""))
	require.NoError(t, err)
	first := l.Session
	l.Done(session.TurnEnd{Fingerprint: "fp-chat", TurnID: "t1"})

	// ... the second with one the gateway has never seen.
	l, err = m.Acquire(ctx(t), withID("lc-1", "", "u1", "fp-chat"))
	require.NoError(t, err)
	assert.Same(t, first, l.Session, "the id is bound to the session its history continues")
	assert.False(t, l.New)
	l.Done(session.TurnEnd{Fingerprint: "fp-chat-2", TurnID: "t2"})

	l, err = m.Acquire(ctx(t), withID("lc-1", "", "u1", "fp-chat", "u2", "fp-chat-2"))
	require.NoError(t, err)
	assert.Same(t, first, l.Session, "and names it from then on")
	l.Done(session.TurnEnd{Fingerprint: "fp-chat-3", TurnID: "t3"})
	assert.Equal(t, 1, mem.Creates(), "one agent for the chat")

	t.Run("a session a client id names is not taken by another id", func(t *testing.T) {
		l, err := m.Acquire(ctx(t), withID("lc-2", "", "u1", "fp-chat"))
		require.NoError(t, err)
		assert.NotSame(t, first, l.Session, "two chats that open alike stay two")
		assert.True(t, l.New)
		l.Done(session.TurnEnd{})
	})

	t.Run("an id that names a session wins over the history", func(t *testing.T) {
		l, err := m.Acquire(ctx(t), withID("lc-2", "", "u1", "fp-chat", "u2", "fp-chat-2"))
		require.NoError(t, err)
		assert.NotSame(t, first, l.Session)
		l.Done(session.TurnEnd{})
	})

	t.Run("deleting the session frees its ids and fingerprints", func(t *testing.T) {
		require.NoError(t, m.Delete("alice", first.ID))
		l, err := m.Acquire(ctx(t), withID("lc-1", "", "u1", "fp-chat"))
		require.NoError(t, err)
		assert.True(t, l.New)
		l.Done(session.TurnEnd{})
	})
}

func TestPendingToolCalls(t *testing.T) {
	m, _, _ := memManager(t, session.Options{})
	l, err := m.Acquire(ctx(t), memReq("alice", "c1", "mem"))
	require.NoError(t, err)
	s := l.Session
	l.Done(session.TurnEnd{Fingerprint: "calls", PendingCalls: []string{"call_1", "call_2"}})
	assert.Equal(t, []string{"call_1", "call_2"}, s.PendingCalls())
	assert.Equal(t, session.Continuation{Seen: 0}, s.Continuation(history()),
		"no finished turn yet: nothing to branch from")
	assert.Equal(t, session.Continuation{Seen: 2}, s.Continuation(history("u1", "calls")),
		"the results continue the waiting turn")

	l, err = m.Acquire(ctx(t), memReq("alice", "c1", "mem"))
	require.NoError(t, err)
	st, err := l.Query(ctx(t), "a new message instead", "sk-ant-test")
	require.NoError(t, err)
	require.NoError(t, st.Close())
	assert.Empty(t, s.PendingCalls(), "a new turn drops the calls")
	l.Done(session.TurnEnd{})
}
