package flyemu

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	fly "github.com/superfly/fly-go"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
)

// Fly's machine states (https://fly.io/docs/machines/machine-states/).
const (
	stateCreated    = "created"
	stateStarting   = "starting"
	stateStarted    = "started"
	stateStopping   = "stopping"
	stateStopped    = "stopped"
	stateSuspending = "suspending"
	stateSuspended  = "suspended"
	stateDestroying = "destroying"
	stateDestroyed  = "destroyed"
	stateFailed     = "failed"
)

var networkInspectOpts = network.InspectOptions{}

// machine is one Fly machine. Its fields are guarded by Emulator.mu; ops
// serializes the Docker work of its transitions.
type machine struct {
	id, app, name, region string
	instanceID            string
	config                *fly.MachineConfig
	imageRef              fly.MachineImageRef
	createdAt, updatedAt  time.Time
	state                 string
	container             string // current container id, "" when none
	privateIP             string
	events                []*fly.MachineEvent // newest first
	lease                 *lease
	ops                   sync.Mutex
}

// lease is a machine lease (fly.MachineLeaseData).
type lease struct {
	nonce, owner string
	expires      time.Time
}

func (l *lease) active(now time.Time) bool { return l != nil && now.Before(l.expires) }

// setState moves m to state, records an event when ev is set, and wakes
// the waiters. Callers hold e.mu.
func (e *Emulator) setState(m *machine, state string, ev *fly.MachineEvent) {
	m.state = state
	m.updatedAt = time.Now().UTC()
	if ev != nil {
		ev.Timestamp = m.updatedAt.UnixMilli()
		m.events = slices.Insert(m.events, 0, ev)
		if len(m.events) > 20 {
			m.events = m.events[:20]
		}
	}
	close(e.changed)
	e.changed = make(chan struct{})
	e.log.Debug("machine_state", zap.String("machine", m.id), zap.String("state", state))
}

// finish ends a transition: m goes to state only when it is still in the
// transitional state from (a later call, or the machine's death, wins).
func (e *Emulator) finish(m *machine, from, to string, ev *fly.MachineEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m.state == from {
		e.setState(m, to, ev)
	}
}

// async runs op after the API call that started it returned, one op per
// machine at a time, on a context that Close does not outlive.
func (e *Emulator) async(m *machine, op func(ctx context.Context)) {
	e.pending.Add(1)
	go func() {
		defer e.pending.Done()
		m.ops.Lock()
		defer m.ops.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		go func() {
			select {
			case <-e.closed:
				cancel()
			case <-ctx.Done():
			}
		}()
		op(ctx)
	}()
}

func event(typ, status, source string) *fly.MachineEvent {
	return &fly.MachineEvent{Type: typ, Status: status, Source: source}
}

// containerConfig is the Docker definition of m's config.
func (e *Emulator) containerConfig(m *machine) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	c := m.config
	env := maps.Clone(c.Env)
	if env == nil {
		env = map[string]string{}
	}
	// Variables Fly sets in every machine.
	maps.Copy(env, map[string]string{
		"FLY_APP_NAME": m.app, "FLY_MACHINE_ID": m.id, "FLY_ALLOC_ID": m.id, "FLY_REGION": m.region,
		"FLY_IMAGE_REF": c.Image, "FLY_MACHINE_VERSION": m.instanceID,
		"FLY_VM_MEMORY_MB": strconv.Itoa(c.Guest.MemoryMB), "FLY_PROCESS_GROUP": c.ProcessGroup(),
	})
	envList := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		envList = append(envList, k+"="+env[k])
	}
	cfg := &container.Config{
		Image:    c.Image,
		Env:      envList,
		Hostname: m.id,
		Labels:   map[string]string{LabelEmulator: e.id, LabelApp: m.app, LabelMachine: m.id},
	}
	switch {
	case len(c.Init.Exec) > 0:
		cfg.Entrypoint, cfg.Cmd = c.Init.Exec, []string{}
	default:
		if len(c.Init.Entrypoint) > 0 {
			cfg.Entrypoint = c.Init.Entrypoint
		}
		if len(c.Init.Cmd) > 0 {
			cfg.Cmd = c.Init.Cmd
		}
	}
	memory := int64(c.Guest.MemoryMB) << 20
	host := &container.HostConfig{
		NetworkMode:   container.NetworkMode(e.opts.Network),
		RestartPolicy: restartPolicy(c.Restart),
		Resources: container.Resources{
			Memory:     memory,
			MemorySwap: memory,
			NanoCPUs:   int64(min(c.Guest.CPUs, e.ncpu)) * 1e9,
		},
	}
	netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		e.opts.Network: {Aliases: []string{m.id + ".vm." + m.app + ".internal"}},
	}}
	return cfg, host, netCfg
}

