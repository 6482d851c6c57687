// Package vercel is the Vercel Sandbox provider: it runs each agent in its
// own Vercel Sandbox (a Firecracker microVM), through the small typed
// client of the Sandbox REST API in sandboxapi (Vercel publishes no Go
// SDK; the client speaks what @vercel/sandbox 3.5.0 sends).
//
// A sandbox's base image has no agent, so the provider starts every
// sandbox from a snapshot that has it: the operator's (Options.Snapshot),
// or one it prepares itself on first use, once per provider value: a
// sandbox, the agent and the Claude Code CLI installed (uploaded as a
// gzipped tar through the file API, or the CLI installed with npm), then a
// snapshot. The snapshot's name is a hash of what it holds, so a second
// gateway, or the next one after a restart, finds and reuses it.
//
// One sandbox serves one conversation. It is persistent (Vercel keeps its
// file system between sessions), routes the agent's port publicly (the
// agent's own bearer token guards it) and carries its identity in its
// tags (at most five: provider, session, owner, conversation,
// configuration, or the warm-pool entry), by which a restarted gateway
// lists it. The agent server runs as a detached command with its token in
// the command's environment; the token is derived from a secret and the
// sandbox's name, so a restarted gateway recomputes it instead of storing
// it anywhere.
//
// Vercel stops a sandbox when its timeout passes. The provider extends a
// sandbox in use before that happens, and reports one that Vercel stopped
// anyway as expired: a conversation that went to sleep, woken (resumed,
// its agent started again, its CLI session resumed from the state
// directory in the persistent file system) on its next message. Sleep
// stops the sandbox. Vercel has no event stream: stops and deaths are
// found by listing the sandboxes' statuses. 429 answers are waited out
// honouring Retry-After, and sandboxes on their way down (422) are asked
// again after a backoff.
package vercel

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/statepoll"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// Tags set on every agent sandbox. Vercel allows five a sandbox, so the
// provider's name is the managed mark, and empty values are left out: a
// session's agent carries provider, session, owner, conversation and
// configuration; a warm-pool agent provider, configuration and pool.
const (
	// TagProvider holds the configured name of the provider that made the
	// sandbox; rediscovery lists by it (?tags=agcluster:<name>).
	TagProvider = "agcluster"
	// TagSession holds the session id.
	TagSession = "agcluster_session"
	// TagOwner holds the owner's opaque id (a hash).
	TagOwner = "agcluster_owner"
	// TagConversation holds the client's conversation id.
	TagConversation = "agcluster_conversation"
	// TagConfig holds the agent configuration id.
	TagConfig = "agcluster_config"
	// TagPool names the warm pool entry a sandbox was made for.
	TagPool = "agcluster_pool"
	// TagSnapshot marks the sandbox a snapshot was prepared in (its value
	// is the snapshot's fingerprint).
	TagSnapshot = "agcluster_snapshot"
)

// identityKeys are the tags an agent's identity is recorded under.
var identityKeys = providers.IdentityKeys{
	Provider:     TagProvider,
	Session:      TagSession,
	Owner:        TagOwner,
	Conversation: TagConversation,
	Config:       TagConfig,
	Pool:         TagPool,
	OmitEmpty:    true,
}

// Defaults applied to zero-valued [Options] fields.
const (
	// DefaultVCPUs is a sandbox's vCPUs (2 GB of memory each): enough for
	// the agent and the CLI; Vercel's own default is 2.
	DefaultVCPUs = 1
	// DefaultTimeout is how long a sandbox lives before Vercel stops it,
	// unless the provider extends it (it does while the sandbox is in use).
	DefaultTimeout = 15 * time.Minute
	// DefaultReadyTimeout bounds how long Create and Wake wait for the
	// sandbox and the agent's /health.
	DefaultReadyTimeout = 2 * time.Minute
	// DefaultPollInterval is how often Events lists the sandboxes.
	DefaultPollInterval = 5 * time.Second
	// DefaultName is the provider's name when Options.Name is empty.
	DefaultName = "vercel"
)

// Fixed facts of the sandboxes.
const (
	// agentPort is the agent server's port, routed publicly.
	agentPort = 8080
	// sandboxRoot is the working directory of Vercel's sandboxes.
	sandboxRoot = "/vercel/sandbox"
	// workspaceDir is the agent's workspace (AGENT_WORKSPACE).
	workspaceDir = sandboxRoot + "/workspace"
	// stateDir is where the agent keeps its CLI sessions and its own
	// state (AGENT_STATE_DIR), in the persistent file system.
	stateDir = sandboxRoot + "/.agcluster/state"
	// homeDir is the agent's HOME.
	homeDir = sandboxRoot + "/.agcluster/home"
	// agentPath and claudePath are where the snapshot holds the binaries
	// (installed by root: the agent's user cannot change them).
	agentPath  = "/usr/local/bin/agcluster-agent"
	claudePath = "/usr/local/bin/claude"
	// cleanupBudget bounds the calls that undo a failed Create.
	cleanupBudget = 30 * time.Second
	// minTimeout is the shortest Timeout accepted.
	minTimeout = 10 * time.Second
)

