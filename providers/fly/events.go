package fly

import (
	"context"
	"sync"
	"time"

	fly "github.com/superfly/fly-go"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// maxPollFailures is how many polls in a row may fail (after the 429
// retries) before Events reports the stream as failed.
const maxPollFailures = 3

// killedExitCode is reported for a Machine destroyed behind the gateway's
// back: like a kill, nothing of it is left.
const killedExitCode = 137

// seen is what a watch last saw of a Machine.
type seen struct {
	running bool
	state   string
	session string
}

// watch is one Events subscription: the Machines it knows and their last
// seen state.
type watch struct {
	mu    sync.Mutex
	known map[string]seen
}

// Events reports what happens to this provider's agent Machines by
// polling their states every PollInterval (Fly has no event stream): a
// running Machine that stops is providers.ReasonDied (with its exit code
// when Fly reports one), unless this Provider put it to sleep
// (providers.ReasonSlept); one suspended is ReasonSlept; one that
// vanished without this Provider destroying it is ReasonDied (exit code
// 137). The subscription is in place when Events returns: Machines this
// Provider creates or wakes afterwards are watched from then on, even
// between polls. When polls keep failing one error is sent (wrapping
// providers.ErrUnavailable when Fly cannot be reached) and both channels
// are closed; they are closed too when ctx ends.
func (p *Provider) Events(ctx context.Context) (<-chan providers.Event, <-chan error) {
	out := make(chan providers.Event)
	outErr := make(chan error, 1)
	w := &watch{known: map[string]seen{}}
	ms, err := p.listOwn(ctx)
	if err != nil {
		outErr <- err
		close(out)
		close(outErr)
		return out, outErr
	}
	w.diff(p, ms) // the starting point: no events
	p.addWatch(w, true)
	go func() {
		defer close(out)
		defer close(outErr)
		defer p.addWatch(w, false)
		p.poll(ctx, w, out, outErr)
	}()
	return out, outErr
}

// poll lists Machine states every PollInterval and sends what changed,
// until ctx ends or polls keep failing.
func (p *Provider) poll(ctx context.Context, w *watch, out chan<- providers.Event, outErr chan<- error) {
	ticker := time.NewTicker(time.Duration(p.opts.PollInterval))
	defer ticker.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		ms, err := p.listOwn(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failures++; failures >= maxPollFailures {
				outErr <- err
				return
			}
			p.logger.Debug("machine state poll failed", zap.Int("failures", failures), zap.Error(err))
			continue
		}
		failures = 0
		for _, ev := range w.diff(p, ms) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// diff records the Machines' states and returns the events their changes
// since the last poll make.
func (w *watch) diff(p *Provider, ms []*fly.Machine) []providers.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	var evs []providers.Event
	present := make(map[string]bool, len(ms))
	for _, m := range ms {
		present[m.ID] = true
		cur := seen{running: running(m.State), state: m.State, session: m.GetConfig().Metadata[MetaSession]}
		prev, ok := w.known[m.ID]
		w.known[m.ID] = cur
		if !ok || !prev.running || cur.running {
			continue
		}
		ev := providers.Event{InstanceID: m.ID, SessionID: cur.session, Reason: providers.ReasonDied, Time: now}
		switch {
		case m.State == stateSuspending || m.State == stateSuspended || p.sleeping.Has(m.ID):
			ev.Reason = providers.ReasonSlept
		default:
			ev.ExitCode, _ = lastExitCode(m)
		}
		evs = append(evs, ev)
	}
	for id, prev := range w.known {
		if present[id] {
			continue
		}
		delete(w.known, id)
		if p.destroyed(id) || p.creating(id) {
			continue
		}
		evs = append(evs, providers.Event{InstanceID: id, SessionID: prev.session, Reason: providers.ReasonDied, ExitCode: killedExitCode, Time: now})
	}
	return evs
}

// see records that a Machine runs now (created or woken by this Provider).
func (w *watch) see(inst *providers.Instance) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.known[inst.ID] = seen{running: true, state: stateStarted, session: inst.SessionID}
}

// addWatch adds (on) or removes a live subscription.
func (p *Provider) addWatch(w *watch, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.watchers[w] = struct{}{}
	} else {
		delete(p.watchers, w)
	}
}

// noteRunning tells every live subscription that inst's Machine runs, so
// a death before the next poll is still seen as one.
func (p *Provider) noteRunning(inst *providers.Instance) {
	p.mu.Lock()
	ws := make([]*watch, 0, len(p.watchers))
	for w := range p.watchers {
		ws = append(ws, w)
	}
	p.mu.Unlock()
	for _, w := range ws {
		w.see(inst)
	}
}