// restartPolicy maps Fly's restart policy to Docker's. Fly's default is
// on-failure (10 retries); "no" leaves a dead machine stopped.
func restartPolicy(r *fly.MachineRestart) container.RestartPolicy {
	if r == nil {
		return container.RestartPolicy{Name: container.RestartPolicyOnFailure, MaximumRetryCount: 10}
	}
	switch r.Policy {
	case fly.MachineRestartPolicyNo:
		return container.RestartPolicy{Name: container.RestartPolicyDisabled}
	case fly.MachineRestartPolicyAlways:
		return container.RestartPolicy{Name: container.RestartPolicyAlways}
	default:
		return container.RestartPolicy{Name: container.RestartPolicyOnFailure, MaximumRetryCount: cmp.Or(r.MaxRetries, 10)}
	}
}

// createContainer makes a fresh container for m from its image.
func (e *Emulator) createContainer(ctx context.Context, m *machine) (string, error) {
	cfg, host, netCfg := e.containerConfig(m)
	name := "flyemu-" + e.id + "-" + m.id + "-" + randhex.String(2)
	created, err := e.cli.ContainerCreate(ctx, cfg, host, netCfg, nil, name)
	if err != nil {
		return "", fmt.Errorf("flyemu: create container for %s: %w", m.id, err)
	}
	return created.ID, nil
}

// startContainer starts m's container (making a fresh one when m has
// none) and records its private address.
func (e *Emulator) startContainer(ctx context.Context, m *machine) error {
	e.mu.Lock()
	id := m.container
	e.mu.Unlock()
	if id == "" {
		var err error
		if id, err = e.createContainer(ctx, m); err != nil {
			return err
		}
		e.mu.Lock()
		m.container = id
		e.mu.Unlock()
	}
	if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("flyemu: start container of %s: %w", m.id, err)
	}
	info, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		return fmt.Errorf("flyemu: inspect container of %s: %w", m.id, err)
	}
	ip := ""
	if ep := info.NetworkSettings.Networks[e.opts.Network]; ep != nil {
		ip = cmp.Or(ep.GlobalIPv6Address, ep.IPAddress)
	}
	e.mu.Lock()
	m.privateIP = ip
	e.mu.Unlock()
	return nil
}

// launch boots m and reports started, or failed. Fly resets the root
// filesystem of a machine that starts again, so m gets a fresh container,
// unless its config asks Fly to keep it (rootfs.persist "always": the
// same container starts again).
func (e *Emulator) launch(m *machine, from string) {
	e.async(m, func(ctx context.Context) {
		var err error
		if !persistsRootfs(m) {
			err = e.discardContainer(ctx, m)
		}
		if err == nil {
			err = e.startContainer(ctx, m)
		}
		if err != nil {
			e.log.Warn("machine_start_failed", zap.String("machine", m.id), zap.Error(err))
			e.finish(m, from, stateFailed, event("start", "failed", "flyd"))
			return
		}
		e.finish(m, from, stateStarted, event("start", "started", "flyd"))
	})
}

// persistsRootfs tells whether m's root filesystem outlives a stop.
func persistsRootfs(m *machine) bool {
	return m.config != nil && m.config.Rootfs != nil && m.config.Rootfs.Persist == fly.MachinePersistRootfsAlways
}

// discardContainer removes m's container, if any, so the next start
// makes a fresh one (Fly resets the root filesystem of a stopped machine).
func (e *Emulator) discardContainer(ctx context.Context, m *machine) error {
	e.mu.Lock()
	id := m.container
	m.container = ""
	e.mu.Unlock()
	if id == "" {
		return nil
	}
	if err := e.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
		return fmt.Errorf("flyemu: remove container of %s: %w", m.id, err)
	}
	return nil
}

// stopContainer stops m's container: unpaused first when suspended, with
// the signal and timeout asked for (Fly's default SIGINT, 5 s).
func (e *Emulator) stopContainer(ctx context.Context, m *machine, signal string, timeout time.Duration) error {
	e.mu.Lock()
	id := m.container
	e.mu.Unlock()
	if id == "" {
		return nil
	}
	info, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		return fmt.Errorf("flyemu: inspect container of %s: %w", m.id, err)
	}
	if info.State.Paused {
		if err := e.cli.ContainerUnpause(ctx, id); err != nil {
			return fmt.Errorf("flyemu: unpause container of %s: %w", m.id, err)
		}
	}
	secs := int(timeout.Seconds())
	if err := e.cli.ContainerStop(ctx, id, container.StopOptions{Signal: cmp.Or(signal, "SIGINT"), Timeout: &secs}); err != nil {
		return fmt.Errorf("flyemu: stop container of %s: %w", m.id, err)
	}
	return nil
}

