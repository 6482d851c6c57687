package vercel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// running reports whether a session status counts as a running agent.
func running(status string) bool {
	return status == sandboxapi.StatusRunning || status == sandboxapi.StatusPending
}

// owns reports whether a sandbox is one of this provider's agents.
func (p *Provider) owns(sb *sandboxapi.Sandbox) bool {
	return identityKeys.Owns(sb.Tags, p.Name())
}

// listOwn lists this provider's sandboxes (by its provider tag).
func (p *Provider) listOwn(ctx context.Context) ([]sandboxapi.Sandbox, error) {
	all, err := p.api.AllSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: p.opts.ProjectID,
		TagKey: TagProvider, TagValue: p.Name(), Limit: 100})
	if err != nil {
		return nil, p.apiError("list", "", err)
	}
	out := all[:0]
	for _, sb := range all {
		if p.owns(&sb) {
			out = append(out, sb)
		}
	}
	return out, nil
}

// getOwn fetches one of this provider's sandboxes for op (resuming it
// when resume is set). One that does not exist is an error wrapping
// providers.ErrGone; one that is not this provider's is refused.
func (p *Provider) getOwn(ctx context.Context, op, name string, resume bool) (*sandboxapi.SandboxAndSession, error) {
	sb, err := p.api.GetSandbox(ctx, p.opts.ProjectID, name, resume)
	if sandboxapi.IsNotFound(err) && !projectMissing(err) {
		return nil, fmt.Errorf("vercel: %s sandbox %s: not found (%w)", op, name, providers.ErrGone)
	}
	if err != nil {
		return nil, p.apiError(op, name, err)
	}
	if !p.owns(&sb.Sandbox) {
		return nil, fmt.Errorf("vercel: %s sandbox %s: %w %q", op, name, errNotAgent, p.Name())
	}
	return sb, nil
}

// List returns every agent sandbox of this provider, running
// (StateRunning, with its route) or not (StateStopped: stopped by a
// sleep, by its timeout, or failed), with its token recomputed, so a
// restarted control plane finds them again. Sandboxes this Provider is
// still creating are left out. A running sandbox whose route this
// provider does not know yet costs one more call (the list has no
// routes).
func (p *Provider) List(ctx context.Context) ([]*providers.Instance, error) {
	sbs, err := p.listOwn(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*providers.Instance, 0, len(sbs))
	for _, sb := range sbs {
		if p.creating.Has(sb.Name) {
			continue
		}
		inst, err := p.listed(ctx, sb)
		if errors.Is(err, providers.ErrGone) {
			continue // deleted since the list
		}
		if err != nil {
			return nil, err
		}
		out = append(out, inst)
	}
	return out, nil
}

// listed is the Instance of a listed sandbox; a running one is watched
// for its timeout from now on (a restarted gateway extends it too).
func (p *Provider) listed(ctx context.Context, sb sandboxapi.Sandbox) (*providers.Instance, error) {
	if !running(sb.Status) {
		return p.instance(sb, nil)
	}
	routes := p.knownRoute(sb.Name)
	var expires time.Time
	if sb.ExpiresAt != 0 {
		expires = time.UnixMilli(sb.ExpiresAt)
	}
	if routes == nil || expires.IsZero() {
		got, err := p.getOwn(ctx, "list", sb.Name, false)
		if err != nil {
			return nil, err
		}
		return p.fetched(got)
	}
	return p.watched(sb, routes, expires)
}

// fetched is the Instance of a sandbox as GET answered it; a running one
// is watched for its timeout from now on.
func (p *Provider) fetched(got *sandboxapi.SandboxAndSession) (*providers.Instance, error) {
	return p.watched(got.Sandbox, got.Routes, got.Session.ExpiresAt())
}

// watched is the Instance of sb; when it runs, the keeper watches it for
// its timeout at expires and extends it while it is in use.
func (p *Provider) watched(sb sandboxapi.Sandbox, routes []sandboxapi.Route, expires time.Time) (*providers.Instance, error) {
	inst, err := p.instance(sb, routes)
	if err != nil || inst.State != providers.StateRunning {
		return inst, err
	}
	p.noteRunning(inst, expires, -1)
	return inst, nil
}

// knownRoute is the agent route this provider learnt for sandbox name, as
// a route list (nil when unknown).
func (p *Provider) knownRoute(name string) []sandboxapi.Route {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u, ok := p.routes[name]; ok {
		return []sandboxapi.Route{{URL: u, Port: agentPort}}
	}
	return nil
}

// instance rebuilds an Instance from a sandbox's tags and status: its
// token is recomputed from its name; a running one gets the agent route
// from routes.
func (p *Provider) instance(sb sandboxapi.Sandbox, routes []sandboxapi.Route) (*providers.Instance, error) {
	inst := &providers.Instance{
		ID:        sb.Name,
		State:     providers.StateStopped,
		Token:     p.token(sb.Name),
		CreatedAt: time.UnixMilli(sb.CreatedAt),
	}
	identityKeys.Identity(sb.Tags).Apply(inst)
	if running(sb.Status) {
		u, err := agentRoute(sb.Name, routes)
		if err != nil {
			return nil, err
		}
		inst.State, inst.URL = providers.StateRunning, u
	}
	return inst, nil
}

// Destroy deletes the agent's sandbox (stopping it if it runs). A sandbox
// that no longer exists is not an error; one that is not this provider's
// is refused. Its snapshots, if Vercel made any, expire on their own.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	sb, err := p.getOwn(ctx, "destroy", id, false)
	if errors.Is(err, providers.ErrGone) {
		return nil
	}
	if err != nil {
		return err
	}
	p.markGone(id)
	p.sleeping.Forget(id)
	p.stopped(id)
	if err := p.api.DeleteSandbox(ctx, p.opts.ProjectID, id); err != nil && !sandboxapi.IsNotFound(err) {
		return p.apiError("destroy", id, err)
	}
	p.logger.Info("agent sandbox destroyed",
		zap.String("instance_id", id),
		zap.String("session_id", sb.Sandbox.Tags[TagSession]))
	return nil
}

// markGone records a sandbox this Provider deleted, so the watcher does
// not report its disappearance as a death, and forgets its route.
func (p *Provider) markGone(name string) {
	p.gone.Mark(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.routes, name)
}

// noteRunning records that inst's sandbox runs, with its session expiring at
// expires: its route is remembered, the keeper extends it while it is in
// use (turns is the agent's turn count now, -1 unknown), and every live
// event subscription watches it.
func (p *Provider) noteRunning(inst *providers.Instance, expires time.Time, turns int64) {
	p.mu.Lock()
	p.routes[inst.ID] = inst.URL
	p.mu.Unlock()
	p.keeper.add(inst, expires, turns)
	p.poller.NoteRunning(inst)
}

// stopped records that sandbox name no longer runs (asleep, stopped,
// deleted): the keeper lets it be.
func (p *Provider) stopped(name string) {
	p.keeper.remove(name)
}

// projectMissing reports a 404 about the project rather than a sandbox.
func projectMissing(err error) bool {
	var ae *sandboxapi.APIError
	return errors.As(err, &ae) && ae.Status == 404 && containsFold(ae.Message, "project")
}
