package vercel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// startScript starts the agent server: its directories (a snapshot made
// elsewhere may lack them), then the agent in its workspace. The sandbox's
// environment holds the agent's settings; the command's adds its token.
const startScript = `mkdir -p "$AGENT_WORKSPACE" "$AGENT_STATE_DIR" "$HOME" && chmod 700 "$AGENT_STATE_DIR" && ` +
	`cd "$AGENT_WORKSPACE" && exec ` + agentPath

// Create starts a sandbox for spec from the agent snapshot (preparing the
// snapshot first when this provider has none yet), starts its agent and
// returns once the agent's /health answers ready. The sandbox is named
// for the session (sandboxName) and Vercel's names are unique in a
// project: a second Create of the session fails with an error wrapping
// providers.ErrExists and leaves the first sandbox alone. On any other
// failure the sandbox this call made is deleted.
func (p *Provider) Create(ctx context.Context, spec providers.Spec) (_ *providers.Instance, err error) {
	what := fmt.Sprintf("vercel: create agent for session %q", spec.SessionID)
	cfgJSON, err := providers.CheckCreate(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	began := time.Now()
	name := p.sandboxName(spec.SessionID)
	p.creating.Mark(name)
	defer p.creating.Forget(name)
	sb, err := p.createSandbox(ctx, name, spec, cfgJSON)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.cleanup(ctx, name)
		}
	}()
	createdAt := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	inst, err := p.instance(sb.Sandbox, sb.Routes)
	if err != nil {
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, time.Duration(p.opts.ReadyTimeout))
	defer cancel()
	if err := p.startAgent(readyCtx, sb.Session.ID, name); err != nil {
		return nil, err
	}
	if err := p.waitReady(readyCtx, inst); err != nil {
		return nil, fmt.Errorf("%s: sandbox %s: %w", what, name, err)
	}
	p.noteRunning(inst, sb.Session.ExpiresAt(), 0)
	p.logger.Info("agent sandbox created",
		zap.String("instance_id", name),
		zap.String("session_id", spec.SessionID),
		zap.String("sandbox_session", sb.Session.ID),
		zap.String("url", inst.URL),
		zap.Duration("create_duration", createdAt.Sub(began)),
		zap.Duration("ready_duration", time.Since(createdAt)),
		zap.Duration("ready_after", time.Since(began)))
	return inst, nil
}

// createSandbox creates the sandbox from the agent snapshot; when the
// snapshot this provider prepared is gone (deleted, expired), it is
// prepared again, once.
func (p *Provider) createSandbox(ctx context.Context, name string, spec providers.Spec, cfgJSON []byte) (*sandboxapi.SandboxAndSession, error) {
	persistent := true
	req := sandboxapi.CreateSandboxRequest{
		ProjectID: p.opts.ProjectID, Name: name, Ports: []int{agentPort},
		Timeout:    time.Duration(p.opts.Timeout).Milliseconds(),
		Resources:  &sandboxapi.Resources{VCPUs: p.vcpus(spec.Limits)},
		Persistent: &persistent,
		Env:        p.sandboxEnv(spec, cfgJSON),
		Tags:       identityKeys.Tags(spec.Identity(p.Name())),
	}
	for attempt := 1; ; attempt++ {
		snap, err := p.prep.snapshotID(ctx)
		if err != nil {
			return nil, err
		}
		req.Source = sandboxapi.FromSnapshot(snap)
		// The create is not abandoned half-way when ctx ends (Vercel would
		// finish it anyway): so the cleanup knows whether a sandbox exists.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(p.opts.ReadyTimeout))
		sb, err := p.api.CreateSandbox(cctx, req)
		cancel()
		if sandboxapi.CodeOf(err) == sandboxapi.CodeSnapshotNotFound && p.opts.Snapshot == "" && attempt == 1 {
			p.logger.Warn("the vercel agent snapshot is gone; preparing it again", zap.String("snapshot_id", snap))
			p.prep.forget(snap)
			continue
		}
		if sandboxapi.IsConflict(err) {
			// Nothing of ours to undo: the sandbox is another call's.
			return nil, fmt.Errorf("vercel: create sandbox %s: the name is taken in project %q: the session has an agent already (%w)",
				name, p.opts.ProjectID, providers.ErrExists)
		}
		if err != nil {
			return nil, p.apiError("create", "", err)
		}
		return sb, nil
	}
}

