// Package providers defines how the control plane provisions agents. A
// provider is a small required core (create a ready agent, destroy one,
// list its agents after a restart) plus optional capabilities, each a small
// interface a provider implements when its platform has the feature, the
// way Caddy's reverse proxy models optional transport features:
//
//   - [Watcher]: the platform reports agents that died, ran out of memory,
//     slept or expired.
//   - [Sleeper]: an agent can be stopped keeping its workspace and CLI
//     session, and started again later.
//   - [Expirer]: the platform stops agents at a known time, and may let
//     that time be extended.
//   - [Pinger]: the backend can be asked whether it is reachable.
//   - [Finder]: a session's agent can be looked up by its session id
//     without listing every agent (gateways sharing a fleet look up
//     conversations they have not seen).
//   - [Claimer]: a warm-pool agent can be given its session's name, once,
//     so that two gateways never hand out two agents for one conversation.
//
// Each provider lives in its own sub-package, registers its own Caddy
// guest module agcluster.providers.<kind>, and passes the shared
// conformance suite in providers/providertest. Nothing in providers/
// imports the session layer or the Caddy glue.
package providers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
)

// Provider starts, finds and removes agents. It is the core every provider
// implements; optional capabilities are the other interfaces of this
// package.
type Provider interface {
	// Name is the provider's configured name (e.g. "docker" or "gpu"). It
	// is recorded on every instance the provider makes, so every later
	// call for that instance goes through the provider that made it, and
	// two providers sharing a backend never see each other's agents.
	Name() string
	// Kind is the provider's type, e.g. "docker" or "fly".
	Kind() string
	// Create starts an agent for spec and returns once its /health
	// answers ready. On failure nothing is left behind.
	Create(ctx context.Context, spec Spec) (*Instance, error)
	// Destroy stops and removes the agent and its workspace. Destroying an
	// instance that no longer exists is not an error.
	Destroy(ctx context.Context, id string) error
	// List returns every agent of this provider (by Name), running or
	// not, for rediscovery after a restart. Instance.State tells which.
	List(ctx context.Context) ([]*Instance, error)
	// Close releases the provider's clients. Agents keep running.
	Close() error
}

// Sleeper is a provider whose agents can sleep: stopped, using no memory
// or CPU, while their workspace and the CLI's session state are kept.
type Sleeper interface {
	// Sleep stops the agent, keeping its workspace and CLI session. It
	// records inst's session, owner and conversation on the backend (an
	// agent handed out by a warm pool was made without them) and returns
	// the instance as the backend now knows it (its ID may change).
	// Sleeping an agent that is already asleep is not an error.
	Sleep(ctx context.Context, inst *Instance) (*Instance, error)
	// Wake starts a sleeping (or stopped) agent and returns once it is
	// ready, with how to reach it now (its URL may change). Waking a
	// running agent returns it as it is. When the agent or its workspace
	// no longer exists the error wraps [ErrGone].
	Wake(ctx context.Context, id string) (*Instance, error)
}

// Watcher is a provider that reports what happens to its agents.
type Watcher interface {
	// Events streams the provider's instance events until ctx ends; both
	// channels are closed then. When the stream fails one error is sent
	// and both are closed: call Events again to resubscribe (and List, to
	// learn what happened meanwhile).
	Events(ctx context.Context) (<-chan Event, <-chan error)
}

// Expirer is a provider whose platform stops agents at a known time (a
// sandbox's maximum runtime).
type Expirer interface {
	// ExpiresAt is when the platform will stop inst (zero: never).
	ExpiresAt(inst *Instance) time.Time
	// Extend asks for d more time for the instance. A platform that cannot
	// extend returns an error wrapping [ErrUnsupported].
	Extend(ctx context.Context, id string, d time.Duration) error
}

// Pinger is a provider that can tell whether its backend is reachable.
type Pinger interface {
	// Ping returns nil when the backend answers; otherwise an error
	// wrapping [ErrUnavailable] (or ctx's error).
	Ping(ctx context.Context) error
}

// Finder is a provider that can look up a session's agent directly (by
// the name it gave it), where [Find] would otherwise list every agent.
type Finder interface {
	// Find returns the agent of the session sessionID, running or not; an
	// error wrapping [ErrGone] when there is none. An agent handed out by
	// a warm pool is found once [Claimer.Claim] named it.
	Find(ctx context.Context, sessionID string) (*Instance, error)
}

// Claimer is a provider that can give a warm-pool agent its session's
// identity atomically, on the backend's own uniqueness (a container
// name), so that the session's agent is found by [Finder.Find] and a
// second claim or creation for the session fails.
type Claimer interface {
	// Claim names inst (an unbound warm-pool agent) for spec's session and
	// returns it as the session's. When the session has an agent already
	// the error wraps [ErrExists] and inst keeps the name it had (the
	// caller decides what becomes of it).
	Claim(ctx context.Context, inst *Instance, spec Spec) (*Instance, error)
}

// Find returns the agent of session sessionID from p: through [Finder]
// when p has it, else by listing p's agents. An error wrapping [ErrGone]
// means there is none.
func Find(ctx context.Context, p Provider, sessionID string) (*Instance, error) {
	if f, ok := p.(Finder); ok {
		return f.Find(ctx, sessionID)
	}
	insts, err := p.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, inst := range insts {
		if inst.SessionID == sessionID {
			return inst, nil
		}
	}
	return nil, fmt.Errorf("%s: no agent for session %q: %w", p.Name(), sessionID, ErrGone)
}

