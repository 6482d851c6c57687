package cloudflare

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// maxPollFailures is how many polls in a row may fail before Events
// reports the stream as failed.
const maxPollFailures = 3

// killedExitCode is reported for an agent that died or vanished behind the
// gateway's back (the Worker does not report exit codes).
const killedExitCode = 137

// seen is what a watch last saw of an agent.
type seen struct {
	running bool
	session string
}

// watch is one Events subscription: the agents it knows and their last
// seen state.
type watch struct {
	mu    sync.Mutex
	known map[string]seen
}

// Events reports what happens to this provider's agents by listing their
// states every PollInterval (Cloudflare has no event stream for
// containers): a running agent whose container stopped is
// providers.ReasonDied, unless this Provider put it to sleep
// (providers.ReasonSlept); one that vanished without this Provider
// destroying it is ReasonDied too. The subscription is in place when
// Events returns. When polls keep failing one error is sent and both
// channels are closed; they are closed too when ctx ends.
func (p *Provider) Events(ctx context.Context) (<-chan providers.Event, <-chan error) {
	out := make(chan providers.Event)
	outErr := make(chan error, 1)
	w := &watch{known: map[string]seen{}}
	recs, err := p.list(ctx)
	if err != nil {
		outErr <- err
		close(out)
		close(outErr)
		return out, outErr
	}
	w.diff(p, recs) // the starting point: no events
	p.addWatch(w, true)
	go func() {
		defer close(out)
		defer close(outErr)
		defer p.addWatch(w, false)
		p.poll(ctx, w, out, outErr)
	}()
	return out, outErr
}

// poll lists the agents every PollInterval and sends what changed, until
// ctx ends or polls keep failing.
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
		recs, err := p.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failures++; failures >= maxPollFailures {
				outErr <- err
				return
			}
			p.logger.Debug("agent state poll failed", zap.Int("failures", failures), zap.Error(err))
			continue
		}
		failures = 0
		for _, ev := range w.diff(p, recs) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// diff records the agents' states and returns the events their changes
// since the last poll make.
func (w *watch) diff(p *Provider, recs []record) []providers.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	var evs []providers.Event
	present := make(map[string]bool, len(recs))
	for _, r := range recs {
		present[r.ID] = true
		cur := seen{running: r.State == stateRunning, session: r.SessionID}
		prev, ok := w.known[r.ID]
		w.known[r.ID] = cur
		if !ok || !prev.running || cur.running || p.creating(r.ID) {
			continue
		}
		ev := providers.Event{InstanceID: r.ID, SessionID: cur.session, Reason: providers.ReasonDied, ExitCode: killedExitCode, Time: now}
		if p.sleeping.Has(r.ID) {
			ev.Reason, ev.ExitCode = providers.ReasonSlept, 0
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

// see records that an agent runs now (created or woken by this Provider).
func (w *watch) see(inst *providers.Instance) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.known[inst.ID] = seen{running: true, session: inst.SessionID}
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

// noteRunning tells every live subscription that inst's agent runs, so a
// death before the next poll is still seen as one.
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
