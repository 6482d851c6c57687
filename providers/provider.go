// Package providers defines how the control plane provisions agent
// containers. Each provider (Docker, Fly Machines, Cloudflare Containers,
// Vercel Sandbox) lives in its own sub-package and passes the shared
// conformance suite in providers/providertest.
package providers

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
)

// Provider starts, finds and removes agent containers.
type Provider interface {
	// Name identifies the provider type, e.g. "docker".
	Name() string
	// Create starts an agent for spec and returns once its /health
	// answers ready. On failure nothing is left behind.
	Create(ctx context.Context, spec Spec) (*Instance, error)
	// Destroy stops and removes the agent and its workspace. Destroying an
	// instance that no longer exists is not an error.
	Destroy(ctx context.Context, id string) error
	// List returns every agent this provider manages, for rediscovery
	// after a restart.
	List(ctx context.Context) ([]*Instance, error)
	// Close releases the provider's clients. Agents keep running.
	Close() error
}

// Spec describes the agent to create.
type Spec struct {
	// SessionID identifies the session the agent serves; it is recorded on
	// the instance (as a label or metadata) for rediscovery.
	SessionID string
	// Owner is the owner's opaque id (a hash, never a key).
	Owner string
	// Conversation is the client's conversation id, recorded for
	// rediscovery (it is not a secret).
	Conversation string
	// ConfigID names the agent configuration.
	ConfigID string
	// Config is passed to the agent as AGENT_CONFIG.
	Config *agent.Config
	// Image overrides the provider's default image.
	Image string
	// Env is extra environment for the agent (never an API key).
	Env map[string]string
	// Limits override the provider's default resource limits.
	Limits Limits
	// Pool marks an agent made ahead of demand for a warm pool: it names
	// the pool entry (configuration and template), is recorded for
	// rediscovery, and SessionID, Owner and Conversation are empty until
	// the agent is handed out (then they live in the agent's binding).
	Pool string
}

// WithEnv returns a copy of s whose Env also sets name to value (s's own
// map is not changed).
func (s Spec) WithEnv(name, value string) Spec {
	env := maps.Clone(s.Env)
	if env == nil {
		env = map[string]string{}
	}
	env[name] = value
	s.Env = env
	return s
}

// Limits are resource limits; zero values mean the provider's default.
type Limits struct {
	// MemoryBytes caps memory.
	MemoryBytes int64
	// NanoCPUs caps CPU in billionths of a CPU.
	NanoCPUs int64
	// Pids caps the number of processes.
	Pids int64
}

// Instance is a running agent.
type Instance struct {
	// ID is the provider's id for the instance (e.g. the container id).
	ID string
	// Provider is the provider's Name.
	Provider string
	// SessionID, Owner and ConfigID are those of the Spec it was made from.
	SessionID string
	// Owner is the owner's opaque id.
	Owner string
	// Conversation is the client's conversation id.
	Conversation string
	// ConfigID names the agent configuration.
	ConfigID string
	// URL is the agent server's base URL as the control plane reaches it.
	URL string
	// Token is the agent's bearer token.
	Token string
	// CreatedAt is when the instance was created.
	CreatedAt time.Time
	// Pool is the Spec's Pool: set for agents made for a warm pool.
	Pool string
}

// Client returns a client for the instance's agent server.
func (i *Instance) Client() *agentclient.Client {
	return &agentclient.Client{BaseURL: i.URL, Token: i.Token}
}

// Event is the death of an agent instance.
type Event struct {
	// InstanceID is the instance's id (Instance.ID).
	InstanceID string
	// SessionID is the session the agent served.
	SessionID string
	// Reason is "die" (the instance stopped, including when it is
	// destroyed) or "oom" (a process was killed for lack of memory).
	Reason string
	// ExitCode is the exit code for "die" (137 when killed).
	ExitCode int
	// Time is when the provider saw it.
	Time time.Time
}

// Watcher is implemented by providers that report instance deaths.
type Watcher interface {
	// Events streams instance deaths until ctx ends; both channels are
	// closed then. When the stream fails one error is sent and both are
	// closed: call Events again to resubscribe.
	Events(ctx context.Context) (<-chan Event, <-chan error)
}

// Errors providers return, wrapped with detail.
var (
	// ErrUnavailable: the provider's backend (engine, API) cannot be reached.
	ErrUnavailable = errors.New("provider unavailable")
	// ErrImageMissing: the agent image does not exist.
	ErrImageMissing = errors.New("agent image not found")
	// ErrNotReady: the agent started but never became ready.
	ErrNotReady = errors.New("agent did not become ready")
)
