// Package docker is the Docker provider: it runs each agent as a hardened
// container of the agent image on a Docker engine (local socket or
// DOCKER_HOST), with two named volumes (the workspace, and the agent's
// durable state: the CLI's sessions and the agent's own state), a fresh
// bearer token and labels that let a restarted control plane find its
// agents again. Agents can sleep (the container stopped, its volumes kept)
// and wake again with their files and conversation.
//
// Every container runs with no capabilities, no new privileges, a read-only
// root file system, tmpfs /tmp and home, memory, CPU and process limits, and
// its port published on a loopback address only. No API key ever reaches a
// container's environment: keys travel with each query.
package docker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Labels set on every agent container and workspace volume.
const (
	// LabelManaged marks objects made by agcluster ("true").
	LabelManaged = "agcluster.managed"
	// LabelProvider holds the configured name of the provider that made
	// the object (Provider.Name, "docker" by default): providers of other
	// names on the same engine ignore the object.
	LabelProvider = "agcluster.provider"
	// LabelSession holds the session id.
	LabelSession = "agcluster.session"
	// LabelOwner holds the owner's opaque id (a hash).
	LabelOwner = "agcluster.owner"
	// LabelConversation holds the client's conversation id.
	LabelConversation = "agcluster.conversation"
	// LabelConfig holds the agent configuration id.
	LabelConfig = "agcluster.config"
	// LabelVolume names the container's workspace volume.
	LabelVolume = "agcluster.volume"
	// LabelStateVolume names the container's state volume (the CLI's
	// sessions and the agent's own state, mounted at /state).
	LabelStateVolume = "agcluster.state_volume"
	// LabelPool names the warm pool entry an agent was made for (empty
	// session, owner and conversation labels then).
	LabelPool = "agcluster.pool"
)

// identityKeys are the labels an agent's identity is recorded under.
var identityKeys = providers.IdentityKeys{
	Managed:      LabelManaged,
	Provider:     LabelProvider,
	Session:      LabelSession,
	Owner:        LabelOwner,
	Conversation: LabelConversation,
	Config:       LabelConfig,
	Pool:         LabelPool,
}

// Defaults applied by [New] to zero-valued [Options] fields.
const (
	// DefaultImage is the agent image.
	DefaultImage = "agcluster/agent:latest"
	// DefaultMemoryBytes is the memory limit (1 GiB).
	DefaultMemoryBytes = 1 << 30
	// DefaultNanoCPUs is the CPU limit (one CPU).
	DefaultNanoCPUs = 1_000_000_000
	// DefaultPids is the process limit.
	DefaultPids = 256
	// DefaultTmpSize is the size of the /tmp tmpfs.
	DefaultTmpSize = "256m"
	// DefaultHomeSize is the size of the home directory tmpfs.
	DefaultHomeSize = "256m"
	// DefaultPublishHost is the host address agent ports are published on.
	DefaultPublishHost = "127.0.0.1"
	// DefaultIsolatedNetwork is the network agents join by default.
	DefaultIsolatedNetwork = "agcluster-agents"
	// DefaultReadyTimeout bounds how long Create and Wake wait for /health.
	DefaultReadyTimeout = 60 * time.Second
	// DefaultName is the provider's name when Options.Name is empty.
	DefaultName = "docker"
)

// Fixed facts about the agent image.
const (
	agentPort     = "8080/tcp"
	workspaceDir  = "/workspace"
	stateDir      = "/state"
	homeDir       = "/home/agent"
	agentUID      = 1000
	cleanupBudget = 30 * time.Second
	// stopTimeout is how long Sleep lets the agent shut down after SIGTERM
	// before the engine kills it.
	stopTimeout = 10 * time.Second
)

