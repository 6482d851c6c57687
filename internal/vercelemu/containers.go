package vercelemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// setupScript makes a fresh container from the base image look like
// Vercel's image: the default user and its working directory.
const setupScript = `id -u ` + DefaultUser + ` >/dev/null 2>&1 || useradd -m -s /bin/bash ` + DefaultUser + ` && ` +
	`mkdir -p ` + DefaultCwd + ` && chown ` + DefaultUser + `: ` + DefaultCwd

// stopGrace is how long a stopping session's processes get after SIGTERM.
const stopGrace = 2

// containerConfig is the Docker definition of sb's container, from img:
// an init reaping the processes commands leave, and a sleep that keeps
// it running; the sandbox's vCPUs (capped at the host's) and 2 GB of
// memory each.
func (e *Emulator) containerConfig(sb *sandbox, img string) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	cfg := &container.Config{
		Image:      img,
		Entrypoint: []string{"sleep", "infinity"},
		Cmd:        []string{},
		User:       "root",
		WorkingDir: "/",
		Hostname:   "sandbox",
		Labels:     map[string]string{LabelEmulator: e.id, LabelSandbox: sb.name},
	}
	memory := int64(sb.vcpus) * 2048 << 20
	init := true
	host := &container.HostConfig{
		Init:        &init,
		NetworkMode: container.NetworkMode(e.opts.Network),
		Resources: container.Resources{
			Memory:     memory,
			MemorySwap: memory,
			NanoCPUs:   int64(min(sb.vcpus, e.ncpu)) * 1e9,
		},
	}
	return cfg, host, &network.NetworkingConfig{}
}

// bootContainer starts sb's container for a new session: the one holding
// its file system (a persistent sandbox's, kept across sessions), or a
// fresh one from its source snapshot or the base image.
func (e *Emulator) bootContainer(ctx context.Context, sb *sandbox) error {
	e.mu.Lock()
	id, source := sb.container, sb.source
	if sb.persistent && sb.currentSnap != "" {
		source = sb.currentSnap // a persistent sandbox resumes from its latest snapshot
	}
	img := e.opts.Image
	if source != "" {
		if sn := e.snapshots[source]; sn != nil {
			img = sn.image
		}
	}
	e.mu.Unlock()
	fresh := id == ""
	if fresh {
		cfg, host, netCfg := e.containerConfig(sb, img)
		created, err := e.cli.ContainerCreate(ctx, cfg, host, netCfg, nil, "vercelemu-"+e.id+"-"+sb.name+"-"+randhex.String(2))
		if err != nil {
			return fmt.Errorf("create container for %s: %w", sb.name, err)
		}
		id = created.ID
		e.mu.Lock()
		sb.container = id
		e.mu.Unlock()
	}
	if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container of %s: %w", sb.name, err)
	}
	ip, err := e.containerIP(ctx, id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	sb.ip = ip
	e.mu.Unlock()
	if fresh && source == "" {
		res, err := e.run(ctx, id, "root", []string{"sh", "-c", setupScript}, nil, "/", nil)
		if err != nil || res.exitCode != 0 {
			return fmt.Errorf("set up container of %s: exit %d: %s: %w", sb.name, res.exitCode, res.stderr, err)
		}
	}
	return nil
}

// containerIP is the address of sb's container on the network.
func (e *Emulator) containerIP(ctx context.Context, id string) (string, error) {
	info, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		return "", err
	}
	if ep := info.NetworkSettings.Networks[e.opts.Network]; ep != nil && ep.IPAddress != "" {
		return ep.IPAddress, nil
	}
	return "", fmt.Errorf("container %s has no address on network %s", id[:12], e.opts.Network)
}

// haltContainer stops sb's container (its processes get stopGrace
// seconds), and removes it when sb does not persist its file system.
func (e *Emulator) haltContainer(ctx context.Context, sb *sandbox) error {
	e.mu.Lock()
	id, keep := sb.container, sb.persistent
	if !keep {
		sb.container = ""
	}
	e.mu.Unlock()
	if id == "" {
		return nil
	}
	secs := stopGrace
	if err := e.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container of %s: %w", sb.name, err)
	}
	if keep {
		return nil
	}
	if err := e.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container of %s: %w", sb.name, err)
	}
	return nil
}

// removeContainer removes sb's container, whatever its state.
func (e *Emulator) removeContainer(ctx context.Context, sb *sandbox) error {
	e.mu.Lock()
	id := sb.container
	sb.container = ""
	e.mu.Unlock()
	if id == "" {
		return nil
	}
	if err := e.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container of %s: %w", sb.name, err)
	}
	return nil
}

// execResult is a finished exec's outcome.
type execResult struct {
	exitCode       int
	stdout, stderr string
}

