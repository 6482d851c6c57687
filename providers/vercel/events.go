package vercel

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/statepoll"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

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
	return p.poller.Events(ctx)
}

// newPoller is the sandbox status poller behind Events.
func (p *Provider) newPoller() *statepoll.Poller[sandboxapi.Sandbox] {
	return &statepoll.Poller[sandboxapi.Sandbox]{
		Interval: time.Duration(p.opts.PollInterval),
		List:     p.listOwn,
		Observe: func(sb sandboxapi.Sandbox) statepoll.Observed {
			return statepoll.Observed{ID: sb.Name, Running: running(sb.Status), SessionID: sb.Tags[TagSession]}
		},
		Skip:     p.creating.Has,
		Stopped:  p.stopEvent,
		Vanished: p.vanished,
		Logger:   p.logger,
		FailMsg:  "sandbox status poll failed",
	}
}

// stopEvent completes the event of a sandbox that stopped (see
// stopReason); the keeper lets it be.
func (p *Provider) stopEvent(sb sandboxapi.Sandbox, ev *providers.Event) {
	p.stopped(sb.Name)
	ev.Reason = p.stopReason(sb)
	if ev.Reason != providers.ReasonDied {
		p.logger.Info("agent sandbox stopped", zap.String("instance_id", sb.Name), zap.String("reason", string(ev.Reason)))
	}
}

// vanished says whether a sandbox no longer listed died: not when this
// Provider deleted it or is creating it. The keeper lets it be.
func (p *Provider) vanished(name string) bool {
	if p.gone.Has(name) || p.creating.Has(name) {
		return false
	}
	p.stopped(name)
	return true
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