// Options configure the Docker provider. The guest module [Module] embeds
// this struct as its JSON configuration.
type Options struct {
	// Name is the provider's configured name (Provider.Name), recorded on
	// every container and volume: providers of different names share an
	// engine without seeing each other's agents. Default "docker". It is
	// not part of the JSON: the app names its providers.
	Name string `json:"-"`
	// Host is the engine address, e.g. "unix:///var/run/docker.sock" or
	// "tcp://10.0.0.5:2376". Empty means DOCKER_HOST, or the default socket.
	Host string `json:"host,omitempty"`
	// Image is the agent image used when a Spec names none. Default
	// "agcluster/agent:latest".
	Image string `json:"image,omitempty"`
	// Network is a Docker network agents are attached to (as their only
	// network), e.g. to reach a mock API or an egress proxy by name. Empty
	// means the default bridge.
	Network string `json:"network,omitempty"`
	// Env is extra environment passed to every agent. It must not hold an
	// API key (ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN, ...) nor the
	// variables the provider sets (AGENT_TOKEN, AGENT_CONFIG, AGENT_ADDR,
	// AGENT_WORKSPACE, AGENT_STATE_DIR). A Spec's Env overrides it name by
	// name.
	Env map[string]string `json:"env,omitempty"`
	// MemoryBytes is the default memory limit. Default 1 GiB. Swap is
	// disabled (the swap limit equals the memory limit).
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// NanoCPUs is the default CPU limit in billionths of a CPU. Default 1e9.
	NanoCPUs int64 `json:"nano_cpus,omitempty"`
	// Pids is the default limit on processes. Default 256.
	Pids int64 `json:"pids,omitempty"`
	// TmpSize is the size of the /tmp tmpfs, as a number with an optional
	// k, m or g suffix. Default "256m".
	TmpSize string `json:"tmp_size,omitempty"`
	// HomeSize is the size of the agent's home directory tmpfs
	// (/home/agent), same syntax as TmpSize. Default "256m".
	HomeSize string `json:"home_size,omitempty"`
	// PublishHost is the host IP agent ports are published on, with an
	// ephemeral host port. Default "127.0.0.1": agents are never exposed
	// on every interface unless this says so.
	PublishHost string `json:"publish_host,omitempty"`
	// IsolatedNetwork is the bridge network agents join when Network is
	// empty; it is created with inter-container traffic disabled, so agents
	// cannot reach each other. Default "agcluster-agents"; "none" keeps
	// agents on the engine's default bridge.
	IsolatedNetwork string `json:"isolated_network,omitempty"`
	// ReachByContainerIP makes the control plane reach agents at their
	// address on Network (port 8080) instead of a published port; use it
	// when the control plane itself is attached to Network. No port is
	// published then. Requires Network.
	ReachByContainerIP bool `json:"reach_by_container_ip,omitempty"`
	// ReadyTimeout bounds how long Create and Wake wait for the agent's
	// /health to answer ready: a duration string such as "60s", or
	// nanoseconds. Default 60s.
	ReadyTimeout caddy.Duration `json:"ready_timeout,omitempty"`
	// ExtraLabels are extra labels on every container and volume, e.g. to
	// tell control planes sharing an engine apart, or for test cleanup.
	// List, Events, Sleep, Wake and Destroy only consider containers
	// carrying all of them. Keys must not be one of the provider's own labels
	// (LabelManaged, LabelSession, ...).
	ExtraLabels map[string]string `json:"extra_labels,omitempty"`
}

// Provider runs agents as Docker containers. It is safe for concurrent use.
type Provider struct {
	opts   Options
	cli    *client.Client
	logger *zap.Logger

	mu       sync.Mutex
	images   map[string]struct{} // images known to exist (positive results only)
	ncpu     int                 // the engine host's CPU count, once known
	netReady bool                // IsolatedNetwork exists
	creating providers.IDSet     // containers being created by this Provider
	sleeping providers.IDSet     // containers this Provider stopped with Sleep and has not woken
}

var sizeRE = regexp.MustCompile(`^[1-9][0-9]*[kmgKMG]?$`)

// New checks opts, applies defaults and creates the engine client. It does
// not contact the engine, so it is fast; use [Provider.Ping] for that. A
// nil logger discards logs.
func New(opts Options, logger *zap.Logger) (*Provider, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	clientOpts := []client.Opt{client.FromEnv}
	if opts.Host != "" {
		clientOpts = append(clientOpts, client.WithHost(opts.Host))
	}
	clientOpts = append(clientOpts, client.WithAPIVersionNegotiation())
	cli, err := client.NewClientWithOpts(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("docker: client for %q: %w", opts.Host, err)
	}
	return &Provider{
		opts:   opts,
		cli:    cli,
		logger: logger,
		images: map[string]struct{}{},
	}, nil
}