// containerIDOf is m's container id.
func (e *Emulator) containerIDOf(m *machine) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return m.container
}

// onContainerEvent applies a container's death or removal to its machine
// when the machine was running (not while the emulator itself stops,
// suspends or destroys it).
func (e *Emulator) onContainerEvent(msg events.Message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.machines[msg.Actor.Attributes[LabelMachine]]
	if m == nil || m.container != msg.Actor.ID {
		return
	}
	running := m.state == stateStarted || m.state == stateStarting
	switch msg.Action {
	case events.ActionDie, events.ActionOOM:
		if running {
			code, _ := strconv.Atoi(msg.Actor.Attributes["exitCode"])
			ev := event("exit", "stopped", "flyd")
			ev.Request = &fly.MachineRequest{ExitEvent: &fly.MachineExitEvent{ExitCode: code,
				OOMKilled: msg.Action == events.ActionOOM, ExitedAt: time.Now().UTC()}}
			e.setState(m, stateStopped, ev)
		}
	case events.ActionStart:
		if m.state == stateStopped { // Docker's restart policy brought it back
			e.setState(m, stateStarted, event("start", "started", "flyd"))
		}
	case events.ActionDestroy:
		m.container = ""
		if m.state != stateDestroying && m.state != stateDestroyed {
			e.setState(m, stateDestroyed, event("destroy", "destroyed", "flyd"))
		}
	}
}

// imageRef describes image as Fly's image_ref does.
func (e *Emulator) imageRef(ctx context.Context, image string) (fly.MachineImageRef, error) {
	info, err := e.cli.ImageInspect(ctx, image)
	if err != nil {
		return fly.MachineImageRef{}, err
	}
	ref := fly.MachineImageRef{Repository: image, Digest: info.ID}
	if named, err := reference.ParseNormalizedNamed(image); err == nil {
		ref.Registry, ref.Repository = reference.Domain(named), reference.Path(named)
		if tagged, ok := reference.TagNameOnly(named).(reference.Tagged); ok {
			ref.Tag = tagged.Tag()
		}
	}
	if len(info.RepoDigests) > 0 {
		if _, d, ok := strings.Cut(info.RepoDigests[0], "@"); ok {
			ref.Digest = d
		}
	}
	if info.Config != nil {
		ref.Labels = info.Config.Labels
	}
	return ref, nil
}

// DestroyBehindBack removes machine id's container as a lost host would,
// without any API call: the machine becomes destroyed. It returns once the
// emulator reports the new state.
func (e *Emulator) DestroyBehindBack(ctx context.Context, id string) error {
	m, err := e.lookup(id)
	if err != nil {
		return err
	}
	cid := e.containerIDOf(m)
	if cid != "" {
		if err := e.cli.ContainerRemove(ctx, cid, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			return fmt.Errorf("flyemu: remove container of %s: %w", id, err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m.container = ""
	if m.state != stateDestroyed {
		e.setState(m, stateDestroyed, event("destroy", "destroyed", "flyd"))
	}
	return nil
}

// Crash kills machine id's main process with SIGKILL, without any API
// call: with restart policy "no" the machine becomes stopped. It returns
// once the emulator reports a state other than started.
func (e *Emulator) Crash(ctx context.Context, id string) error {
	m, err := e.lookup(id)
	if err != nil {
		return err
	}
	cid := e.containerIDOf(m)
	if cid == "" {
		return fmt.Errorf("flyemu: machine %s has no container", id)
	}
	if err := e.cli.ContainerKill(ctx, cid, "SIGKILL"); err != nil {
		return fmt.Errorf("flyemu: kill container of %s: %w", id, err)
	}
	for {
		e.mu.Lock()
		st, ch := m.state, e.changed
		e.mu.Unlock()
		if st != stateStarted {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// State reports machine id's current state ("" when unknown).
func (e *Emulator) State(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m := e.machines[id]; m != nil {
		return m.state
	}
	return ""
}

// Machines reports every machine that is not destroyed, by id, with its
// state: what `fly machine list` would show.
func (e *Emulator) Machines() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	for id, m := range e.machines {
		if m.state != stateDestroyed {
			out[id] = m.state
		}
	}
	return out
}

// ContainerID is the Docker container currently behind machine id ("" when
// none), for tests that inspect it.
func (e *Emulator) ContainerID(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m := e.machines[id]; m != nil {
		return m.container
	}
	return ""
}

var errNoMachine = errors.New("flyemu: no such machine")

func (e *Emulator) lookup(id string) (*machine, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.machines[id]
	if m == nil {
		return nil, fmt.Errorf("%w: %s", errNoMachine, id)
	}
	return m, nil
}
