package cloudflare

import (
	"context"
	"time"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/statepoll"
)

// Events reports what happens to this provider's agents by listing their
// states every PollInterval (Cloudflare has no event stream for
// containers): a running agent whose container stopped is
// providers.ReasonDied (exit code 137: the Worker reports none), unless
// this Provider put it to sleep (providers.ReasonSlept); one that vanished
// without this Provider destroying it is ReasonDied too. The subscription
// is in place when Events returns. When polls keep failing one error is
// sent and both channels are closed; they are closed too when ctx ends.
func (p *Provider) Events(ctx context.Context) (<-chan providers.Event, <-chan error) {
	return p.poller.Events(ctx)
}

// newPoller is the agent state poller behind Events.
func (p *Provider) newPoller() *statepoll.Poller[record] {
	return &statepoll.Poller[record]{
		Interval: time.Duration(p.opts.PollInterval),
		List:     p.list,
		Observe: func(r record) statepoll.Observed {
			return statepoll.Observed{ID: r.ID, Running: r.State == stateRunning, SessionID: r.SessionID}
		},
		Skip:     p.creating.Has,
		Stopped:  p.stopEvent,
		Vanished: func(id string) bool { return !p.gone.Has(id) && !p.creating.Has(id) },
		Logger:   p.logger,
		FailMsg:  "agent state poll failed",
	}
}

// stopEvent completes the event of an agent whose container stopped: this
// Provider's sleep, or a death.
func (p *Provider) stopEvent(r record, ev *providers.Event) {
	if p.sleeping.Has(r.ID) {
		ev.Reason = providers.ReasonSlept
		return
	}
	ev.ExitCode = statepoll.KilledExitCode
}
