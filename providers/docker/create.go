package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
)

// logTail is how many log lines a readiness failure quotes.
const logTail = 30

// Create runs an agent container for spec and returns once its /health
// answers ready. On any failure the container and its volumes are removed.
func (p *Provider) Create(ctx context.Context, spec providers.Spec) (_ *providers.Instance, err error) {
	cfgJSON, err := providers.CheckCreate(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("docker: create agent for session %q: %w", spec.SessionID, err)
	}
	image := cmp.Or(spec.Image, p.opts.Image)
	if err := p.ensureImage(ctx, image); err != nil {
		return nil, err
	}
	spec.Limits.NanoCPUs = p.clampCPUs(ctx, cmp.Or(spec.Limits.NanoCPUs, p.opts.NanoCPUs))
	if err := p.ensureIsolatedNetwork(ctx); err != nil {
		return nil, err
	}

	token := randhex.String(32)
	vols := volumes{workspace: "agcluster-ws-" + randhex.String(6), state: "agcluster-state-" + randhex.String(6)}
	name := sessionContainerName(p.Name(), spec.SessionID)
	if spec.Pool != "" {
		name = poolContainerName(p.Name(), spec.Pool)
	}
	labels := p.labels(spec, vols)

	began := time.Now()
	var id string
	defer func() {
		if err != nil {
			p.cleanup(ctx, id, name, vols)
		}
	}()

	// The two create calls are quick and are not abandoned half-way when
	// ctx ends (the engine would finish them anyway): so the cleanup knows
	// exactly what exists.
	mkCtx, cancelMk := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancelMk()
	for _, v := range []struct{ what, name string }{{"workspace", vols.workspace}, {"state", vols.state}} {
		if _, err := p.cli.VolumeCreate(mkCtx, volume.CreateOptions{Name: v.name, Labels: labels}); err != nil {
			return nil, p.wrap(fmt.Sprintf("create %s volume for session %q", v.what, spec.SessionID), err)
		}
	}
	cfg, host, netCfg := p.containerConfig(spec, image, token, cfgJSON, vols, labels)
	created, err := p.cli.ContainerCreate(mkCtx, cfg, host, netCfg, nil, name)
	if err != nil {
		if cerrdefs.IsNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "image") {
			p.forgetImage(image)
			return nil, imageMissing(image, err)
		}
		if cerrdefs.IsConflict(err) {
			return nil, fmt.Errorf("docker: create container %s: the name is taken: %w", name, providers.ErrExists)
		}
		return nil, p.wrap(fmt.Sprintf("create container %s", name), err)
	}
	id = created.ID
	p.creating.Mark(id)
	defer p.creating.Forget(id)
	createdAt := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("docker: create agent for session %q: %w", spec.SessionID, err)
	}

	if err := p.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return nil, p.wrap(fmt.Sprintf("start container %s", name), err)
	}
	info, err := p.cli.ContainerInspect(ctx, id)
	if err != nil {
		return nil, p.wrap(fmt.Sprintf("inspect container %s", name), err)
	}
	if info.State != nil && !info.State.Running {
		// Exited already (a bad setting): its ports are gone with it.
		return nil, fmt.Errorf("docker: agent container %s (%s) for session %q: %w: %s",
			name, shortID(id), spec.SessionID, providers.ErrNotReady, p.exitedDiagnosis(id, token, int64(info.State.ExitCode)))
	}
	url, err := p.agentURL(info)
	if err != nil {
		return nil, err
	}
	startedAt := time.Now()

	if err := p.waitReady(ctx, id, url, token); err != nil {
		return nil, fmt.Errorf("docker: agent container %s (%s) for session %q: %w", name, shortID(id), spec.SessionID, err)
	}
	readyAt := time.Now()

	p.logger.Info("agent container created",
		zap.String("instance_id", id),
		zap.String("container_name", name),
		zap.String("session_id", spec.SessionID),
		zap.String("image", image),
		zap.String("url", url),
		zap.Duration("create_duration", createdAt.Sub(began)),
		zap.Duration("start_duration", startedAt.Sub(createdAt)),
		zap.Duration("ready_duration", readyAt.Sub(startedAt)),
		zap.Duration("ready_after", readyAt.Sub(began)),
	)
	return &providers.Instance{
		ID:           id,
		Provider:     p.Name(),
		SessionID:    spec.SessionID,
		Owner:        spec.Owner,
		ConfigID:     spec.ConfigID,
		Conversation: spec.Conversation,
		State:        providers.StateRunning,
		URL:          url,
		Token:        token,
		CreatedAt:    parseTime(info.Created, began),
		Pool:         spec.Pool,
	}, nil
}

