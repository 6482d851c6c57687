package cloudflare

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Sleep asks the Worker to put the agent to sleep: it saves the agent's
// disk (workspace and CLI state) to R2 and removes the container (a
// Cloudflare container's disk does not outlive it). The agent's session,
// owner and conversation are recorded as inst's first (a warm-pool agent
// handed out after it was made); the ID stays. Sleeping an agent that is
// asleep is not an error; one that no longer exists is an error wrapping
// providers.ErrGone.
func (p *Provider) Sleep(ctx context.Context, inst *providers.Instance) (*providers.Instance, error) {
	began := time.Now()
	p.sleeping.Mark(inst.ID)
	var rec record
	err := p.api.do(ctx, http.MethodPost, agentPath(inst.ID, "/sleep"), sleepRequest{
		Provider: p.Name(), Token: p.token(inst.ID),
		Binding: &binding{SessionID: inst.SessionID, Owner: inst.Owner, Conversation: inst.Conversation},
	}, &rec)
	if err != nil {
		p.sleeping.Forget(inst.ID)
		return nil, p.apiError("sleep", inst.ID, err)
	}
	out := p.instance(rec)
	out.State, out.URL, out.Header = providers.StateStopped, "", nil
	p.logger.Info("agent container asleep",
		zap.String("instance_id", inst.ID),
		zap.String("session_id", out.SessionID),
		zap.Duration("sleep_duration", time.Since(began)))
	return out, nil
}

// Wake asks the Worker to start the agent's container again, its disk
// restored from the last snapshot, and returns once the agent answers
// ready; a running agent is returned as it is once ready. An agent that
// no longer exists (or whose snapshot is lost) is an error wrapping
// providers.ErrGone.
func (p *Provider) Wake(ctx context.Context, id string) (*providers.Instance, error) {
	began := time.Now()
	readyCtx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	p.sleeping.Forget(id)
	var rec record
	if err := p.api.do(readyCtx, http.MethodPost, agentPath(id, "/wake"), wakeRequest{Provider: p.Name(), Token: p.token(id)}, &rec); err != nil {
		return nil, p.apiError("wake", id, err)
	}
	if rec.State != stateRunning {
		return nil, fmt.Errorf("cloudflare: wake agent %s: %w (%w)", id, errNotRunning, providers.ErrNotReady)
	}
	startedAt := time.Now()
	inst := p.instance(rec)
	if err := p.waitReady(readyCtx, inst); err != nil {
		return nil, fmt.Errorf("cloudflare: wake agent %s: %w", id, err)
	}
	p.poller.NoteRunning(inst)
	p.logger.Info("agent container awake",
		zap.String("instance_id", id),
		zap.String("session_id", inst.SessionID),
		zap.Duration("start_duration", startedAt.Sub(began)),
		zap.Duration("ready_duration", time.Since(startedAt)),
		zap.Duration("wake_duration", time.Since(began)))
	return inst, nil
}
