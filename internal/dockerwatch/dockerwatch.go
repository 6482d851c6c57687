// Package dockerwatch follows the Docker engine's events for the
// containers carrying a label, so that an emulator notices a container
// that dies or vanishes without an API call.
package dockerwatch

import (
	"context"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"go.uber.org/zap"
)

// EventSource is the part of the Docker client a Watcher uses.
type EventSource interface {
	// Events streams the engine's events matching options.
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
}

// Watcher delivers container events until Stop.
type Watcher struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Containers calls on, from one goroutine, for each event of a container
// carrying label (a "key=value" filter, e.g. "agcluster.flyemu=<id>"),
// until Stop. An event stream that ends by itself is logged to log as
// docker_events_ended.
func Containers(src EventSource, label string, log *zap.Logger, on func(events.Message)) *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{cancel: cancel, done: make(chan struct{})}
	msgs, errs := src.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", label),
	)})
	go func() {
		defer close(w.done)
		for {
			select {
			case msg := <-msgs:
				on(msg)
			case err := <-errs:
				if ctx.Err() == nil {
					log.Error("docker_events_ended", zap.Error(err))
				}
				return
			}
		}
	}()
	return w
}

// Stop ends the watch and returns once no call of on runs any more.
// A nil Watcher does nothing.
func (w *Watcher) Stop() {
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
}
