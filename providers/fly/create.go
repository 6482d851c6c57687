package fly

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strconv"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Fly Machine states (docs: Machine states and lifecycle).
const (
	stateCreated    = "created"
	stateStarting   = "starting"
	stateStarted    = "started"
	stateStopping   = "stopping"
	stateStopped    = "stopped"
	stateSuspending = "suspending"
	stateSuspended  = "suspended"
	stateFailed     = "failed"
	stateDestroying = "destroying"
	stateDestroyed  = "destroyed"
)

// Create launches a Machine for spec and returns once it has started and
// its agent's /health answers ready. On any failure the Machine is
// destroyed.
func (p *Provider) Create(ctx context.Context, spec providers.Spec) (_ *providers.Instance, err error) {
	what := fmt.Sprintf("fly: create agent for session %q", spec.SessionID)
	cfgJSON, err := providers.CheckCreate(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	token := randhex.String(32)
	input := fly.LaunchMachineInput{
		Name:   "agcluster-" + randhex.String(6),
		Region: p.opts.Region,
		Config: p.machineConfig(spec, token, cfgJSON),
	}

	began := time.Now()
	// The launch is not abandoned half-way when ctx ends (Fly would finish
	// it anyway): so the cleanup knows whether a Machine exists.
	launchCtx, cancelLaunch := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(p.opts.ReadyTimeout))
	m, err := p.api.Launch(launchCtx, p.opts.App, input)
	cancelLaunch()
	if err != nil {
		return nil, p.apiError("create", "", err)
	}
	p.creating.Mark(m.ID)
	defer p.creating.Forget(m.ID)
	defer func() {
		if err != nil {
			p.cleanup(ctx, m.ID)
		}
	}()
	launchedAt := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}

	readyCtx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	if m, err = p.waitStarted(readyCtx, m); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	startedAt := time.Now()
	inst, err := p.instance(m)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(readyCtx, inst); err != nil {
		return nil, fmt.Errorf("%s: machine %s: %w", what, m.ID, err)
	}
	p.poller.NoteRunning(inst) // a death before the next poll is still seen as one
	p.logger.Info("agent machine created",
		zap.String("instance_id", m.ID),
		zap.String("session_id", spec.SessionID),
		zap.String("region", m.Region),
		zap.String("image", p.opts.Image),
		zap.String("url", inst.URL),
		zap.Duration("launch_duration", launchedAt.Sub(began)),
		zap.Duration("start_duration", startedAt.Sub(launchedAt)),
		zap.Duration("ready_duration", time.Since(startedAt)),
		zap.Duration("ready_after", time.Since(began)),
	)
	return inst, nil
}

// machineConfig is the Machine's configuration: the image, guest size,
// environment (the agent token and configuration, never a key), metadata,
// one service on the agent's port with HTTP handlers and a /health check,
// restart policy "no" (the gateway decides what a dead agent means), a
// graceful stop, and a root file system Fly keeps across stops.
func (p *Provider) machineConfig(spec providers.Spec, token string, cfgJSON []byte) *fly.MachineConfig {
	env := maps.Clone(p.opts.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, spec.Env)
	env[agent.EnvConfig] = string(cfgJSON)
	env[agent.EnvToken] = token
	env[agent.EnvStateDir] = stateDir

	port, internal := 443, agentPort
	checkType, method, path := "http", http.MethodGet, "/health"
	interval, timeout, grace := fly.Duration{Duration: 15 * time.Second}, fly.Duration{Duration: 5 * time.Second}, fly.Duration{Duration: 10 * time.Second}
	autostop, autostart := fly.MachineAutostopOff, false
	signal := "SIGTERM"
	return &fly.MachineConfig{
		Image:    cmp.Or(spec.Image, p.opts.Image),
		Env:      env,
		Guest:    p.guest(spec.Limits),
		Metadata: p.metadata(spec),
		Services: []fly.MachineService{{
			Protocol:     "tcp",
			InternalPort: internal,
			Ports:        []fly.MachinePort{{Port: &port, Handlers: []string{"tls", "http"}}},
			Autostop:     &autostop,
			Autostart:    &autostart,
			Checks: []fly.MachineServiceCheck{{
				Type: &checkType, Port: &internal, HTTPMethod: &method, HTTPPath: &path,
				Interval: &interval, Timeout: &timeout, GracePeriod: &grace,
			}},
		}},
		Restart:    &fly.MachineRestart{Policy: fly.MachineRestartPolicyNo},
		StopConfig: &fly.StopConfig{Timeout: &fly.Duration{Duration: stopTimeout}, Signal: &signal},
		// A stopped Machine (when it cannot be suspended, or stopped
		// behind the gateway's back) otherwise restarts from its image,
		// losing the workspace and /state.
		Rootfs: &fly.MachineRootfs{Persist: fly.MachinePersistRootfsAlways},
	}
}