// volumes are the names of an agent's two volumes.
type volumes struct {
	workspace string // mounted at /workspace
	state     string // mounted at /state (AGENT_STATE_DIR)
}

// volumesOf reads an agent container's volume names from its labels.
func volumesOf(labels map[string]string) volumes {
	return volumes{workspace: labels[LabelVolume], state: labels[LabelStateVolume]}
}

// names lists the volumes that are set.
func (v volumes) names() []string {
	var out []string
	for _, n := range []string{v.workspace, v.state} {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// containerConfig builds the hardened container definition.
func (p *Provider) containerConfig(spec providers.Spec, image, token string, cfgJSON []byte, vols volumes, labels map[string]string) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	env := maps.Clone(p.opts.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, spec.Env)
	envList := make([]string, 0, len(env)+3)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		envList = append(envList, k+"="+env[k])
	}
	envList = append(envList, agent.EnvConfig+"="+string(cfgJSON), agent.EnvToken+"="+token, agent.EnvStateDir+"="+stateDir)

	memory := cmp.Or(spec.Limits.MemoryBytes, p.opts.MemoryBytes)
	pids := cmp.Or(spec.Limits.Pids, p.opts.Pids)
	cfg := &container.Config{
		Image:        image,
		Env:          envList,
		Labels:       labels,
		ExposedPorts: nat.PortSet{agentPort: {}},
	}
	host := &container.HostConfig{
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true"},
		ReadonlyRootfs: true,
		Privileged:     false,
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		Tmpfs: map[string]string{
			"/tmp":  "rw,nosuid,nodev,size=" + p.opts.TmpSize,
			homeDir: fmt.Sprintf("rw,nosuid,nodev,size=%s,uid=%d,gid=%d,mode=0700", p.opts.HomeSize, agentUID, agentUID),
		},
		Mounts: []mount.Mount{
			{Type: mount.TypeVolume, Source: vols.workspace, Target: workspaceDir},
			{Type: mount.TypeVolume, Source: vols.state, Target: stateDir},
		},
		Resources: container.Resources{
			Memory:     memory,
			MemorySwap: memory,
			NanoCPUs:   cmp.Or(spec.Limits.NanoCPUs, p.opts.NanoCPUs),
			PidsLimit:  &pids,
		},
	}
	if !p.opts.ReachByContainerIP {
		host.PortBindings = nat.PortMap{agentPort: {{HostIP: p.opts.PublishHost, HostPort: ""}}}
	}
	netName := p.opts.Network
	if netName == "" {
		netName = p.opts.IsolatedNetwork
	}
	var netCfg *network.NetworkingConfig
	if netName != "" {
		host.NetworkMode = container.NetworkMode(netName)
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {}}}
	}
	return cfg, host, netCfg
}

// ensureIsolatedNetwork creates, once, the bridge network agents join when
// no Network is configured: a normal bridge (agents reach the internet and
// their ports can be published) with inter-container traffic disabled, so
// one agent cannot open another's port.
func (p *Provider) ensureIsolatedNetwork(ctx context.Context) error {
	name := p.opts.IsolatedNetwork
	if p.opts.Network != "" || name == "" {
		return nil
	}
	p.mu.Lock()
	ready := p.netReady
	p.mu.Unlock()
	if ready {
		return nil
	}
	if _, err := p.cli.NetworkInspect(ctx, name, network.InspectOptions{}); err != nil {
		if !cerrdefs.IsNotFound(err) {
			return p.wrap("inspect network "+name, err)
		}
		_, err := p.cli.NetworkCreate(ctx, name, network.CreateOptions{
			Driver:  "bridge",
			Options: map[string]string{"com.docker.network.bridge.enable_icc": "false"},
			Labels:  map[string]string{LabelManaged: "true"},
		})
		if err != nil && !cerrdefs.IsConflict(err) {
			return p.wrap("create network "+name, err)
		}
		p.logger.Info("isolated agent network created", zap.String("network", name))
	}
	p.mu.Lock()
	p.netReady = true
	p.mu.Unlock()
	return nil
}

