package docker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/events"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Event is something that happened to a managed agent container.
type Event = providers.Event

// Events streams die and oom events of this provider's agent containers
// until ctx ends: a container's exit is providers.ReasonDied (with its exit
// code), unless this Provider stopped it with Sleep (providers.ReasonSlept);
// an out-of-memory kill inside it is providers.ReasonOOM. Both channels are closed then. When the stream fails
// (e.g. the engine restarts) one error is sent, wrapping
// providers.ErrUnavailable when the engine cannot be reached, and both
// channels are closed: call Events again to resubscribe. The subscription
// is in place when Events returns.
func (p *Provider) Events(ctx context.Context) (<-chan Event, <-chan error) {
	f := p.managedFilter()
	f.Add("type", string(events.ContainerEventType))
	f.Add("event", string(events.ActionDie))
	f.Add("event", string(events.ActionOOM))
	msgs, errs := p.cli.Events(ctx, events.ListOptions{Filters: f})

	out := make(chan Event)
	outErr := make(chan error, 1)
	go func() {
		defer close(out)
		defer close(outErr)
		for {
			select {
			case m := <-msgs:
				code, _ := strconv.Atoi(m.Actor.Attributes["exitCode"])
				ev := Event{
					InstanceID: m.Actor.ID,
					SessionID:  m.Actor.Attributes[LabelSession],
					Reason:     p.reason(m.Action, m.Actor.ID),
					ExitCode:   code,
					Time:       time.Unix(0, m.TimeNano),
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case err := <-errs:
				if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					outErr <- p.wrap("event stream", err)
				}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, outErr
}

func (p *Provider) reason(a events.Action, id string) providers.EventReason {
	switch {
	case a == events.ActionOOM:
		return providers.ReasonOOM
	case p.sleeping.Has(id):
		return providers.ReasonSlept
	}
	return providers.ReasonDied
}