// Options configure the Vercel provider. The guest module [Module] embeds
// this struct as its JSON configuration.
type Options struct {
	// Name is the provider's configured name (Provider.Name), recorded in
	// every sandbox's tags. Default "vercel". It is not part of the JSON:
	// the app names its providers.
	Name string `json:"-"`
	// Token is the Vercel access token (required), e.g.
	// "{env.VERCEL_TOKEN}" (placeholders are replaced at provision).
	Token string `json:"token,omitempty"`
	// ProjectID is the Vercel project the sandboxes belong to (required).
	ProjectID string `json:"project_id,omitempty"`
	// TeamID is the team that owns the project (sent as ?teamId=).
	TeamID string `json:"team_id,omitempty"`
	// APIURL is the API's base URL. Default "https://vercel.com/api".
	APIURL string `json:"api_url,omitempty"`
	// Snapshot is a prepared snapshot with the agent and the CLI
	// installed; empty: the provider prepares one from AgentBinary and
	// ClaudeBinary (or ClaudeVersion) on first use.
	Snapshot string `json:"snapshot,omitempty"`
	// AgentBinary is the agcluster-agent binary (linux/amd64, static) to
	// install when the provider prepares the snapshot.
	AgentBinary string `json:"agent_binary,omitempty"`
	// ClaudeBinary is the claude binary (linux/amd64) to install.
	ClaudeBinary string `json:"claude_binary,omitempty"`
	// ClaudeVersion, instead of ClaudeBinary, installs that version of
	// @anthropic-ai/claude-code with npm inside the sandbox (it needs the
	// sandbox's network).
	ClaudeVersion string `json:"claude_version,omitempty"`
	// VCPUs is a sandbox's vCPUs, 1 to 8, with 2 GB of memory each.
	// Default 1.
	VCPUs int `json:"vcpus,omitempty"`
	// Timeout is how long a sandbox lives before Vercel stops it (the
	// plan caps it: 45 minutes on Hobby); the provider extends sandboxes
	// in use by as much again before they reach it. Default 15m.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Env is extra environment passed to every agent. It must not hold an
	// API key nor the variables the provider sets.
	Env map[string]string `json:"env,omitempty"`
	// AgentSecret is the secret agent tokens are derived from (at least
	// 32 characters). Default: derived from Token and ProjectID, so
	// rotating the token changes the tokens of agents started afterwards.
	AgentSecret string `json:"agent_secret,omitempty"`
	// ReadyTimeout bounds how long Create and Wake wait for the sandbox
	// and the agent. Default 2m.
	ReadyTimeout caddy.Duration `json:"ready_timeout,omitempty"`
	// PollInterval is how often the event watcher lists the sandboxes.
	// Default 5s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`
}

// Provider runs agents in Vercel Sandboxes. It is safe for concurrent use.
type Provider struct {
	opts   Options
	api    *sandboxapi.Client
	secret []byte
	logger *zap.Logger
	prep   preparer
	keeper *keeper

	mu       sync.Mutex
	creating providers.IDSet                       // sandboxes this Provider is creating
	sleeping providers.IDSet                       // sandboxes this Provider stopped and has not woken
	gone     providers.GoneSet                     // sandboxes this Provider deleted in the last hour
	poller   *statepoll.Poller[sandboxapi.Sandbox] // Events' subscriptions
	routes   map[string]string                     // agent route URL by sandbox name
}

// New checks opts, applies defaults and creates the API client. It does
// not contact Vercel; use [Provider.Ping] for that. A nil logger discards
// logs.
func New(opts Options, logger *zap.Logger) (*Provider, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	api, err := sandboxapi.New(sandboxapi.Options{BaseURL: opts.APIURL, Token: opts.Token, TeamID: opts.TeamID,
		Logger: logger, UserAgent: "caddy-agcluster (vercel/sandbox " + sandboxapi.Version + " api)"})
	if err != nil {
		return nil, fmt.Errorf("vercel: %w", err)
	}
	p := &Provider{
		opts:   opts,
		api:    api,
		secret: agentSecret(opts),
		logger: logger,
		routes: map[string]string{},
	}
	p.prep.p = p
	p.poller = p.newPoller()
	p.keeper = startKeeper(p)
	return p, nil
}

