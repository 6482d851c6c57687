package statepoll_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/statepoll"
)

// state is a test platform's instance state.
type state struct {
	id, session string
	running     bool
	exit        int
}

// platform is a list of states the test changes between polls.
type platform struct {
	mu     sync.Mutex
	states []state
	err    error
}

func (pl *platform) set(states []state, err error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.states, pl.err = states, err
}

func (pl *platform) list(context.Context) ([]state, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return append([]state(nil), pl.states...), pl.err
}

func newPoller(pl *platform, destroyed string) *statepoll.Poller[state] {
	return &statepoll.Poller[state]{
		Interval: time.Millisecond,
		List:     pl.list,
		Observe: func(s state) statepoll.Observed {
			return statepoll.Observed{ID: s.id, Running: s.running, SessionID: s.session}
		},
		Stopped:  func(s state, ev *providers.Event) { ev.ExitCode = s.exit },
		Vanished: func(id string) bool { return id != destroyed },
		Logger:   zap.NewNop(),
		FailMsg:  "poll failed",
	}
}

func TestEvents(t *testing.T) {
	pl := &platform{states: []state{{id: "a", session: "s1", running: true}, {id: "b", session: "s2", running: true},
		{id: "c", session: "s3", running: true}, {id: "d", session: "s4"}}}
	p := newPoller(pl, "c")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, errs := p.Events(ctx)

	// a stops, b and c vanish (c destroyed by the provider), d was never running.
	pl.set([]state{{id: "a", session: "s1", exit: 3}, {id: "d", session: "s4"}}, nil)
	got := map[string]providers.Event{}
	for range 2 {
		ev := <-evs
		got[ev.InstanceID] = ev
	}
	assert.Equal(t, providers.ReasonDied, got["a"].Reason)
	assert.Equal(t, 3, got["a"].ExitCode)
	assert.Equal(t, "s1", got["a"].SessionID)
	assert.Equal(t, statepoll.KilledExitCode, got["b"].ExitCode)
	assert.Equal(t, "s2", got["b"].SessionID)

	// e starts between polls and dies before the next one lists it running.
	p.NoteRunning(&providers.Instance{ID: "e", SessionID: "s5"})
	pl.set([]state{{id: "a", session: "s1"}, {id: "d", session: "s4"}, {id: "e", session: "s5", exit: 1}}, nil)
	ev := <-evs
	assert.Equal(t, "e", ev.InstanceID)
	assert.Equal(t, 1, ev.ExitCode)

	// polls that keep failing end the stream with their error.
	boom := errors.New("boom")
	pl.set(nil, boom)
	require.ErrorIs(t, <-errs, boom)
	_, open := <-evs
	assert.False(t, open, "the events channel is closed")
}

func TestEventsFirstListFails(t *testing.T) {
	boom := errors.New("boom")
	pl := &platform{err: boom}
	evs, errs := newPoller(pl, "").Events(context.Background())
	require.ErrorIs(t, <-errs, boom)
	_, open := <-evs
	assert.False(t, open)
}
