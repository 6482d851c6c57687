// Package statepoll turns polled instance states into providers.Event
// streams, for platforms that have no event stream of their own (Fly
// Machines, Vercel sandboxes): it lists the instances every interval,
// compares each with what the subscription last saw, and reports a
// running instance that stopped, and any instance that vanished (asleep
// ones too: another gateway may have removed a sleeping agent).
package statepoll

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// MaxFailures is how many polls in a row may fail before a subscription
// reports its stream as failed.
const MaxFailures = 3

// KilledExitCode is reported for an instance that vanished behind the
// provider's back: like a kill, nothing of it is left.
const KilledExitCode = 137

// Observed is what a poll sees of one instance.
type Observed struct {
	// ID is the instance's id (providers.Instance.ID).
	ID string
	// Running says whether the instance runs.
	Running bool
	// SessionID is the session the instance serves.
	SessionID string
}

// Poller follows a provider's instances for its Events subscriptions.
// Set its fields before the first Events call; its methods are safe for
// concurrent use.
type Poller[S any] struct {
	// Interval is how often the instances are listed.
	Interval time.Duration
	// List lists the provider's instances' current states. An error
	// should wrap providers.ErrUnavailable when the platform cannot be
	// reached: after MaxFailures in a row it is the stream's error.
	List func(ctx context.Context) ([]S, error)
	// Observe reads what matters of a state.
	Observe func(s S) Observed
	// Skip, when set, says that an instance is left out of a poll (e.g.
	// still being created).
	Skip func(id string) bool
	// Stopped completes the event of an instance seen running that no
	// longer runs: ev comes with InstanceID, SessionID, Time and
	// ReasonDied set.
	Stopped func(s S, ev *providers.Event)
	// Vanished says whether an instance seen before and no longer listed
	// makes an event (ReasonDied, KilledExitCode); false when the provider
	// itself destroyed it or is still creating it.
	Vanished func(id string) bool
	// Logger receives a failed poll (debug) as failMsg.
	Logger *zap.Logger
	// FailMsg is the log message of a failed poll, e.g.
	// "machine state poll failed".
	FailMsg string

	mu      sync.Mutex
	watches map[*watch]struct{}
}

// watch is one subscription: the instances it knows, as last seen.
type watch struct {
	mu    sync.Mutex
	known map[string]Observed
}

// Events subscribes to the instances' events. The subscription is in
// place when Events returns: instances the provider reports with
// [Poller.NoteRunning] afterwards are watched from then on, even between
// polls. When polls keep failing one error is sent and both channels are
// closed; they are closed too when ctx ends.
func (p *Poller[S]) Events(ctx context.Context) (<-chan providers.Event, <-chan error) {
	out := make(chan providers.Event)
	outErr := make(chan error, 1)
	w := &watch{known: map[string]Observed{}}
	states, err := p.List(ctx)
	if err != nil {
		outErr <- err
		close(out)
		close(outErr)
		return out, outErr
	}
	p.diff(w, states) // the starting point: no events
	p.subscribe(w, true)
	go func() {
		defer close(out)
		defer close(outErr)
		defer p.subscribe(w, false)
		p.poll(ctx, w, out, outErr)
	}()
	return out, outErr
}

// NoteRunning tells every live subscription that inst runs (created or
// woken by the provider), so that a death before the next poll is still
// seen as one.
func (p *Poller[S]) NoteRunning(inst *providers.Instance) {
	p.mu.Lock()
	ws := make([]*watch, 0, len(p.watches))
	for w := range p.watches {
		ws = append(ws, w)
	}
	p.mu.Unlock()
	for _, w := range ws {
		w.mu.Lock()
		w.known[inst.ID] = Observed{ID: inst.ID, Running: true, SessionID: inst.SessionID}
		w.mu.Unlock()
	}
}

// subscribe adds (on) or removes a live subscription.
func (p *Poller[S]) subscribe(w *watch, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.watches == nil {
			p.watches = map[*watch]struct{}{}
		}
		p.watches[w] = struct{}{}
	} else {
		delete(p.watches, w)
	}
}

// poll lists the states every Interval and sends what changed, until ctx
// ends or polls keep failing.
func (p *Poller[S]) poll(ctx context.Context, w *watch, out chan<- providers.Event, outErr chan<- error) {
	ticker := time.NewTicker(p.Interval)
	defer ticker.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		states, err := p.List(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failures++; failures >= MaxFailures {
				outErr <- err
				return
			}
			p.Logger.Debug(p.FailMsg, zap.Int("failures", failures), zap.Error(err))
			continue
		}
		failures = 0
		for _, ev := range p.diff(w, states) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// diff records the states in w and returns the events their changes
// since the last poll make.
func (p *Poller[S]) diff(w *watch, states []S) []providers.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	var evs []providers.Event
	present := make(map[string]bool, len(states))
	for _, s := range states {
		cur := p.Observe(s)
		if p.Skip != nil && p.Skip(cur.ID) {
			continue
		}
		present[cur.ID] = true
		prev, ok := w.known[cur.ID]
		w.known[cur.ID] = cur
		if cur.Running || !ok || !prev.Running {
			continue
		}
		ev := providers.Event{InstanceID: cur.ID, SessionID: cur.SessionID, Reason: providers.ReasonDied, Time: now}
		p.Stopped(s, &ev)
		evs = append(evs, ev)
	}
	for id, prev := range w.known {
		if present[id] {
			continue
		}
		delete(w.known, id)
		if !p.Vanished(id) {
			continue
		}
		evs = append(evs, providers.Event{InstanceID: id, SessionID: prev.SessionID, Reason: providers.ReasonDied, ExitCode: KilledExitCode, Time: now})
	}
	return evs
}
