package fly

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Sleep suspends the agent's Machine: Fly snapshots its memory, so the
// workspace, the CLI and its context come back as they were on resume.
// When Fly refuses the suspend (a Machine too big to snapshot, or one
// that was never started with suspend support), the Machine is stopped
// instead; its root file system, with the workspace and /state, is kept
// (the config asks Fly to persist it) and the agent resumes its
// conversation from /state when woken.
//
// The Machine's session, owner and conversation metadata are set to
// inst's first (a warm-pool agent bound to a session after it was made);
// Fly metadata can change, so the ID stays. Sleeping a suspended or
// stopped Machine is not an error. A Machine that no longer exists is an
// error wrapping providers.ErrGone.
func (p *Provider) Sleep(ctx context.Context, inst *providers.Instance) (*providers.Instance, error) {
	began := time.Now()
	m, err := p.getOwn(ctx, "sleep", inst.ID)
	if err != nil {
		return nil, err
	}
	if err := p.rebind(ctx, m, inst); err != nil {
		return nil, err
	}
	how := m.State
	if running(m.State) {
		p.sleeping.Mark(m.ID)
		how, err = p.suspendOrStop(ctx, m.ID)
		if err != nil {
			p.sleeping.Forget(m.ID)
			return nil, err
		}
	}
	if m, err = p.getOwn(ctx, "sleep", m.ID); err != nil {
		return nil, err
	}
	out, err := p.instance(m)
	if err != nil {
		return nil, err
	}
	out.State, out.URL, out.Header = providers.StateStopped, "", nil
	p.logger.Info("agent machine asleep",
		zap.String("instance_id", m.ID),
		zap.String("session_id", out.SessionID),
		zap.String("state", how),
		zap.Duration("sleep_duration", time.Since(began)))
	return out, nil
}

// rebind sets the Machine's session, owner and conversation metadata to
// inst's and drops its pool entry, when they differ.
func (p *Provider) rebind(ctx context.Context, m *fly.Machine, inst *providers.Instance) error {
	md := m.GetConfig().Metadata
	changed := false
	for k, v := range identityKeys.Binding(inst) {
		if md[k] == v {
			continue
		}
		changed = true
		if err := p.api.SetMetadata(ctx, p.opts.App, m.ID, k, v); err != nil {
			return p.apiError("sleep: set metadata "+k+" of", m.ID, err)
		}
	}
	if changed && md[MetaPool] != "" {
		if err := p.api.DeleteMetadata(ctx, p.opts.App, m.ID, MetaPool); err != nil && !isNotFound(err) {
			return p.apiError("sleep: delete metadata "+MetaPool+" of", m.ID, err)
		}
	}
	return nil
}

// suspendOrStop suspends the Machine under a lease, or stops it when Fly
// refuses the suspend, and waits for the resulting state, which it
// returns.
func (p *Provider) suspendOrStop(ctx context.Context, id string) (string, error) {
	state := stateSuspended
	err := p.withLease(ctx, "sleep", id, func(nonce string) error {
		err := p.api.Suspend(ctx, p.opts.App, id, nonce)
		if err != nil && !isNotFound(err) && ctx.Err() == nil && apiStatus(err) >= 400 && apiStatus(err) < 500 {
			p.logger.Warn("machine cannot be suspended; stopping it instead",
				zap.String("instance_id", id), zap.Int("status", apiStatus(err)), zap.String("reason", apiMessage(err)))
			state = stateStopped
			err = p.api.Stop(ctx, p.opts.App, fly.StopMachineInput{ID: id, Timeout: fly.Duration{Duration: stopTimeout}}, nonce)
		}
		if err != nil {
			return p.apiError("sleep", id, err)
		}
		return p.waitState(ctx, id, state)
	})
	return state, err
}

// waitState waits until the Machine is in state (repeating Fly's wait
// call, which holds at most 60 s) or ctx ends.
func (p *Provider) waitState(ctx context.Context, id, state string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	for {
		err := p.api.Wait(ctx, p.opts.App, id, flaps.WithWaitStates(state), flaps.WithWaitTimeout(remaining(ctx)))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fly: machine %s not %s: %w", id, state, ctx.Err())
		}
		if apiStatus(err) == http.StatusRequestTimeout {
			continue
		}
		m, gerr := p.api.Get(ctx, p.opts.App, id)
		switch {
		case isNotFound(gerr):
			return fmt.Errorf("fly: machine %s vanished while waiting for %s (%w)", id, state, providers.ErrGone)
		case gerr != nil:
			return p.apiError("wait for", id, gerr)
		case m.State == state:
			return nil
		case gone(m.State):
			return fmt.Errorf("fly: machine %s is %s (%w)", id, m.State, providers.ErrGone)
		}
		return p.apiError("wait for "+state+" of", id, err)
	}
}

// Wake starts (or resumes) a sleeping or stopped agent Machine under a
// lease and returns once its agent answers ready; a running one is
// returned as it is once ready. A Machine that no longer exists is an
// error wrapping providers.ErrGone.
func (p *Provider) Wake(ctx context.Context, id string) (*providers.Instance, error) {
	began := time.Now()
	m, err := p.getOwn(ctx, "wake", id)
	if err != nil {
		return nil, err
	}
	wasRunning := running(m.State)
	from := m.State
	readyCtx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	if !wasRunning {
		p.sleeping.Forget(id)
		err := p.withLease(ctx, "wake", id, func(nonce string) error {
			_, err := p.api.Start(ctx, p.opts.App, id, nonce)
			return err
		})
		if err != nil {
			if errors.Is(err, providers.ErrGone) {
				return nil, err
			}
			return nil, p.apiError("wake", id, err)
		}
		m.State = stateStarting // on its way: waitStarted waits for it
	}
	if m, err = p.waitStarted(readyCtx, m); err != nil {
		return nil, fmt.Errorf("fly: wake: %w", err)
	}
	startedAt := time.Now()
	inst, err := p.instance(m)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(readyCtx, inst); err != nil {
		return nil, fmt.Errorf("fly: wake machine %s: %w", id, err)
	}
	p.poller.NoteRunning(inst) // a death before the next poll is still seen as one
	p.logger.Info("agent machine awake",
		zap.String("instance_id", id),
		zap.String("session_id", inst.SessionID),
		zap.String("from_state", from),
		zap.Bool("was_running", wasRunning),
		zap.Duration("start_duration", startedAt.Sub(began)),
		zap.Duration("ready_duration", time.Since(startedAt)),
		zap.Duration("wake_duration", time.Since(began)))
	return inst, nil
}
