package vercel

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// ExpiresAt is when Vercel will stop inst's sandbox unless it is extended
// (zero when this provider does not know: the sandbox is not running, or
// another gateway runs it).
func (p *Provider) ExpiresAt(inst *providers.Instance) time.Time {
	return p.keeper.expiry(inst.ID)
}

// Extend adds d (at least a second) to the timeout of the sandbox's
// running session, within the plan's maximum (Vercel refuses more: the
// error then says so). A sandbox that is not running cannot be extended.
func (p *Provider) Extend(ctx context.Context, id string, d time.Duration) error {
	sb, err := p.getOwn(ctx, "extend", id, false)
	if err != nil {
		return err
	}
	if !running(sb.Session.Status) {
		return fmt.Errorf("vercel: extend sandbox %s: it is %s, not running", id, sb.Session.Status)
	}
	s, err := p.api.ExtendTimeout(ctx, sb.Session.ID, max(d, time.Second))
	if err != nil {
		return p.apiError("extend", id, err)
	}
	p.keeper.extended(id, s.ExpiresAt())
	return nil
}

// keeper extends the running sandboxes in use before their timeout: within
// margin of its expiry, a sandbox whose agent is busy, or has finished a
// turn since the keeper last looked (or, for a warm-pool agent, that was
// not handed out yet), gets Options.Timeout more. A sandbox left idle for
// a whole timeout is let go: Vercel stops it, and the event watcher
// reports it expired (a conversation that went to sleep, woken on its
// next message). An extension Vercel refuses (the plan's maximum) is not
// asked again for that session.
type keeper struct {
	p       *Provider
	timeout time.Duration
	margin  time.Duration
	every   time.Duration
	cancel  context.CancelFunc
	done    chan struct{}

	mu      sync.Mutex
	tracked map[string]*kept
}

// kept is what the keeper knows of one running sandbox.
type kept struct {
	inst    *providers.Instance
	expires time.Time
	turns   int64 // the agent's turn count when last seen; -1 unknown
	atLimit bool  // Vercel refused an extension: the plan's maximum
}

// startKeeper starts the keeper of p's sandboxes.
func startKeeper(p *Provider) *keeper {
	timeout := time.Duration(p.opts.Timeout)
	k := &keeper{p: p, timeout: timeout, tracked: map[string]*kept{}, done: make(chan struct{}),
		margin: min(max(timeout/4, 3*time.Second), 2*time.Minute),
		every:  min(max(timeout/20, 500*time.Millisecond), 15*time.Second)}
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	go k.run(ctx)
	return k
}

// stop ends the keeper.
func (k *keeper) stop() {
	k.cancel()
	<-k.done
}

// run looks at the tracked sandboxes every k.every until ctx ends.
func (k *keeper) run(ctx context.Context) {
	defer close(k.done)
	ticker := time.NewTicker(k.every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for _, c := range k.due() {
			k.check(ctx, c)
		}
	}
}

// due returns copies of the sandboxes within margin of their expiry.
func (k *keeper) due() []kept {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []kept
	for _, c := range k.tracked {
		if !c.atLimit && !c.expires.IsZero() && time.Until(c.expires) < k.margin {
			out = append(out, *c)
		}
	}
	return out
}

// check extends c's sandbox when it is in use.
func (k *keeper) check(ctx context.Context, c kept) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := c.inst.Client().Stats(ctx)
	if err != nil {
		k.p.logger.Debug("sandbox agent unreachable near its timeout; letting it stop",
			zap.String("instance_id", c.inst.ID), zap.Error(err))
		return
	}
	busy := st.Busy || c.inst.Pool != "" || (c.turns >= 0 && st.Turns != c.turns)
	k.seen(c.inst.ID, st.Turns)
	if !busy {
		return
	}
	err = k.p.Extend(ctx, c.inst.ID, k.timeout)
	switch {
	case err == nil:
		k.p.logger.Info("agent sandbox in use: timeout extended", zap.String("instance_id", c.inst.ID),
			zap.Time("expires", k.expiry(c.inst.ID)))
	case sandboxapi.StatusOf(err) == http.StatusBadRequest || sandboxapi.StatusOf(err) == http.StatusPaymentRequired:
		k.limit(c.inst.ID)
		k.p.logger.Info("agent sandbox at its plan's time limit: Vercel will stop it, and its conversation sleeps until its next message",
			zap.String("instance_id", c.inst.ID), zap.Error(err))
	default:
		k.p.logger.Warn("could not extend an agent sandbox's timeout", zap.String("instance_id", c.inst.ID), zap.Error(err))
	}
}

// add tracks a running sandbox.
func (k *keeper) add(inst *providers.Instance, expires time.Time, turns int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.tracked[inst.ID] = &kept{inst: inst, expires: expires, turns: turns}
}

// remove stops tracking a sandbox.
func (k *keeper) remove(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.tracked, name)
}

// expiry is a tracked sandbox's expiry (zero when untracked).
func (k *keeper) expiry(name string) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.tracked[name]; c != nil {
		return c.expires
	}
	return time.Time{}
}

// extended records a tracked sandbox's new expiry.
func (k *keeper) extended(name string, expires time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.tracked[name]; c != nil && !expires.IsZero() {
		c.expires = expires
	}
}

// seen records the agent's turn count.
func (k *keeper) seen(name string, turns int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.tracked[name]; c != nil {
		c.turns = turns
	}
}

// limit records that a sandbox's session cannot be extended further.
func (k *keeper) limit(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.tracked[name]; c != nil {
		c.atLimit = true
	}
}
