package fly

import (
	"context"
	"time"

	fly "github.com/superfly/fly-go"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/statepoll"
)

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
	return p.poller.Events(ctx)
}

// newPoller is the Machine state poller behind Events.
func (p *Provider) newPoller() *statepoll.Poller[*fly.Machine] {
	return &statepoll.Poller[*fly.Machine]{
		Interval: time.Duration(p.opts.PollInterval),
		List:     p.listOwn,
		Observe: func(m *fly.Machine) statepoll.Observed {
			return statepoll.Observed{ID: m.ID, Running: running(m.State), SessionID: m.GetConfig().Metadata[MetaSession]}
		},
		Stopped:  p.stopEvent,
		Vanished: func(id string) bool { return !p.gone.Has(id) && !p.creating.Has(id) },
		Logger:   p.logger,
		FailMsg:  "machine state poll failed",
	}
}

// stopEvent completes the event of a Machine that stopped: asleep when
// suspended or put to sleep by this Provider, else died with its exit
// code.
func (p *Provider) stopEvent(m *fly.Machine, ev *providers.Event) {
	switch {
	case m.State == stateSuspending || m.State == stateSuspended || p.sleeping.Has(m.ID):
		ev.Reason = providers.ReasonSlept
	default:
		ev.ExitCode, _ = lastExitCode(m)
	}
}