// labels are the container's and volumes' labels. They never hold the
// token or a key.
func (p *Provider) labels(spec providers.Spec, vols volumes) map[string]string {
	l := maps.Clone(p.opts.ExtraLabels)
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, identityKeys.Tags(spec.Identity(p.Name())))
	l[LabelVolume] = vols.workspace
	l[LabelStateVolume] = vols.state
	return l
}

// clampCPUs limits a CPU request to what the engine's host has: the
// engine refuses a limit above its CPU count, and a configuration written
// for a bigger host should still run here.
func (p *Provider) clampCPUs(ctx context.Context, nano int64) int64 {
	p.mu.Lock()
	ncpu := p.ncpu
	p.mu.Unlock()
	if ncpu == 0 {
		info, err := p.cli.Info(ctx)
		if err != nil || info.NCPU <= 0 {
			return nano
		}
		ncpu = info.NCPU
		p.mu.Lock()
		p.ncpu = ncpu
		p.mu.Unlock()
	}
	if most := int64(ncpu) * 1e9; nano > most {
		p.logger.Warn("cpu limit above the host's cpus; using all of them",
			zap.Float64("requested_cpus", float64(nano)/1e9), zap.Int("host_cpus", ncpu))
		return most
	}
	return nano
}

// ensureImage fails fast with ErrImageMissing before anything is created.
// Only positive answers are cached: a missing image may be built later.
func (p *Provider) ensureImage(ctx context.Context, image string) error {
	p.mu.Lock()
	_, ok := p.images[image]
	p.mu.Unlock()
	if ok {
		return nil
	}
	if _, err := p.cli.ImageInspect(ctx, image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return imageMissing(image, err)
		}
		return p.wrap(fmt.Sprintf("inspect image %q", image), err)
	}
	p.mu.Lock()
	p.images[image] = struct{}{}
	p.mu.Unlock()
	return nil
}

func (p *Provider) forgetImage(image string) {
	p.mu.Lock()
	delete(p.images, image)
	p.mu.Unlock()
}

func imageMissing(image string, err error) error {
	return fmt.Errorf("docker: image %q not found; build it with make image (%w): %w", image, providers.ErrImageMissing, err)
}

// agentURL is where the control plane reaches the agent in info.
func (p *Provider) agentURL(info container.InspectResponse) (string, error) {
	if info.NetworkSettings == nil {
		return "", fmt.Errorf("docker: container %s has no network settings", shortID(info.ID))
	}
	if p.opts.ReachByContainerIP {
		ep := info.NetworkSettings.Networks[p.opts.Network]
		if ep == nil || ep.IPAddress == "" {
			return "", fmt.Errorf("docker: container %s has no address on network %q", shortID(info.ID), p.opts.Network)
		}
		return "http://" + net.JoinHostPort(ep.IPAddress, "8080"), nil
	}
	host := p.opts.PublishHost
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1" // published on every interface: loopback is one of them
	}
	for _, b := range info.NetworkSettings.Ports[agentPort] {
		if b.HostPort != "" {
			return "http://" + net.JoinHostPort(host, b.HostPort), nil
		}
	}
	return "", fmt.Errorf("docker: container %s publishes no port for %s", shortID(info.ID), agentPort)
}

// exitedError says the container stopped while Create waited for it.
type exitedError struct{ code int64 }

func (e *exitedError) Error() string {
	return fmt.Sprintf("container exited with code %d", e.code)
}