// normalize applies defaults to zero-valued fields and checks the result.
func (opts Options) normalize() (Options, error) {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.Image == "" {
		opts.Image = DefaultImage
	}
	if opts.MemoryBytes == 0 {
		opts.MemoryBytes = DefaultMemoryBytes
	}
	if opts.NanoCPUs == 0 {
		opts.NanoCPUs = DefaultNanoCPUs
	}
	if opts.Pids == 0 {
		opts.Pids = DefaultPids
	}
	if opts.TmpSize == "" {
		opts.TmpSize = DefaultTmpSize
	}
	if opts.HomeSize == "" {
		opts.HomeSize = DefaultHomeSize
	}
	if opts.PublishHost == "" {
		opts.PublishHost = DefaultPublishHost
	}
	switch opts.IsolatedNetwork {
	case "":
		opts.IsolatedNetwork = DefaultIsolatedNetwork
	case "none":
		opts.IsolatedNetwork = ""
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = caddy.Duration(DefaultReadyTimeout)
	}

	var errs []error
	if opts.MemoryBytes < 0 || opts.NanoCPUs < 0 || opts.Pids < 0 {
		errs = append(errs, errors.New("memory_bytes, nano_cpus and pids must not be negative"))
	}
	if opts.ReadyTimeout < 0 {
		errs = append(errs, errors.New("ready_timeout must not be negative"))
	}
	for name, v := range map[string]string{"tmp_size": opts.TmpSize, "home_size": opts.HomeSize} {
		if !sizeRE.MatchString(v) {
			errs = append(errs, fmt.Errorf("%s %q: want a size such as 256m", name, v))
		}
	}
	if net.ParseIP(opts.PublishHost) == nil {
		errs = append(errs, fmt.Errorf("publish_host %q: want an IP address", opts.PublishHost))
	}
	if opts.ReachByContainerIP && opts.Network == "" {
		errs = append(errs, errors.New("reach_by_container_ip needs network"))
	}
	if err := providers.CheckEnv(opts.Env); err != nil {
		errs = append(errs, fmt.Errorf("env: %w", err))
	}
	for k := range opts.ExtraLabels {
		if isOwnLabel(k) {
			errs = append(errs, fmt.Errorf("extra_labels: %q is set by the provider", k))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return opts, fmt.Errorf("docker: options: %w", err)
	}
	return opts, nil
}

// Name returns the provider's configured name (Options.Name, default
// "docker").
func (p *Provider) Name() string { return p.opts.Name }

// Kind returns "docker".
func (p *Provider) Kind() string { return "docker" }

// Options returns the options in effect, defaults applied.
func (p *Provider) Options() Options { return p.opts }

// Close releases the engine client. Agents keep running.
func (p *Provider) Close() error {
	if err := p.cli.Close(); err != nil {
		return fmt.Errorf("docker: close client: %w", err)
	}
	return nil
}

// Ping checks that the engine answers. Its error wraps
// [providers.ErrUnavailable] unless ctx was cancelled.
func (p *Provider) Ping(ctx context.Context) error {
	if _, err := p.cli.Ping(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("docker: ping engine at %s: %w", p.cli.DaemonHost(), err)
		}
		// Refused, or no answer in time: either way unavailable.
		return fmt.Errorf("docker: engine unreachable at %s (%w): %w", p.cli.DaemonHost(), providers.ErrUnavailable, err)
	}
	return nil
}

// wrap adds context to an engine error, marking connection failures with
// providers.ErrUnavailable.
func (p *Provider) wrap(op string, err error) error {
	if client.IsErrConnectionFailed(err) {
		return fmt.Errorf("docker: engine unreachable at %s (%w): %s: %w", p.cli.DaemonHost(), providers.ErrUnavailable, op, err)
	}
	return fmt.Errorf("docker: %s: %w", op, err)
}

func isOwnLabel(k string) bool {
	switch k {
	case LabelManaged, LabelProvider, LabelSession, LabelOwner, LabelConversation, LabelConfig, LabelVolume, LabelStateVolume, LabelPool:
		return true
	}
	return false
}

// shortID abbreviates a container id for error messages (logs carry the
// full id as instance_id).
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Interface guards.
var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Sleeper  = (*Provider)(nil)
	_ providers.Watcher  = (*Provider)(nil)
	_ providers.Pinger   = (*Provider)(nil)
)