// Capabilities lists the optional interfaces p implements, by name
// ("sleep", "events", "expiry", "ping", "find", "claim"), for status pages.
func Capabilities(p Provider) []string {
	var caps []string
	if _, ok := p.(Sleeper); ok {
		caps = append(caps, "sleep")
	}
	if _, ok := p.(Watcher); ok {
		caps = append(caps, "events")
	}
	if _, ok := p.(Expirer); ok {
		caps = append(caps, "expiry")
	}
	if _, ok := p.(Pinger); ok {
		caps = append(caps, "ping")
	}
	if _, ok := p.(Finder); ok {
		caps = append(caps, "find")
	}
	if _, ok := p.(Claimer); ok {
		caps = append(caps, "claim")
	}
	return caps
}

// Spec describes the agent to create.
type Spec struct {
	// Provider names the provider to create the agent with; empty means
	// the gateway's default provider. Providers themselves ignore it.
	Provider string
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

// State is whether an instance runs.
type State string

// Instance states.
const (
	// StateRunning: the agent runs (or is starting).
	StateRunning State = "running"
	// StateStopped: the agent is stopped with its workspace kept: asleep,
	// or stopped behind the gateway's back (an engine restart, a manual
	// stop, an out-of-memory kill of the whole agent). Either way it can
	// be woken.
	StateStopped State = "stopped"
)

// Instance is an agent as its provider knows it.
type Instance struct {
	// ID is the provider's id for the instance (e.g. the container id).
	ID string
	// Provider is the Name of the provider that made it.
	Provider string
	// SessionID is the session the agent serves (empty for an unbound
	// warm-pool agent).
	SessionID string
	// Owner is the owner's opaque id.
	Owner string
	// Conversation is the client's conversation id.
	Conversation string
	// ConfigID names the agent configuration.
	ConfigID string
	// State says whether the agent runs.
	State State
	// URL is the agent server's base URL as the control plane reaches it
	// (meaningful while it runs).
	URL string
	// Header is sent with every request to the agent, e.g. a routing
	// header that picks this machine behind a shared address.
	Header http.Header
	// Token is the agent's bearer token.
	Token string
	// CreatedAt is when the instance was created.
	CreatedAt time.Time
	// Pool is the Spec's Pool: set for agents made for a warm pool.
	Pool string
}

// Bound returns a copy of i serving the session, owner and conversation
// of b (a warm-pool agent handed out: its binding says whose it is).
func (i *Instance) Bound(b agent.Binding) *Instance {
	out := *i
	out.SessionID, out.Owner, out.Conversation = b.SessionID, b.Owner, b.Conversation
	return &out
}

// Client returns a client for the instance's agent server.
func (i *Instance) Client() *agentclient.Client {
	return &agentclient.Client{BaseURL: i.URL, Token: i.Token, Header: i.Header}
}

// EventReason says what happened to an instance.
type EventReason string

// Event reasons. Only ReasonDied and ReasonExpired mean the agent stopped
// without being asked; ReasonSlept is the platform (or the gateway)
// putting it to sleep, which is not a crash.
const (
	// ReasonDied: the agent stopped (exited, was killed, its host went
	// away). Its workspace may survive: the session layer tries a wake.
	ReasonDied EventReason = "died"
	// ReasonOOM: a process in the agent was killed for lack of memory; the
	// agent itself may live on (a ReasonDied follows if it did not).
	ReasonOOM EventReason = "oom"
	// ReasonSlept: the agent was put to sleep.
	ReasonSlept EventReason = "slept"
	// ReasonExpired: the platform's time limit stopped the agent.
	ReasonExpired EventReason = "expired"
)

// Event is something that happened to an agent instance.
type Event struct {
	// InstanceID is the instance's id (Instance.ID).
	InstanceID string
	// SessionID is the session the agent served, when known.
	SessionID string
	// Reason says what happened.
	Reason EventReason
	// ExitCode is the agent's exit code for ReasonDied (137 when killed).
	ExitCode int
	// Time is when the provider saw it.
	Time time.Time
}

// DeriveToken returns an agent token derived from a gateway secret and an
// instance key (an id or name fixed at creation): a provider whose backend
// has nowhere safe to keep a token can recompute it after a restart
// instead of storing it. The secret must be at least 32 random bytes.
func DeriveToken(secret []byte, instanceKey string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("agcluster agent token\x00"))
	mac.Write([]byte(instanceKey))
	return hex.EncodeToString(mac.Sum(nil))
}

// Errors providers return, wrapped with detail.
var (
	// ErrUnavailable: the provider's backend (engine, API) cannot be reached.
	ErrUnavailable = errors.New("provider unavailable")
	// ErrImageMissing: the agent image does not exist.
	ErrImageMissing = errors.New("agent image not found")
	// ErrNotReady: the agent started but never became ready.
	ErrNotReady = errors.New("agent did not become ready")
	// ErrGone: the agent, or its workspace, no longer exists.
	ErrGone = errors.New("agent no longer exists")
	// ErrExists: the session has an agent already (made by another
	// gateway sharing the backend, or by an earlier attempt): creating or
	// claiming one again fails on the backend's uniqueness of names.
	ErrExists = errors.New("the session has an agent already")
	// ErrUnsupported: the platform cannot do what was asked (a limit it
	// cannot apply, an extension it does not offer).
	ErrUnsupported = errors.New("not supported by this provider")
)
