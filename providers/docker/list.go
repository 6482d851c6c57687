package docker

import (
	"context"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// managedFilter selects this provider's containers: the agcluster labels
// and every ExtraLabel.
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

// List returns the running agents this provider manages, with the URL and
// token recovered from the engine, so a restarted control plane finds
// them again. Stopped ones are reported by [Provider.Orphans] instead.
func (p *Provider) List(ctx context.Context) ([]*providers.Instance, error) {
	summaries, err := p.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: p.managedFilter()})
	if err != nil {
		return nil, p.wrap("list agent containers", err)
	}
	out := make([]*providers.Instance, 0, len(summaries))
	for _, s := range summaries {
		if s.State != container.StateRunning {
			continue
		}
		info, err := p.cli.ContainerInspect(ctx, s.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed since the list
		}
		if err != nil {
			return nil, p.wrap(fmt.Sprintf("inspect container %s", shortID(s.ID)), err)
		}
		if info.State == nil || !info.State.Running || info.Config == nil {
			continue
		}
		inst, err := p.instance(info)
		if err != nil {
			p.logger.Warn("skipping agent container", zap.String("container_id", shortID(s.ID)), zap.Error(err))
			continue
		}
		out = append(out, inst)
	}
	return out, nil
}

// instance rebuilds an Instance from a container's labels and environment.
func (p *Provider) instance(info container.InspectResponse) (*providers.Instance, error) {
	var token string
	for _, kv := range info.Config.Env {
		if v, ok := strings.CutPrefix(kv, "AGENT_TOKEN="); ok {
			token = v
		}
	}
	if token == "" {
		return nil, fmt.Errorf("docker: container %s has no AGENT_TOKEN", shortID(info.ID))
	}
	url, err := p.agentURL(info)
	if err != nil {
		return nil, err
	}
	l := info.Config.Labels
	return &providers.Instance{
		ID:           info.ID,
		Provider:     p.Name(),
		SessionID:    l[LabelSession],
		Owner:        l[LabelOwner],
		ConfigID:     l[LabelConfig],
		Conversation: l[LabelConversation],
		URL:          url,
		Token:        token,
		CreatedAt:    parseTime(info.Created, time.Time{}),
		Pool:         l[LabelPool],
	}, nil
}

// Orphans returns the ids of managed containers that are no longer
// running (exited, dead, or created but never started) and that this
// Provider is not creating right now. Pass them to Destroy to remove them
// and their workspaces.
func (p *Provider) Orphans(ctx context.Context) ([]string, error) {
	summaries, err := p.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: p.managedFilter()})
	if err != nil {
		return nil, p.wrap("list agent containers", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for _, s := range summaries {
		switch s.State {
		case container.StateExited, container.StateDead, container.StateCreated:
			if _, creating := p.inFlight[s.ID]; !creating {
				ids = append(ids, s.ID)
			}
		}
	}
	return ids, nil
}

// Destroy removes the agent container (stopping it if needed) and its
// workspace volume. An id that no longer exists is not an error; a
// container this provider does not manage is refused.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	info, err := p.cli.ContainerInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return p.wrap(fmt.Sprintf("destroy %s: inspect", shortID(id)), err)
	}
	if info.Config == nil || info.Config.Labels[LabelManaged] != "true" || info.Config.Labels[LabelProvider] != p.Name() {
		return fmt.Errorf("docker: destroy %s: not an agent container managed by agcluster", shortID(id))
	}
	vol := info.Config.Labels[LabelVolume]
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
	if vol != "" {
		if err := p.cli.VolumeRemove(ctx, vol, false); err != nil && !cerrdefs.IsNotFound(err) {
			return p.wrap(fmt.Sprintf("destroy %s: remove volume %s", shortID(id), vol), err)
		}
	}
	p.logger.Info("agent container destroyed",
		zap.String("container_id", shortID(info.ID)),
		zap.String("session_id", info.Config.Labels[LabelSession]))
	return nil
}
