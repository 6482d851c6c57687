package fly

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	fly "github.com/superfly/fly-go"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// listFilter is the list call's query: this provider's Machines (Fly
// matches metadata.<key>=<value>; owns checks the rest).
func (p *Provider) listFilter() string {
	return "metadata." + MetaProvider + "=" + url.QueryEscape(p.Name())
}

// owns reports whether a Machine is one of this provider's agents.
func (p *Provider) owns(m *fly.Machine) bool {
	return identityKeys.Owns(m.GetConfig().Metadata, p.Name())
}

// gone reports whether a Machine state means it no longer exists.
func gone(state string) bool {
	return state == stateDestroying || state == stateDestroyed
}

// running reports whether a Machine state counts as a running agent.
func running(state string) bool {
	switch state {
	case stateStarted, stateStarting, "replacing", "updating":
		return true
	}
	return false
}

// listOwn lists this provider's existing Machines.
func (p *Provider) listOwn(ctx context.Context) ([]*fly.Machine, error) {
	ms, err := p.api.List(ctx, p.opts.App, p.listFilter())
	if err != nil {
		return nil, p.apiError("list", "", err)
	}
	out := ms[:0]
	for _, m := range ms {
		if m.Config != nil && p.owns(m) && !gone(m.State) {
			out = append(out, m)
		}
	}
	return out, nil
}

// getOwn fetches one of this provider's Machines for op. A Machine that
// does not exist (or is being destroyed) is an error wrapping
// providers.ErrGone; one that is not this provider's is refused.
func (p *Provider) getOwn(ctx context.Context, op, id string) (*fly.Machine, error) {
	m, err := p.api.Get(ctx, p.opts.App, id)
	if isNotFound(err) {
		return nil, fmt.Errorf("fly: %s machine %s: not found (%w)", op, id, providers.ErrGone)
	}
	if err != nil {
		return nil, p.apiError(op, id, err)
	}
	if gone(m.State) {
		return nil, fmt.Errorf("fly: %s machine %s: %s (%w)", op, id, m.State, providers.ErrGone)
	}
	if m.Config == nil || !p.owns(m) {
		return nil, fmt.Errorf("fly: %s machine %s: not an agent machine of provider %q", op, id, p.Name())
	}
	return m, nil
}

// List returns every agent Machine of this provider, running
// (StateRunning, with its URL) or not (StateStopped: suspended, stopped or
// failed), with its token recovered from the Machine's config, so a
// restarted control plane finds them again. Machines this Provider is
// still creating are left out.
func (p *Provider) List(ctx context.Context) ([]*providers.Instance, error) {
	ms, err := p.listOwn(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*providers.Instance, 0, len(ms))
	for _, m := range ms {
		if p.creating.Has(m.ID) {
			continue
		}
		inst, err := p.instance(m)
		if err != nil {
			p.logger.Warn("skipping agent machine", zap.String("instance_id", m.ID), zap.Error(err))
			continue
		}
		out = append(out, inst)
	}
	return out, nil
}

// instance rebuilds an Instance from a Machine's metadata, config and
// state. A running Machine gets its route (URL and header).
func (p *Provider) instance(m *fly.Machine) (*providers.Instance, error) {
	cfg := m.GetConfig()
	token := cfg.Env[agent.EnvToken]
	if token == "" {
		return nil, fmt.Errorf("fly: machine %s: %w", m.ID, errNoToken)
	}
	inst := &providers.Instance{
		ID:        m.ID,
		State:     providers.StateStopped,
		Token:     token,
		CreatedAt: parseTime(m.CreatedAt),
	}
	identityKeys.Identity(cfg.Metadata).Apply(inst)
	if running(m.State) {
		u, h, err := p.agentURL(m)
		if err != nil {
			return nil, err
		}
		inst.State, inst.URL, inst.Header = providers.StateRunning, u, h
	}
	return inst, nil
}

// parseTime reads a Machines API timestamp (RFC 3339; zero if absent).
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Destroy destroys the agent's Machine (killing it if it runs), under a
// lease. A Machine that no longer exists is not an error; one that is not
// this provider's is refused.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	m, err := p.getOwn(ctx, "destroy", id)
	if errors.Is(err, providers.ErrGone) {
		return nil
	}
	if err != nil {
		return err
	}
	p.gone.Mark(id)
	p.sleeping.Forget(id)
	err = p.withLease(ctx, "destroy", id, func(nonce string) error {
		return p.api.Destroy(ctx, p.opts.App, fly.RemoveMachineInput{ID: id, Kill: true}, nonce)
	})
	if err != nil && !errors.Is(err, providers.ErrGone) && !isNotFound(err) {
		return p.apiError("destroy", id, err)
	}
	if err == nil {
		// Fly destroys asynchronously: return once it has.
		if err := p.waitState(ctx, id, stateDestroyed); err != nil && !errors.Is(err, providers.ErrGone) {
			p.logger.Warn("machine not yet destroyed", zap.String("instance_id", id), zap.Error(err))
		}
	}
	p.logger.Info("agent machine destroyed",
		zap.String("instance_id", id),
		zap.String("session_id", m.GetConfig().Metadata[MetaSession]))
	return nil
}

// withLease runs fn holding a lease on Machine id, so two gateways sharing
// the app do not mutate it at once; fn gets the lease nonce to send. A
// Machine that vanished meanwhile is an error wrapping providers.ErrGone.
func (p *Provider) withLease(ctx context.Context, op, id string, fn func(nonce string) error) error {
	lctx, cancel := context.WithTimeout(ctx, leaseWait)
	ttl := leaseTTL
	lease, err := p.api.AcquireLease(lctx, p.opts.App, id, &ttl)
	cancel()
	if err != nil {
		// flaps retries any refusal until lctx ends: ask whether the
		// Machine is still there before calling it a lease conflict.
		if _, gerr := p.api.Get(ctx, p.opts.App, id); isNotFound(gerr) {
			return fmt.Errorf("fly: %s machine %s: not found (%w)", op, id, providers.ErrGone)
		}
		return fmt.Errorf("fly: %s machine %s: take its lease: %w", op, id, err)
	}
	nonce := ""
	if lease.Data != nil {
		nonce = lease.Data.Nonce
	}
	defer p.releaseLease(ctx, op, id, nonce)
	return fn(nonce)
}

// releaseLease gives a lease back (it expires on its own otherwise).
func (p *Provider) releaseLease(ctx context.Context, op, id, nonce string) {
	if nonce == "" || op == "destroy" {
		return // a destroyed Machine's lease goes with it
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := p.api.ReleaseLease(ctx, p.opts.App, id, nonce); err != nil && !isNotFound(err) {
		p.logger.Warn("could not release a machine lease", zap.String("instance_id", id), zap.String("op", op), zap.Error(err))
	}
}
