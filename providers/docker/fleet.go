package docker

import (
	"context"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Find returns the agent of session sessionID by its container name
// (sessionContainerName), running or stopped; an error wrapping
// providers.ErrGone when there is none. A claimed warm-pool agent, whose
// labels still name its pool entry, takes its session, owner and
// conversation from its binding.
func (p *Provider) Find(ctx context.Context, sessionID string) (*providers.Instance, error) {
	info, err := p.inspectOwn(ctx, "find", sessionContainerName(p.Name(), sessionID))
	if err != nil {
		return nil, err
	}
	inst, err := p.instance(info)
	if err != nil {
		return nil, err
	}
	if inst.SessionID == "" && inst.State == providers.StateRunning {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := inst.Client().Binding(bctx)
		if err != nil {
			return nil, fmt.Errorf("docker: find session %q: read the claimed agent's binding: %w", sessionID, err)
		}
		if st.Binding != nil {
			inst = inst.Bound(*st.Binding)
		}
	}
	if inst.SessionID != sessionID {
		// Claimed, but not bound yet: the claimant binds it next.
		inst.SessionID = sessionID
	}
	return inst, nil
}

// Claim renames the warm-pool agent inst to its session's container name.
// The engine's names are unique, so when the session has an agent
// already (another gateway made or claimed one) the rename fails and the
// error wraps providers.ErrExists; inst keeps its pool name then.
func (p *Provider) Claim(ctx context.Context, inst *providers.Instance, spec providers.Spec) (*providers.Instance, error) {
	name := sessionContainerName(p.Name(), spec.SessionID)
	if err := p.cli.ContainerRename(ctx, inst.ID, name); err != nil {
		switch {
		case cerrdefs.IsConflict(err):
			return nil, fmt.Errorf("docker: claim %s as %s: the name is taken: %w", shortID(inst.ID), name, providers.ErrExists)
		case cerrdefs.IsNotFound(err):
			return nil, fmt.Errorf("docker: claim %s: container not found (%w)", shortID(inst.ID), providers.ErrGone)
		}
		return nil, p.wrap(fmt.Sprintf("claim %s as %s", shortID(inst.ID), name), err)
	}
	return inst.Bound(agent.Binding{SessionID: spec.SessionID, Owner: spec.Owner, Conversation: spec.Conversation}), nil
}

// Interface guards.
var (
	_ providers.Finder  = (*Provider)(nil)
	_ providers.Claimer = (*Provider)(nil)
)
