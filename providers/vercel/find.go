package vercel

import (
	"context"
	"errors"
	"fmt"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// Find returns the agent of session sessionID: the sandbox of its name
// (sandboxName), read with one GET. A sleeping agent is found as it is
// (StateStopped): a persistent sandbox keeps its name across a sleep and
// a wake (Vercel stops its session and later starts a new session of the
// same sandbox from its file system), so the name always leads to the
// session's current agent. A warm-pool agent, made under a random name,
// is found by its session tag once a Sleep has recorded it. An error
// wraps providers.ErrGone when the session has no agent.
func (p *Provider) Find(ctx context.Context, sessionID string) (*providers.Instance, error) {
	if sessionID == "" {
		return nil, fmt.Errorf("vercel: find: no session id (%w)", providers.ErrGone)
	}
	got, err := p.getOwn(ctx, "find", p.sandboxName(sessionID), false)
	if errors.Is(err, providers.ErrGone) {
		return p.findByTag(ctx, sessionID)
	}
	if err != nil {
		return nil, err
	}
	return p.fetched(got)
}

// findByTag returns this provider's sandbox tagged with session sessionID
// (a warm-pool agent a Sleep rebound); an error wrapping providers.ErrGone
// when there is none.
func (p *Provider) findByTag(ctx context.Context, sessionID string) (*providers.Instance, error) {
	sbs, err := p.api.AllSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: p.opts.ProjectID,
		TagKey: TagSession, TagValue: sessionID, Limit: 100})
	if err != nil {
		return nil, p.apiError("find: list", "", err)
	}
	for _, sb := range sbs {
		if p.owns(&sb) && sb.Tags[TagSession] == sessionID {
			return p.listed(ctx, sb)
		}
	}
	return nil, fmt.Errorf("vercel: find session %q: no agent (%w)", sessionID, providers.ErrGone)
}

// Interface guard.
var _ providers.Finder = (*Provider)(nil)
