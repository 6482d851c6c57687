package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Agent states the Worker reports.
const (
	stateRunning = "running"
	stateStopped = "stopped"
)

// Create asks the Worker to start an agent for spec (its container with an
// empty disk) and returns once the agent's /health answers ready through
// the Worker. The agent's id is the session id (a warm-pool agent's is
// "pool_" and random hex), the name of its Durable Object: a second Create
// of the session is refused by the object (409 "exists"), with an error
// wrapping providers.ErrExists, and the first agent is left alone. On any
// other failure the agent is destroyed. The
// Spec's Image and Limits are not applied: the Worker's wrangler.jsonc sets
// the image and the instance type.
func (p *Provider) Create(ctx context.Context, spec providers.Spec) (_ *providers.Instance, err error) {
	what := fmt.Sprintf("cloudflare: create agent for session %q", spec.SessionID)
	cfgJSON, err := providers.CheckCreate(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	id := spec.SessionID
	if id == "" {
		id = "pool_" + randhex.String(12)
	}
	env := maps.Clone(p.opts.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, spec.Env)

	began := time.Now()
	p.creating.Mark(id)
	defer p.creating.Forget(id)
	readyCtx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	var rec record
	err = p.api.do(readyCtx, http.MethodPut, agentPath(id, ""), createRequest{
		Provider: p.Name(), SessionID: spec.SessionID, Owner: spec.Owner, Conversation: spec.Conversation,
		ConfigID: spec.ConfigID, Pool: spec.Pool, Token: p.token(id), Config: string(cfgJSON), Env: env,
	}, &rec)
	if err != nil {
		// "exists": the session's agent is another call's, nothing of
		// this call's to undo.
		if _, code := codeOf(err); code != "exists" {
			p.cleanup(ctx, id)
		}
		return nil, p.apiError("create", id, err)
	}
	defer func() {
		if err != nil {
			p.cleanup(ctx, id)
		}
	}()
	startedAt := time.Now()
	inst := p.instance(rec)
	if err := p.waitReady(readyCtx, inst); err != nil {
		return nil, fmt.Errorf("%s: agent %s: %w", what, id, err)
	}
	p.poller.NoteRunning(inst)
	p.logger.Info("agent container created",
		zap.String("instance_id", id),
		zap.String("session_id", spec.SessionID),
		zap.String("url", inst.URL),
		zap.Duration("start_duration", startedAt.Sub(began)),
		zap.Duration("ready_duration", time.Since(startedAt)),
		zap.Duration("ready_after", time.Since(began)))
	return inst, nil
}

// waitReady waits until the agent's /health answers ready through the
// Worker.
func (p *Provider) waitReady(ctx context.Context, inst *providers.Instance) error {
	err := providers.WaitReady(ctx, &agentclient.Client{BaseURL: inst.URL, Token: inst.Token, Header: inst.Header})
	if err != nil {
		return fmt.Errorf("not ready after %s: %w", time.Duration(p.opts.ReadyTimeout), err)
	}
	return nil
}

// cleanup destroys what a failed Create made.
func (p *Provider) cleanup(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancel()
	p.gone.Mark(id)
	if err := p.api.do(ctx, http.MethodDelete, agentPath(id, "?provider="+url.QueryEscape(p.Name())), nil, nil); err != nil {
		if status, _ := codeOf(err); status != http.StatusNotFound {
			p.logger.Warn("could not destroy an agent after a failed create", zap.String("instance_id", id), zap.Error(err))
		}
	}
}

// Destroy asks the Worker to destroy the agent: its container, its
// snapshot and its metadata. An agent that no longer exists is not an
// error; one of another provider is refused.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	p.gone.Mark(id)
	p.sleeping.Forget(id)
	err := p.api.do(ctx, http.MethodDelete, agentPath(id, "?provider="+url.QueryEscape(p.Name())), nil, nil)
	if status, _ := codeOf(err); status == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return p.apiError("destroy", id, err)
	}
	p.logger.Info("agent container destroyed", zap.String("instance_id", id))
	return nil
}

// List returns every agent of this provider, running (StateRunning, with
// its route) or not (StateStopped: asleep, or its container died), so a
// restarted control plane finds them again. Agents this Provider is still
// creating are left out.
func (p *Provider) List(ctx context.Context) ([]*providers.Instance, error) {
	recs, err := p.list(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*providers.Instance, 0, len(recs))
	for _, r := range recs {
		if p.creating.Has(r.ID) {
			continue
		}
		out = append(out, p.instance(r))
	}
	return out, nil
}

// list asks the Worker for this provider's agents.
func (p *Provider) list(ctx context.Context) ([]record, error) {
	return p.listWhere(ctx, url.Values{})
}

// listWhere asks the Worker for this provider's agents that match q (its
// session filter).
func (p *Provider) listWhere(ctx context.Context, q url.Values) ([]record, error) {
	var body struct {
		Agents []record `json:"agents"`
	}
	q.Set("provider", p.Name())
	if err := p.api.do(ctx, http.MethodGet, "/v1/agents?"+q.Encode(), nil, &body); err != nil {
		return nil, p.apiError("list", "", err)
	}
	return body.Agents, nil
}

// instance is the Instance of a Worker record: its route through the
// Worker when it runs, and its token.
func (p *Provider) instance(r record) *providers.Instance {
	inst := &providers.Instance{
		ID:           r.ID,
		Provider:     r.Provider,
		SessionID:    r.SessionID,
		Owner:        r.Owner,
		Conversation: r.Conversation,
		ConfigID:     r.ConfigID,
		Pool:         r.Pool,
		State:        providers.StateStopped,
		Token:        p.token(r.ID),
		CreatedAt:    parseTime(r.CreatedAt),
	}
	if r.State == stateRunning {
		inst.State = providers.StateRunning
		inst.URL = p.opts.WorkerURL + agentPath(r.ID, "/agent")
		inst.Header = http.Header{HeaderWorkerAuth: {"Bearer " + p.opts.Secret}}
	}
	return inst
}

// errNotRunning marks a woken agent the Worker does not report running.
var errNotRunning = errors.New("the Worker does not report the agent running")