// waitReady polls /health until ready, the ready timeout, ctx's end, or
// the container's exit, whichever comes first. Failures quote the
// container's last log lines.
func (p *Provider) waitReady(ctx context.Context, id, url, token string) error {
	watch, stopWatch := context.WithCancelCause(ctx)
	defer stopWatch(nil)
	go func() {
		waitC, errC := p.cli.ContainerWait(watch, id, container.WaitConditionNotRunning)
		select {
		case r := <-waitC:
			stopWatch(&exitedError{code: r.StatusCode})
		case <-errC: // the watch ended or failed: the timeout still applies
		}
	}()
	readyCtx, cancel := context.WithTimeout(watch, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	err := providers.WaitReady(readyCtx, &agentclient.Client{BaseURL: url, Token: token})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil { // the caller gave up: no diagnosis needed
		return err
	}
	var exited *exitedError
	if errors.As(context.Cause(watch), &exited) {
		return fmt.Errorf("%w: %s", err, p.exitedDiagnosis(id, token, exited.code))
	}
	logs := strings.ReplaceAll(p.lastLogs(id), token, "[redacted]")
	return fmt.Errorf("not ready after %s: %w\nlast %d log lines:\n%s", time.Duration(p.opts.ReadyTimeout), err, logTail, logs)
}

// exitedDiagnosis says that the container exited before it was ready and
// quotes its last log lines (the token redacted).
func (p *Provider) exitedDiagnosis(id, token string, code int64) string {
	logs := strings.ReplaceAll(p.lastLogs(id), token, "[redacted]")
	return fmt.Sprintf("container exited with code %d before it was ready\nlast %d log lines:\n%s", code, logTail, logs)
}

// lastLogs returns the container's last log lines, stdout and stderr
// together.
func (p *Provider) lastLogs(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := p.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(logTail)})
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	defer rc.Close()
	var out strings.Builder
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 64<<10)); err != nil {
		fmt.Fprintf(&out, "(log read error: %v)", err)
	}
	return strings.TrimRight(out.String(), "\n")
}

// cleanup removes what a failed Create made: the container and the
// volumes. When the create call gave no answer (id is empty) a container
// may still exist under name: it is removed only if it carries the
// workspace volume's name, which no other container can. It runs even
// when ctx is cancelled.
func (p *Provider) cleanup(ctx context.Context, id, name string, vols volumes) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancel()
	if id == "" {
		if info, err := p.cli.ContainerInspect(ctx, name); err == nil && info.Config != nil && info.Config.Labels[LabelVolume] == vols.workspace {
			id = info.ID
		}
	}
	if id != "" {
		if err := p.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			p.logger.Warn("could not remove the container of a failed create", zap.String("instance_id", id), zap.Error(err))
		}
	}
	for _, v := range vols.names() {
		if err := p.cli.VolumeRemove(ctx, v, false); err != nil && !cerrdefs.IsNotFound(err) {
			p.logger.Warn("could not remove a volume of a failed create", zap.String("volume", v), zap.Error(err))
		}
	}
}

// sessionContainerName is the container name of a session's agent:
// "agcluster-<provider>-<session>", the same on every gateway, so the
// engine's uniqueness of names makes one agent per session however many
// gateways create it at once, and [Provider.Find] finds it by name.
func sessionContainerName(provider, sessionID string) string {
	return "agcluster-" + nameSafe(provider) + "-" + nameSafe(sessionID)
}

// poolContainerName is "agcluster-<provider>-pool-<entry>-<random>" for an
// agent made ahead of demand; [Provider.Claim] renames it for its session.
func poolContainerName(provider, pool string) string {
	return "agcluster-" + nameSafe(provider) + "-pool-" + nameSafe(pool) + "-" + randhex.String(3)
}

// nameSafe reduces s to the characters Docker allows in names, at most 40
// of them ("x" for an empty result).
func nameSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
		if b.Len() >= 40 {
			break
		}
	}
	if out := strings.Trim(b.String(), "-_."); out != "" {
		return out
	}
	return "x"
}

func parseTime(s string, def time.Time) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return def
	}
	return t
}
