package vercel

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// maxPollFailures is how many polls in a row may fail (after the 429
// retries) before Events reports the stream as failed.
const maxPollFailures = 3

// killedExitCode is reported for a sandbox deleted behind the gateway's
// back: like a kill, nothing of it is left.
const killedExitCode = 137

// seen is what a watch last saw of a sandbox.
type seen struct {
	running bool
	session string
}

// watch is one Events subscription: the sandboxes it knows and their last
// seen state.
type watch struct {
	mu    sync.Mutex
	known map[string]seen
}

// Events reports what happens to this provider's agent sandboxes by
// listing their statuses every PollInterval (Vercel has no event stream).
// A running sandbox that stops is providers.ReasonSlept when this
// Provider put it to sleep, providers.ReasonExpired when its timeout
// passed (Vercel stopped it: the conversation went to sleep), and
// providers.ReasonDied otherwise (failed, aborted, stopped by someone
// else); one that vanished without this Provider deleting it is
// ReasonDied (exit code 137). The subscription is in place when Events
// returns: sandboxes this Provider creates or wakes afterwards are
// watched from then on, even between polls. When polls keep failing one
// error is sent (wrapping providers.ErrUnavailable when Vercel cannot be
// reached) and both channels are closed; they are closed too when ctx
// ends.
func (p *Provider) Events(ctx context.Context) (<-chan providers.Event, <-chan error) {
	out := make(chan providers.Event)
	outErr := make(chan error, 1)
	w := &watch{known: map[string]seen{}}
	sbs, err := p.listOwn(ctx)
	if err != nil {
		outErr <- err
		close(out)
		close(outErr)
		return out, outErr
	}
	w.diff(p, sbs) // the starting point: no events
	p.addWatch(w, true)
	go func() {
		defer close(out)
		defer close(outErr)
		defer p.addWatch(w, false)
		p.poll(ctx, w, out, outErr)
	}()
	return out, outErr
}

// poll lists the sandboxes every PollInterval and sends what changed,
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
		sbs, err := p.listOwn(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failures++; failures >= maxPollFailures {
				outErr <- err
				return
			}
			p.logger.Debug("sandbox status poll failed", zap.Int("failures", failures), zap.Error(err))
			continue
		}
		failures = 0
		for _, ev := range w.diff(p, sbs) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// diff records the sandboxes' states and returns the events their changes
// since the last poll make.
func (w *watch) diff(p *Provider, sbs []sandboxapi.Sandbox) []providers.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	var evs []providers.Event
	present := make(map[string]bool, len(sbs))
	for _, sb := range sbs {
		if p.creating(sb.Name) {
			continue
		}
		present[sb.Name] = true
		cur := seen{running: running(sb.Status), session: sb.Tags[TagSession]}
		prev, ok := w.known[sb.Name]
		w.known[sb.Name] = cur
		if cur.running || !ok || !prev.running {
			continue
		}
		p.stopped(sb.Name)
		ev := providers.Event{InstanceID: sb.Name, SessionID: cur.session, Reason: p.stopReason(sb), Time: now}
		if ev.Reason != providers.ReasonDied {
			p.logger.Info("agent sandbox stopped", zap.String("instance_id", sb.Name), zap.String("reason", string(ev.Reason)))
		}
		evs = append(evs, ev)
	}
	for name, prev := range w.known {
		if present[name] {
			continue
		}
		delete(w.known, name)
		if p.destroyed(name) || p.creating(name) {
			continue
		}
		p.stopped(name)
		evs = append(evs, providers.Event{InstanceID: name, SessionID: prev.session, Reason: providers.ReasonDied, ExitCode: killedExitCode, Time: now})
	}
	return evs
}

// expirySlack is how close to its timeout a stop must be to count as the
// timeout's.
const expirySlack = time.Second

// stopReason says why a sandbox that ran is stopped: this Provider's
// sleep, its timeout (it stopped at its expiry, which Vercel reports), or
// anything else (a failure, a stop through the dashboard): a death.
func (p *Provider) stopReason(sb sandboxapi.Sandbox) providers.EventReason {
	switch {
	case p.sleeping.Has(sb.Name):
		return providers.ReasonSlept
	case sb.Status == sandboxapi.StatusFailed || sb.Status == sandboxapi.StatusAborted:
		return providers.ReasonDied
	case sb.ExpiresAt != 0 && sb.StatusUpdatedAt != 0 &&
		time.UnixMilli(sb.StatusUpdatedAt).After(time.UnixMilli(sb.ExpiresAt).Add(-expirySlack)):
		return providers.ReasonExpired
	}
	return providers.ReasonDied
}

// see records that a sandbox runs now (created or woken by this Provider).
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
