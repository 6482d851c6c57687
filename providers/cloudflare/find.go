package cloudflare

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Find returns the agent of session sessionID: the agent whose id (its
// Durable Object's name) is the session id, as the Worker describes it
// (GET /v1/agents/{id}), running or asleep. A warm-pool agent, whose id
// is "pool_..." and random, is found by the session its record serves
// once a Sleep has recorded it (the Worker's list filtered by session).
// An error wraps providers.ErrGone when the session has no agent.
func (p *Provider) Find(ctx context.Context, sessionID string) (*providers.Instance, error) {
	if sessionID == "" {
		return nil, fmt.Errorf("cloudflare: find: no session id (%w)", providers.ErrGone)
	}
	var rec record
	err := p.api.do(ctx, http.MethodGet, agentPath(sessionID, "?provider="+url.QueryEscape(p.Name())), nil, &rec)
	if status, _ := codeOf(err); status == http.StatusNotFound {
		return p.findBySession(ctx, sessionID)
	}
	if err != nil {
		return nil, p.apiError("find", sessionID, err)
	}
	return p.found(rec), nil
}

// findBySession returns this provider's agent whose record serves session
// sessionID; an error wrapping providers.ErrGone when there is none.
func (p *Provider) findBySession(ctx context.Context, sessionID string) (*providers.Instance, error) {
	recs, err := p.listWhere(ctx, url.Values{"session": {sessionID}})
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.SessionID == sessionID {
			return p.found(r), nil
		}
	}
	return nil, fmt.Errorf("cloudflare: find session %q: no agent (%w)", sessionID, providers.ErrGone)
}

// found is the Instance of a record Find returns; a running one is watched
// by the event subscriptions from now on.
func (p *Provider) found(r record) *providers.Instance {
	inst := p.instance(r)
	if inst.State == providers.StateRunning {
		p.poller.NoteRunning(inst)
	}
	return inst
}

// Interface guard.
var _ providers.Finder = (*Provider)(nil)