// guest is the Machine's size: the provider's, or the Spec's limits
// rounded up to what Fly sells (whole CPUs, 256 MiB steps). A process
// limit (Limits.Pids) has no Fly equivalent and is not applied.
func (p *Provider) guest(l providers.Limits) *fly.MachineGuest {
	g := &fly.MachineGuest{CPUKind: p.opts.CPUKind, CPUs: p.opts.CPUs, MemoryMB: p.opts.MemoryMB}
	if l.NanoCPUs > 0 {
		g.CPUs = int((l.NanoCPUs + 1e9 - 1) / 1e9)
	}
	if l.MemoryBytes > 0 {
		const step = 256 << 20
		g.MemoryMB = int((l.MemoryBytes+step-1)/step) * 256
	}
	return g
}

// metadata is what a restarted gateway finds the Machine by. It never
// holds the token or a key.
func (p *Provider) metadata(spec providers.Spec) map[string]string {
	return identityKeys.Tags(spec.Identity(p.Name()))
}

// waitStarted waits until the Machine is started (Fly's wait call holds
// at most 60 s, so it is repeated until ctx ends) and returns it as Fly
// now knows it. A Machine that stops, fails or vanishes meanwhile is an
// error wrapping providers.ErrNotReady (or ErrGone).
func (p *Provider) waitStarted(ctx context.Context, m *fly.Machine) (*fly.Machine, error) {
	for {
		if m.State == stateStarted {
			return m, nil
		}
		switch m.State {
		case stateStopped, stateSuspended, stateFailed, stateDestroying, stateDestroyed:
			return nil, fmt.Errorf("machine %s is %s instead of started%s (%w)", m.ID, m.State, lastExit(m), providers.ErrNotReady)
		}
		err := p.api.Wait(ctx, p.opts.App, m.ID, flaps.WithWaitStates(stateStarted), flaps.WithWaitTimeout(remaining(ctx)))
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("machine %s not started (%w): %w", m.ID, providers.ErrNotReady, ctx.Err())
		}
		if err != nil && apiStatus(err) != http.StatusRequestTimeout {
			// Not a plain timeout (e.g. the Machine can no longer reach
			// the state): look at it.
			p.logger.Debug("machine wait failed", zap.String("instance_id", m.ID), zap.Error(err))
		}
		got, gerr := p.api.Get(ctx, p.opts.App, m.ID)
		if gerr != nil {
			return nil, p.apiError("wait for", m.ID, gerr)
		}
		m = got
		if err != nil && m.State != stateStarted && apiStatus(err) != http.StatusRequestTimeout && ctx.Err() == nil {
			// A refused wait on a Machine still on its way: don't spin.
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// remaining is the time left before ctx's deadline (60 s when it has
// none), for Fly's wait call.
func remaining(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return time.Minute
}

// lastExit describes the Machine's last exit, if Fly reported one.
func lastExit(m *fly.Machine) string {
	code, ok := lastExitCode(m)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" (its process exited with code %d)", code)
}

// lastExitCode is the exit code of the Machine's last exit event.
func lastExitCode(m *fly.Machine) (int, bool) {
	ev := m.GetLatestEventOfType("exit")
	if ev == nil || ev.Request == nil {
		return 0, false
	}
	code, err := ev.Request.GetExitCode()
	return code, err == nil
}

// waitReady waits until the agent's /health answers ready through the
// instance's route.
func (p *Provider) waitReady(ctx context.Context, inst *providers.Instance) error {
	err := providers.WaitReady(ctx, &agentclient.Client{BaseURL: inst.URL, Token: inst.Token, Header: inst.Header})
	if err != nil {
		return fmt.Errorf("not ready after %s: %w", time.Duration(p.opts.ReadyTimeout), err)
	}
	return nil
}

// cleanup destroys what a failed Create launched.
func (p *Provider) cleanup(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancel()
	p.gone.Mark(id)
	err := p.api.Destroy(ctx, p.opts.App, fly.RemoveMachineInput{ID: id, Kill: true}, "")
	if err != nil && !isNotFound(err) {
		p.logger.Warn("could not destroy a machine after a failed create", zap.String("instance_id", id), zap.Error(err))
	}
}

// agentURL is where the control plane reaches the Machine's agent.
func (p *Provider) agentURL(m *fly.Machine) (string, http.Header, error) {
	if p.opts.Private {
		if m.PrivateIP == "" {
			return "", nil, fmt.Errorf("fly: machine %s has no private address", m.ID)
		}
		return "http://" + net.JoinHostPort(m.PrivateIP, strconv.Itoa(agentPort)), nil, nil
	}
	h := http.Header{}
	h.Set(forceInstanceHeader, m.ID)
	return p.opts.PublicURL, h, nil
}

// errNoToken marks a Machine whose config carries no agent token.
var errNoToken = errors.New("no " + agent.EnvToken + " in its config")
