package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// managedFilter selects this provider's containers: the agcluster labels,
// the provider's name and every ExtraLabel.
func (p *Provider) managedFilter() filters.Args {
	f := filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelProvider+"="+p.Name()),
	)
	for k, v := range p.opts.ExtraLabels {
		f.Add("label", k+"="+v)
	}
	return f
}

// owns reports whether a container with these labels is one of this
// provider's agents (the same selection as managedFilter).
func (p *Provider) owns(labels map[string]string) bool {
	if !identityKeys.Owns(labels, p.Name()) {
		return false
	}
	for k, v := range p.opts.ExtraLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// inspectOwn inspects one of this provider's agent containers for op. A
// container that does not exist is an error wrapping providers.ErrGone;
// one that is not this provider's is refused.
func (p *Provider) inspectOwn(ctx context.Context, op, id string) (container.InspectResponse, error) {
	info, err := p.cli.ContainerInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return info, fmt.Errorf("docker: %s %s: container not found (%w)", op, shortID(id), providers.ErrGone)
	}
	if err != nil {
		return info, p.wrap(fmt.Sprintf("%s %s: inspect", op, shortID(id)), err)
	}
	if info.Config == nil || !p.owns(info.Config.Labels) {
		return info, fmt.Errorf("docker: %s %s: not an agent container of provider %q", op, shortID(id), p.Name())
	}
	return info, nil
}

// List returns every agent this provider manages, running (StateRunning,
// with its URL) or stopped (StateStopped: asleep, killed or stopped by the
// engine; no URL), with its token recovered from the engine, so a
// restarted control plane finds them again. Containers this Provider is
// still creating are left out.
func (p *Provider) List(ctx context.Context) ([]*providers.Instance, error) {
	summaries, err := p.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: p.managedFilter()})
	if err != nil {
		return nil, p.wrap("list agent containers", err)
	}
	out := make([]*providers.Instance, 0, len(summaries))
	for _, s := range summaries {
		if s.State == container.StateRemoving || p.creating.Has(s.ID) {
			continue
		}
		info, err := p.cli.ContainerInspect(ctx, s.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed since the list
		}
		if err != nil {
			return nil, p.wrap(fmt.Sprintf("inspect container %s", shortID(s.ID)), err)
		}
		if info.Config == nil || info.State == nil {
			continue
		}
		inst, err := p.instance(info)
		if err != nil {
			p.logger.Warn("skipping agent container", zap.String("instance_id", s.ID), zap.Error(err))
			continue
		}
		out = append(out, inst)
	}
	return out, nil
}

// instance rebuilds an Instance from a container's labels, environment and
// state. A running container's URL is where it is published now.
func (p *Provider) instance(info container.InspectResponse) (*providers.Instance, error) {
	token := envToken(info.Config.Env)
	if token == "" {
		return nil, fmt.Errorf("docker: container %s has no %s", shortID(info.ID), agent.EnvToken)
	}
	inst := &providers.Instance{
		ID:        info.ID,
		State:     providers.StateStopped,
		Token:     token,
		CreatedAt: parseTime(info.Created, time.Time{}),
	}
	identityKeys.Identity(info.Config.Labels).Apply(inst)
	if info.State != nil && info.State.Running {
		url, err := p.agentURL(info)
		if err != nil {
			return nil, err
		}
		inst.State, inst.URL = providers.StateRunning, url
	}
	return inst, nil
}

// envToken returns the agent token in a container's environment.
func envToken(env []string) string {
	var token string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, agent.EnvToken+"="); ok {
			token = v
		}
	}
	return token
}

// Destroy removes the agent container (stopping it if needed) and its
// workspace and state volumes. An id that no longer exists is not an
// error; a container that is not this provider's is refused.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	info, err := p.inspectOwn(ctx, "destroy", id)
	if errors.Is(err, providers.ErrGone) {
		return nil
	}
	if err != nil {
		return err
	}
	p.sleeping.Forget(info.ID)
	vols := volumesOf(info.Config.Labels)
	err = p.cli.ContainerRemove(ctx, info.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
	case cerrdefs.IsConflict(err):
		// Another Destroy is removing it: wait until it is gone.
		waitC, errC := p.cli.ContainerWait(ctx, info.ID, container.WaitConditionRemoved)
		select {
		case <-waitC:
		case err := <-errC:
			if err != nil && !cerrdefs.IsNotFound(err) {
				return p.wrap(fmt.Sprintf("destroy %s: wait for removal", shortID(id)), err)
			}
		}
	default:
		return p.wrap(fmt.Sprintf("destroy %s: remove container", shortID(id)), err)
	}
	for _, v := range vols.names() {
		if err := p.cli.VolumeRemove(ctx, v, false); err != nil && !cerrdefs.IsNotFound(err) {
			return p.wrap(fmt.Sprintf("destroy %s: remove volume %s", shortID(id), v), err)
		}
	}
	p.logger.Info("agent container destroyed",
		zap.String("instance_id", info.ID),
		zap.String("session_id", info.Config.Labels[LabelSession]))
	return nil
}
