package vercel

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// Sleep stops the agent's sandbox. It is persistent: Vercel keeps its
// file system (the workspace, and the agent's state directory with the
// CLI's session), so Wake resumes the conversation where it was.
//
// The sandbox's session, owner and conversation tags are set to inst's
// first (a warm-pool agent bound to a session after it was made), and its
// pool tag removed; the ID (the sandbox's name) stays. Sleeping a stopped
// sandbox is not an error. A sandbox that no longer exists is an error
// wrapping providers.ErrGone.
func (p *Provider) Sleep(ctx context.Context, inst *providers.Instance) (*providers.Instance, error) {
	began := time.Now()
	sb, err := p.getOwn(ctx, "sleep", inst.ID, false)
	if err != nil {
		return nil, err
	}
	if err := p.rebind(ctx, &sb.Sandbox, inst); err != nil {
		return nil, err
	}
	from := sb.Session.Status
	if running(from) {
		p.sleeping.Mark(inst.ID)
		p.stopped(inst.ID)
		if err := p.stopSession(ctx, inst.ID, sb.Session.ID); err != nil {
			p.sleeping.Forget(inst.ID)
			return nil, err
		}
	}
	stoppedSB := sb.Sandbox
	stoppedSB.Status = sandboxapi.StatusStopped
	out, err := p.instance(stoppedSB, nil)
	if err != nil {
		return nil, err
	}
	p.logger.Info("agent sandbox asleep",
		zap.String("instance_id", inst.ID),
		zap.String("session_id", out.SessionID),
		zap.String("from_status", from),
		zap.Duration("sleep_duration", time.Since(began)))
	return out, nil
}

// rebind sets the sandbox's session, owner and conversation tags to
// inst's and drops its pool tag, when they differ (Vercel replaces the
// tags as a whole).
func (p *Provider) rebind(ctx context.Context, sb *sandboxapi.Sandbox, inst *providers.Instance) error {
	if !identityKeys.Rebinds(sb.Tags, inst) {
		return nil
	}
	id := identityKeys.Identity(sb.Tags)
	id.SessionID, id.Owner, id.Conversation, id.Pool = inst.SessionID, inst.Owner, inst.Conversation, ""
	tags := identityKeys.Tags(id)
	if _, err := p.api.UpdateSandbox(ctx, p.opts.ProjectID, sb.Name, sandboxapi.UpdateSandboxRequest{Tags: tags}); err != nil {
		return p.apiError("sleep: retag", sb.Name, err)
	}
	sb.Tags = tags
	return nil
}

// stopSession stops session sid of sandbox name and waits until it has
// stopped (Vercel answers while it is still stopping).
func (p *Provider) stopSession(ctx context.Context, name, sid string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	res, err := p.api.StopSession(ctx, sid)
	if err != nil && !sandboxapi.IsStopped(err) {
		return p.apiError("sleep", name, err)
	}
	status := sandboxapi.StatusStopping
	if err == nil {
		status = res.Session.Status
	}
	for wait := 100 * time.Millisecond; status == sandboxapi.StatusStopping || status == sandboxapi.StatusSnapshotting || running(status); wait = min(wait*2, 2*time.Second) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("vercel: sleep sandbox %s: still %s: %w", name, status, ctx.Err())
		case <-time.After(wait):
		}
		s, err := p.api.GetSession(ctx, sid)
		if err != nil {
			return p.apiError("sleep: wait for the stop of", name, err)
		}
		status = s.Session.Status
	}
	return nil
}

// Wake resumes a stopped agent sandbox (Vercel boots a new session from
// its file system), starts its agent and returns once the agent answers
// ready; the agent resumes its CLI session from its state directory. A
// running sandbox is returned as it is once ready (its agent started
// again if it is not there). A sandbox still stopping is asked again
// after a backoff. One that no longer exists, or whose snapshot is gone,
// is an error wrapping providers.ErrGone.
func (p *Provider) Wake(ctx context.Context, id string) (*providers.Instance, error) {
	began := time.Now()
	readyCtx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	sb, err := p.getOwn(readyCtx, "wake", id, false)
	if err != nil {
		return nil, err
	}
	from := sb.Session.Status
	p.sleeping.Forget(id)
	if !running(from) {
		if sb, err = p.resume(readyCtx, id); err != nil {
			return nil, err
		}
	}
	inst, err := p.instance(sb.Sandbox, sb.Routes)
	if err != nil {
		return nil, err
	}
	if !running(from) || !p.agentAnswers(readyCtx, inst) {
		if err := p.startAgent(readyCtx, sb.Session.ID, id); err != nil {
			return nil, err
		}
	}
	if err := p.waitReady(readyCtx, inst); err != nil {
		return nil, fmt.Errorf("vercel: wake sandbox %s: %w", id, err)
	}
	p.noteRunning(inst, sb.Session.ExpiresAt(), p.turns(readyCtx, inst))
	p.logger.Info("agent sandbox awake",
		zap.String("instance_id", id),
		zap.String("session_id", inst.SessionID),
		zap.String("sandbox_session", sb.Session.ID),
		zap.String("from_status", from),
		zap.Duration("wake_duration", time.Since(began)))
	return inst, nil
}

// resume asks Vercel for a new session of sandbox name, again after a
// backoff while the last one is still on its way down.
func (p *Provider) resume(ctx context.Context, name string) (*sandboxapi.SandboxAndSession, error) {
	var sb *sandboxapi.SandboxAndSession
	err := retryTransient(ctx, func() error {
		got, err := p.api.GetSandbox(ctx, p.opts.ProjectID, name, true)
		sb = got
		return err
	})
	switch {
	case sandboxapi.IsNotFound(err) && !projectMissing(err):
		return nil, fmt.Errorf("vercel: wake sandbox %s: not found (%w)", name, providers.ErrGone)
	case sandboxapi.CodeOf(err) == sandboxapi.CodeSnapshotNotFound:
		return nil, fmt.Errorf("vercel: wake sandbox %s: its file system is gone (%w)", name, providers.ErrGone)
	case err != nil:
		return nil, p.apiError("wake", name, err)
	}
	return sb, nil
}

// agentAnswers reports whether the agent server answers at inst's route
// (ready or not): a sandbox can run without it (a wake interrupted before
// the agent started, the agent's process gone).
func (p *Provider) agentAnswers(ctx context.Context, inst *providers.Instance) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _, err := inst.Client().Health(ctx) // a proxy's answer is no agent health: an error
	return err == nil
}

// turns is the agent's finished turn count (-1 when it cannot be read).
func (p *Provider) turns(ctx context.Context, inst *providers.Instance) int64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := inst.Client().Stats(ctx)
	if err != nil {
		return -1
	}
	return st.Turns
}
