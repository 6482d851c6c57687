package docker

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Sleep stops the agent's container gracefully (SIGTERM, then SIGKILL
// after 10 seconds), keeping its workspace and state volumes, so [Wake]
// can start it again with its files and CLI session.
//
// Docker labels cannot change, so when the container's session, owner or
// conversation labels differ from inst's (a warm-pool agent bound to a
// session after it was made), the stopped container is re-created with
// the same configuration, environment, token and volumes but inst's
// session labels and no pool label, and the old one is removed: the
// returned instance then has a new ID. Sleeping a stopped agent is not an
// error. A container that no longer exists is an error wrapping
// providers.ErrGone.
func (p *Provider) Sleep(ctx context.Context, inst *providers.Instance) (*providers.Instance, error) {
	began := time.Now()
	info, err := p.inspectOwn(ctx, "sleep", inst.ID)
	if err != nil {
		return nil, err
	}
	id := info.ID
	p.sleeping.Mark(id)
	timeout := int(stopTimeout / time.Second)
	if err := p.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout}); err != nil {
		p.sleeping.Forget(id)
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("docker: sleep %s: container removed meanwhile (%w)", shortID(id), providers.ErrGone)
		}
		return nil, p.wrap(fmt.Sprintf("sleep %s: stop", shortID(id)), err)
	}
	stoppedAt := time.Now()

	rebind := identityKeys.Rebinds(info.Config.Labels, inst)
	if rebind {
		if id, err = p.recreate(ctx, info, inst); err != nil {
			return nil, err
		}
	}
	if info, err = p.cli.ContainerInspect(ctx, id); err != nil {
		return nil, p.wrap(fmt.Sprintf("sleep %s: inspect", shortID(id)), err)
	}
	out, err := p.instance(info)
	if err != nil {
		return nil, err
	}
	fields := []zap.Field{
		zap.String("instance_id", id),
		zap.String("session_id", out.SessionID),
		zap.Duration("stop_duration", stoppedAt.Sub(began)),
		zap.Duration("sleep_duration", time.Since(began)),
	}
	if rebind {
		fields = append(fields, zap.String("replaced_instance_id", inst.ID))
	}
	p.logger.Info("agent container asleep", fields...)
	return out, nil
}

// recreate replaces the stopped container info by one with inst's
// session labels (and no pool label), the same configuration, environment
// and volumes. It returns the new container's id. On failure the old
// container is left as it was, its name given back.
func (p *Provider) recreate(ctx context.Context, info container.InspectResponse, inst *providers.Instance) (string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancel()
	cfg := *info.Config
	cfg.Hostname = "" // the old container's: the new one gets its own
	cfg.Labels = maps.Clone(info.Config.Labels)
	maps.Copy(cfg.Labels, identityKeys.Binding(inst))
	delete(cfg.Labels, LabelPool)
	var netCfg *network.NetworkingConfig
	if mode := info.HostConfig.NetworkMode; mode.IsUserDefined() {
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{mode.NetworkName(): {}}}
	}
	name := sessionContainerName(p.Name(), inst.SessionID)
	// A claimed agent's container holds the session's name until the new
	// one takes it: it steps aside first, and gets the name back on failure.
	claimed := strings.TrimPrefix(info.Name, "/") == name
	if claimed {
		if err := p.cli.ContainerRename(ctx, info.ID, name+"-replaced-"+randhex.String(3)); err != nil {
			return "", p.wrap(fmt.Sprintf("sleep %s: rename before re-creating", shortID(info.ID)), err)
		}
	}
	restoreName := func() {
		if !claimed {
			return
		}
		if err := p.cli.ContainerRename(ctx, info.ID, name); err != nil {
			p.logger.Warn("could not give a container its name back", zap.String("instance_id", info.ID), zap.Error(err))
		}
	}
	created, err := p.cli.ContainerCreate(ctx, &cfg, info.HostConfig, netCfg, nil, name)
	if err != nil {
		restoreName()
		return "", p.wrap(fmt.Sprintf("sleep %s: re-create as %s with the session's labels", shortID(info.ID), name), err)
	}
	p.creating.Mark(created.ID)
	defer p.creating.Forget(created.ID)
	if err := p.cli.ContainerRemove(ctx, info.ID, container.RemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		// Keep the old container (it has the volumes' data in use); drop
		// the new one, which holds the name.
		if rmErr := p.cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true}); rmErr != nil {
			p.logger.Warn("could not remove a re-created container", zap.String("instance_id", created.ID), zap.Error(rmErr))
		}
		restoreName()
		return "", p.wrap(fmt.Sprintf("sleep %s: remove the container replaced by %s", shortID(info.ID), name), err)
	}
	p.sleeping.Forget(info.ID)
	p.sleeping.Mark(created.ID)
	return created.ID, nil
}

// Wake starts a stopped agent container (a running one is left as it is)
// and returns once its /health answers ready, with its URL now: the
// published port changes when a container starts again. A container, or
// a volume of it, that no longer exists is an error wrapping
// providers.ErrGone.
func (p *Provider) Wake(ctx context.Context, id string) (*providers.Instance, error) {
	began := time.Now()
	info, err := p.inspectOwn(ctx, "wake", id)
	if err != nil {
		return nil, err
	}
	id = info.ID
	for _, v := range volumesOf(info.Config.Labels).names() {
		if _, err := p.cli.VolumeInspect(ctx, v); cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("docker: wake %s: volume %s not found (%w)", shortID(id), v, providers.ErrGone)
		} else if err != nil {
			return nil, p.wrap(fmt.Sprintf("wake %s: inspect volume %s", shortID(id), v), err)
		}
	}
	wasRunning := info.State != nil && info.State.Running
	if !wasRunning {
		p.sleeping.Forget(id)
		if err := p.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			if cerrdefs.IsNotFound(err) {
				return nil, fmt.Errorf("docker: wake %s: container removed meanwhile (%w)", shortID(id), providers.ErrGone)
			}
			return nil, p.wrap(fmt.Sprintf("wake %s: start", shortID(id)), err)
		}
		if info, err = p.cli.ContainerInspect(ctx, id); err != nil {
			return nil, p.wrap(fmt.Sprintf("wake %s: inspect", shortID(id)), err)
		}
	}
	startedAt := time.Now()
	if info.State != nil && !info.State.Running {
		return nil, fmt.Errorf("docker: wake %s: %w: %s", shortID(id), providers.ErrNotReady, p.exitedDiagnosis(id, envToken(info.Config.Env), int64(info.State.ExitCode)))
	}
	inst, err := p.instance(info)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, id, inst.URL, inst.Token); err != nil {
		return nil, fmt.Errorf("docker: wake %s: %w", shortID(id), err)
	}
	p.logger.Info("agent container awake",
		zap.String("instance_id", id),
		zap.String("session_id", inst.SessionID),
		zap.Bool("was_running", wasRunning),
		zap.String("url", inst.URL),
		zap.Duration("start_duration", startedAt.Sub(began)),
		zap.Duration("ready_duration", time.Since(startedAt)),
		zap.Duration("wake_duration", time.Since(began)),
	)
	return inst, nil
}