// run runs cmd in container id as user and waits for it; stdin, when
// set, is its standard input.
func (e *Emulator) run(ctx context.Context, id, user string, cmd, env []string, cwd string, stdin io.Reader) (execResult, error) {
	execID, hj, err := e.startExec(ctx, id, user, cmd, env, cwd, stdin != nil)
	if err != nil {
		return execResult{exitCode: -1}, err
	}
	defer hj.Close()
	if stdin != nil {
		_, werr := io.Copy(hj.Conn, stdin)
		_ = hj.CloseWrite()
		if werr != nil {
			return execResult{exitCode: -1}, fmt.Errorf("write to exec: %w", werr)
		}
	}
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, hj.Reader); err != nil {
		return execResult{exitCode: -1}, fmt.Errorf("read exec output: %w", err)
	}
	code, err := e.exitCode(ctx, execID)
	return execResult{exitCode: code, stdout: out.String(), stderr: errOut.String()}, err
}

// startExec creates and starts an exec of cmd in container id, attached
// to its output (and input).
func (e *Emulator) startExec(ctx context.Context, id, user string, cmd, env []string, cwd string, stdin bool) (string, types.HijackedResponse, error) {
	created, err := e.cli.ContainerExecCreate(ctx, id, container.ExecOptions{
		User: user, Cmd: cmd, Env: env, WorkingDir: cwd,
		AttachStdin: stdin, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return "", types.HijackedResponse{}, fmt.Errorf("create exec: %w", err)
	}
	hj, err := e.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", types.HijackedResponse{}, fmt.Errorf("start exec: %w", err)
	}
	return created.ID, hj, nil
}

// exitCode waits until the exec has exited and returns its exit code.
func (e *Emulator) exitCode(ctx context.Context, execID string) (int, error) {
	for wait := time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		info, err := e.cli.ContainerExecInspect(ctx, execID)
		if err != nil {
			return -1, fmt.Errorf("inspect exec: %w", err)
		}
		if !info.Running {
			return info.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// commit saves sb's container as a snapshot image and returns the
// image's id and size.
func (e *Emulator) commit(ctx context.Context, sb *sandbox, snapID string) (string, int64, error) {
	e.mu.Lock()
	id := sb.container
	e.mu.Unlock()
	if id == "" {
		return "", 0, errors.New("the sandbox has no container")
	}
	ref := "vercelemu-" + e.id + ":" + strings.ToLower(snapID)
	res, err := e.cli.ContainerCommit(ctx, id, container.CommitOptions{
		Reference: ref,
		Comment:   "vercelemu snapshot " + snapID + " of " + sb.name,
		Config:    &container.Config{Labels: map[string]string{LabelEmulator: e.id}},
		Pause:     true,
	})
	if err != nil {
		return "", 0, fmt.Errorf("commit container of %s: %w", sb.name, err)
	}
	info, err := e.cli.ImageInspect(ctx, res.ID)
	if err != nil {
		return "", 0, fmt.Errorf("inspect snapshot image: %w", err)
	}
	return ref, info.Size, nil
}

// onContainerEvent fails the running session of a sandbox whose container
// died or was removed (not while the emulator itself stops it).
func (e *Emulator) onContainerEvent(msg events.Message) {
	if msg.Action != events.ActionDie && msg.Action != events.ActionOOM && msg.Action != events.ActionDestroy {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, sb := range e.sandboxes {
		if sb.container != msg.Actor.ID {
			continue
		}
		if msg.Action == events.ActionDestroy {
			sb.container = ""
		}
		if s := sb.session; running(s.status) {
			e.setStatus(s, sandboxapi.StatusFailed)
		}
	}
}

// Crash kills sandbox name's container without any API call, as a lost
// host would: its session fails, and a persistent sandbox keeps its file
// system for the next session. It returns once the session is failed.
func (e *Emulator) Crash(ctx context.Context, name string) error {
	e.mu.Lock()
	sb := e.byName(name)
	var id string
	var s *session
	if sb != nil {
		id, s = sb.container, sb.session
	}
	e.mu.Unlock()
	if id == "" {
		return fmt.Errorf("vercelemu: sandbox %s has no container", name)
	}
	if err := e.cli.ContainerKill(ctx, id, "SIGKILL"); err != nil {
		return fmt.Errorf("vercelemu: kill container of %s: %w", name, err)
	}
	return e.waitSession(ctx, s, func(st string) bool { return !running(st) })
}

// waitSession waits until s's status satisfies ok.
func (e *Emulator) waitSession(ctx context.Context, s *session, ok func(string) bool) error {
	for {
		e.mu.Lock()
		st, ch := s.status, e.changed
		e.mu.Unlock()
		if ok(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
