package session

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Lifecycle keeps a manager and its warm pool in step with what happens to
// their agents on each provider: it follows the providers' events, fills
// gaps in them by listing, and rediscovers the agents a previous run left.
type Lifecycle struct {
	// Manager owns the sessions.
	Manager *Manager
	// Pool holds the ready warm agents.
	Pool *Pool
	// Logger receives the lifecycle's logs; nil discards them.
	Logger *zap.Logger
}

func (l *Lifecycle) logger() *zap.Logger {
	if l.Logger == nil {
		return zap.NewNop()
	}
	return l.Logger
}

// Watch follows p's instance events until the returned func is called, so
// a conversation whose agent stopped is woken (or replaced) on its next
// message and a warm agent that died is replaced. After a gap in the
// events (the stream failed, e.g. the engine restarted) it reconciles the
// sessions with what p lists. A provider without events is not watched.
func (l *Lifecycle) Watch(p providers.Provider) (stop func()) {
	w, ok := p.(providers.Watcher)
	if !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		backoff := time.Second
		for resubscribed := false; ctx.Err() == nil; resubscribed = true {
			events, errs := w.Events(ctx)
			if resubscribed {
				l.reconcile(ctx, p)
			}
			for ev := range events {
				backoff = time.Second
				l.event(ev)
			}
			if err := <-errs; err != nil {
				l.logger().Warn("provider event stream failed; resubscribing", zap.String("provider", p.Name()),
					zap.Error(err), zap.Duration("after", backoff))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}()
	return cancel
}

// event hands a provider event to the sessions, or to the warm pool when
// no session has the instance. An "oom" alone means some process in the
// agent was killed for memory (often a tool): the agent lives on unless a
// "died" follows.
func (l *Lifecycle) event(ev providers.Event) {
	switch ev.Reason {
	case providers.ReasonDied, providers.ReasonExpired, providers.ReasonSlept:
		if !l.Manager.InstanceStopped(ev.InstanceID, ev.Reason) {
			l.Pool.InstanceDied(ev.InstanceID)
		}
	}
}

// reconcile marks sessions whose agents stopped while no events came.
func (l *Lifecycle) reconcile(ctx context.Context, p providers.Provider) {
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	insts, err := p.List(lctx)
	if err != nil {
		l.logger().Warn("provider list after an event gap failed", zap.String("provider", p.Name()), zap.Error(err))
		return
	}
	if n := l.Manager.Reconcile(p.Name(), insts); n > 0 {
		l.logger().Info("sessions found asleep after an event gap", zap.String("provider", p.Name()), zap.Int("count", n))
	}
}

// Rediscover adopts the agents a previous run left with p: sessions, awake
// or asleep (including warm agents that were handed out), and ready warm
// agents.
func (l *Lifecycle) Rediscover(p providers.Provider) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	insts, err := p.List(ctx)
	if err != nil {
		l.logger().Warn("session rediscovery failed", zap.String("provider", p.Name()), zap.Error(err))
		return
	}
	if n := l.Manager.Adopt(l.Pool.Adopt(ctx, insts)); n > 0 {
		l.logger().Info("sessions rediscovered", zap.String("provider", p.Name()), zap.Int("count", n))
	}
}