// normalize applies defaults to zero-valued fields and checks the result.
func (opts Options) normalize() (Options, error) {
	opts.Name = cmp.Or(opts.Name, DefaultName)
	opts.APIURL = strings.TrimRight(cmp.Or(opts.APIURL, sandboxapi.DefaultBaseURL), "/")
	opts.VCPUs = cmp.Or(opts.VCPUs, DefaultVCPUs)
	opts.Timeout = cmp.Or(opts.Timeout, caddy.Duration(DefaultTimeout))
	opts.ReadyTimeout = cmp.Or(opts.ReadyTimeout, caddy.Duration(DefaultReadyTimeout))
	opts.PollInterval = cmp.Or(opts.PollInterval, caddy.Duration(DefaultPollInterval))
	if err := opts.check(); err != nil {
		return opts, fmt.Errorf("vercel: options: %w", err)
	}
	return opts, nil
}

// check reports every problem of normalized options at once.
func (opts Options) check() error {
	var errs []error
	if strings.TrimSpace(opts.Token) == "" {
		errs = append(errs, errors.New("token is required (e.g. {env.VERCEL_TOKEN})"))
	}
	if strings.TrimSpace(opts.ProjectID) == "" {
		errs = append(errs, errors.New("project_id is required (the Vercel project the sandboxes belong to)"))
	}
	if u, err := url.Parse(opts.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("api_url %q: want an http(s) URL such as %s", opts.APIURL, sandboxapi.DefaultBaseURL))
	}
	errs = append(errs, opts.checkSnapshot()...)
	if opts.VCPUs < 1 || opts.VCPUs > 8 {
		errs = append(errs, fmt.Errorf("vcpus %d: Vercel gives a sandbox 1 to 8 vCPUs", opts.VCPUs))
	}
	if time.Duration(opts.Timeout) < minTimeout {
		errs = append(errs, fmt.Errorf("timeout %s: want at least %s", time.Duration(opts.Timeout), minTimeout))
	}
	if opts.ReadyTimeout < 0 || opts.PollInterval < 0 {
		errs = append(errs, errors.New("ready_timeout and poll_interval must not be negative"))
	}
	if opts.AgentSecret != "" && len(opts.AgentSecret) < 32 {
		errs = append(errs, errors.New("agent_secret: want at least 32 characters"))
	}
	if err := providers.CheckEnv(opts.Env); err != nil {
		errs = append(errs, fmt.Errorf("env: %w", err))
	}
	return errors.Join(errs...)
}

// checkSnapshot checks the snapshot options: a snapshot, or what to
// prepare one from.
func (opts Options) checkSnapshot() []error {
	if opts.Snapshot != "" {
		if opts.AgentBinary != "" || opts.ClaudeBinary != "" || opts.ClaudeVersion != "" {
			return []error{errors.New("snapshot is prepared already: agent_binary, claude_binary and claude_version are for preparing one")}
		}
		return nil
	}
	var errs []error
	if opts.AgentBinary == "" {
		errs = append(errs, errors.New("agent_binary is required without a snapshot (the agcluster-agent binary to install)"))
	}
	switch {
	case opts.ClaudeBinary == "" && opts.ClaudeVersion == "":
		errs = append(errs, errors.New("claude_binary or claude_version is required without a snapshot"))
	case opts.ClaudeBinary != "" && opts.ClaudeVersion != "":
		errs = append(errs, errors.New("claude_binary and claude_version: give one"))
	}
	return errs
}

// agentSecret is the key agent tokens are derived from.
func agentSecret(opts Options) []byte {
	if opts.AgentSecret != "" {
		return []byte(opts.AgentSecret)
	}
	sum := sha256.Sum256([]byte("agcluster vercel agent tokens\x00" + opts.Token + "\x00" + opts.ProjectID))
	return sum[:]
}

// token is the agent token of sandbox name.
func (p *Provider) token(name string) string { return providers.DeriveToken(p.secret, name) }

// Name returns the provider's configured name (Options.Name, default
// "vercel").
func (p *Provider) Name() string { return p.opts.Name }

// Kind returns "vercel".
func (p *Provider) Kind() string { return "vercel" }

// Options returns the options in effect, defaults applied.
func (p *Provider) Options() Options { return p.opts }

// Close stops the timeout keeper and releases idle API connections.
// Sandboxes keep running (until their timeout).
func (p *Provider) Close() error {
	p.keeper.stop()
	p.api.CloseIdleConnections()
	return nil
}

// Ping checks that the API answers for the project with the token: it
// lists one sandbox. Its error wraps [providers.ErrUnavailable] unless ctx
// ended.
func (p *Provider) Ping(ctx context.Context) error {
	if _, err := p.api.ListSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: p.opts.ProjectID, Limit: 1}); err != nil {
		return p.apiError("ping", "", err)
	}
	return nil
}

// Interface guards.
var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Sleeper  = (*Provider)(nil)
	_ providers.Watcher  = (*Provider)(nil)
	_ providers.Expirer  = (*Provider)(nil)
	_ providers.Pinger   = (*Provider)(nil)
)