// sandboxEnv is the sandbox's environment, which every command inherits:
// the operator's and the spec's variables, then the agent's settings (its
// configuration among them; never its token nor a key).
func (p *Provider) sandboxEnv(spec providers.Spec, cfgJSON []byte) map[string]string {
	env := maps.Clone(p.opts.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, spec.Env)
	if _, ok := env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"]; !ok {
		env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
	}
	maps.Copy(env, map[string]string{
		agent.EnvConfig:    string(cfgJSON),
		agent.EnvAddr:      fmt.Sprintf(":%d", agentPort),
		agent.EnvWorkspace: workspaceDir,
		agent.EnvStateDir:  stateDir,
		"HOME":             homeDir,
		"CLAUDE_BIN":       claudePath,
	})
	return env
}

// vcpus is the sandbox's vCPUs: the provider's, or the Spec's limits
// rounded up to what Vercel sells (whole vCPUs with 2 GB each, at most 8).
// A process limit (Limits.Pids) has no Vercel equivalent.
func (p *Provider) vcpus(l providers.Limits) int {
	n := p.opts.VCPUs
	if l.NanoCPUs > 0 || l.MemoryBytes > 0 {
		const gb2 = sandboxapi.MemoryPerVCPU << 20
		n = max(int((l.NanoCPUs+1e9-1)/1e9), int((l.MemoryBytes+gb2-1)/gb2), 1)
	}
	return min(n, 8)
}

// startAgent starts the agent server in session sid as a detached
// command, its token in the command's environment. A session on its way
// down (422) is asked again after a backoff.
func (p *Provider) startAgent(ctx context.Context, sid, name string) error {
	req := sandboxapi.CommandRequest{Command: "/bin/sh", Args: []string{"-c", startScript}, Cwd: sandboxRoot,
		Env: map[string]string{agent.EnvToken: p.token(name)}}
	return retryTransient(ctx, func() error {
		_, err := p.api.RunCommand(ctx, sid, req)
		if err != nil {
			return p.apiError("start the agent in", name, err)
		}
		return nil
	})
}

// retryTransient runs fn until it does not fail with a 422 of a session on
// its way down (sandbox_stopping, sandbox_snapshotting), waiting a growing
// backoff in between, or ctx ends.
func retryTransient(ctx context.Context, fn func() error) error {
	for wait := 250 * time.Millisecond; ; wait = min(wait*2, 2*time.Second) {
		err := fn()
		if !sandboxapi.IsTransient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w, then: %w", err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// waitReady waits until the agent's /health answers ready through the
// sandbox's route.
func (p *Provider) waitReady(ctx context.Context, inst *providers.Instance) error {
	err := providers.WaitReady(ctx, &agentclient.Client{BaseURL: inst.URL, Token: inst.Token})
	if err != nil {
		return fmt.Errorf("not ready after %s: %w", time.Duration(p.opts.ReadyTimeout), err)
	}
	return nil
}

// cleanup deletes what a failed Create made.
func (p *Provider) cleanup(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancel()
	p.markGone(name)
	if err := p.api.DeleteSandbox(ctx, p.opts.ProjectID, name); err != nil && !sandboxapi.IsNotFound(err) {
		p.logger.Warn("could not delete a sandbox after a failed create", zap.String("instance_id", name), zap.Error(err))
	}
}

// sandboxName is the name of session sessionID's sandbox: "agc-" and the
// first 16 hex digits of the SHA-256 of the provider's name and the
// session id, the same on every gateway (so one finds a conversation
// another made, and the second of two creates fails on Vercel's unique
// names). A sandbox for no session (a warm-pool agent) gets a random name.
// The name is the sandbox's for good: a sleep stops its session and a
// wake starts a new session of the same sandbox, by name.
func (p *Provider) sandboxName(sessionID string) string {
	if sessionID == "" {
		return "agc-pool-" + randhex.String(8)
	}
	sum := sha256.Sum256([]byte(p.Name() + "\x00" + sessionID))
	return "agc-" + hex.EncodeToString(sum[:])[:16]
}

// agentRoute is the URL of the agent's port among routes.
func agentRoute(name string, routes []sandboxapi.Route) (string, error) {
	for _, r := range routes {
		if r.Port == agentPort {
			return strings.TrimRight(r.URL, "/"), nil
		}
	}
	return "", fmt.Errorf("vercel: sandbox %s routes no port %d", name, agentPort)
}

// errNotAgent marks a sandbox that is not one of this provider's agents.
var errNotAgent = errors.New("not an agent sandbox of this provider")
