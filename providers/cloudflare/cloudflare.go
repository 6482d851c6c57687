// Package cloudflare is the Cloudflare Containers provider: it runs each
// agent in a Cloudflare container through the agcluster Worker (in
// worker/, deployed with wrangler), which this package talks to over a
// small HTTP API guarded by a shared secret. No REST call starts a
// Cloudflare container: a Worker does, through a Durable Object. The
// Worker gives each agent a Durable Object named by the agent's id (the
// session id, so the object of a session is found by name), holding the
// agent's identity (provider, session, owner, conversation,
// configuration, pool entry; never a token nor a key) and running its
// container; one more object per provider name lists them, so a restarted
// gateway finds its agents.
//
// The control plane reaches each agent through the Worker: Instance.URL is
// <worker_url>/v1/agents/<id>/agent, relayed unchanged and unbuffered to
// the agent's port, and Instance.Header carries the Worker's secret
// (Agcluster-Worker-Authorization); the request's Authorization is the
// agent's own token. The token is derived from the secret and the agent's
// id, so nothing stores it: the gateway sends it with every start.
//
// A Cloudflare container's disk is gone when it stops, so the Worker keeps
// each agent's disk (its workspace and the CLI's state directory) in R2: it
// saves a snapshot (the agent's GET /snapshot) after every request that
// changes the disk and before it stops the container, and restores it into
// the next container (PUT /snapshot: the agent waits for it before it
// starts the CLI). Sleep and wake thus keep files and context as on the
// other providers; an agent whose container died resumes from the last
// snapshot. Cloudflare has no event stream for containers: deaths are
// found by listing the agents' states every PollInterval.
package cloudflare

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/statepoll"
)

// Defaults applied to zero-valued [Options] fields.
const (
	// DefaultReadyTimeout bounds how long Create and Wake wait for the
	// container and the agent's /health.
	DefaultReadyTimeout = 2 * time.Minute
	// DefaultPollInterval is how often Events lists the agents' states.
	DefaultPollInterval = 5 * time.Second
	// DefaultName is the provider's name when Options.Name is empty.
	DefaultName = "cloudflare"
)

// Fixed facts of the Worker's API.
const (
	// HeaderWorkerAuth carries the Worker's secret on relayed requests,
	// whose Authorization header is the agent's.
	HeaderWorkerAuth = "Agcluster-Worker-Authorization"
	// minSecret is the shortest secret accepted.
	minSecret = 16
	// cleanupBudget bounds the calls that undo a failed Create.
	cleanupBudget = 30 * time.Second
)

// Options configure the Cloudflare provider. The guest module [Module]
// embeds this struct as its JSON configuration.
type Options struct {
	// Name is the provider's configured name (Provider.Name), recorded with
	// every agent: providers of different names share a Worker without
	// seeing each other's agents. Default "cloudflare". It is not part of
	// the JSON: the app names its providers.
	Name string `json:"-"`
	// WorkerURL is the deployed Worker (required), e.g.
	// "https://agcluster-agents.example.workers.dev". It must be HTTPS
	// unless it is on loopback (wrangler dev): the secret and the agents'
	// tokens travel with every request.
	WorkerURL string `json:"worker_url,omitempty"`
	// Secret is the Worker's shared secret (required, at least 16
	// characters), e.g. "{env.AGCLUSTER_WORKER_SECRET}" (placeholders are
	// replaced at provision): the Worker's AGCLUSTER_WORKER_SECRET.
	Secret string `json:"secret,omitempty"`
	// Env is extra environment passed to every agent. It must not hold an
	// API key nor the variables the provider sets. A Spec's Env overrides
	// it name by name.
	Env map[string]string `json:"env,omitempty"`
	// ReadyTimeout bounds how long Create and Wake wait for the container
	// and the agent. Default 2m.
	ReadyTimeout caddy.Duration `json:"ready_timeout,omitempty"`
	// PollInterval is how often the event watcher lists the agents'
	// states. Default 5s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`
}

// Provider runs agents in Cloudflare containers through the agcluster
// Worker. It is safe for concurrent use.
type Provider struct {
	opts   Options
	api    *api
	tokens []byte // what agent tokens are derived from
	logger *zap.Logger

	creating providers.IDSet           // agents this Provider is creating
	sleeping providers.IDSet           // agents this Provider put to sleep and has not woken
	gone     providers.GoneSet         // agents this Provider destroyed
	poller   *statepoll.Poller[record] // Events' subscriptions
}

// New checks opts, applies defaults and makes the Worker's client. It does
// not contact the Worker; use [Provider.Ping] for that. A nil logger
// discards logs.
func New(opts Options, logger *zap.Logger) (*Provider, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte("agcluster cloudflare agent tokens\x00" + opts.Secret))
	p := &Provider{
		opts:   opts,
		api:    newAPI(opts.WorkerURL, opts.Secret, logger),
		tokens: sum[:],
		logger: logger,
	}
	p.poller = p.newPoller()
	return p, nil
}

// normalize applies defaults to zero-valued fields and checks the result.
func (opts Options) normalize() (Options, error) {
	opts.Name = cmp.Or(opts.Name, DefaultName)
	opts.WorkerURL = strings.TrimRight(opts.WorkerURL, "/")
	opts.ReadyTimeout = cmp.Or(opts.ReadyTimeout, caddy.Duration(DefaultReadyTimeout))
	opts.PollInterval = cmp.Or(opts.PollInterval, caddy.Duration(DefaultPollInterval))
	if err := opts.check(); err != nil {
		return opts, fmt.Errorf("cloudflare: options: %w", err)
	}
	return opts, nil
}

// check reports every problem of normalized options at once.
func (opts Options) check() error {
	var errs []error
	if err := checkWorkerURL(opts.WorkerURL); err != nil {
		errs = append(errs, err)
	}
	switch s := strings.TrimSpace(opts.Secret); {
	case s == "":
		errs = append(errs, errors.New("secret is required (e.g. {env.AGCLUSTER_WORKER_SECRET}: the Worker's AGCLUSTER_WORKER_SECRET)"))
	case len(opts.Secret) < minSecret:
		errs = append(errs, fmt.Errorf("secret: want at least %d characters (e.g. openssl rand -hex 32)", minSecret))
	}
	if opts.ReadyTimeout < 0 || opts.PollInterval < 0 {
		errs = append(errs, errors.New("ready_timeout and poll_interval must not be negative"))
	}
	if err := providers.CheckEnv(opts.Env); err != nil {
		errs = append(errs, fmt.Errorf("env: %w", err))
	}
	return errors.Join(errs...)
}

// checkWorkerURL accepts an https URL, or an http one on loopback, without
// a query.
func checkWorkerURL(s string) error {
	if s == "" {
		return errors.New("worker_url is required (the deployed agcluster Worker, e.g. https://agcluster-agents.<account>.workers.dev)")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("worker_url %q: want an https URL such as https://agcluster-agents.<account>.workers.dev", s)
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && loopback(u.Hostname()):
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("worker_url %q: want https (plain http only on loopback, for wrangler dev): the secret travels with every request", s)
	}
	return fmt.Errorf("worker_url %q: want an https URL", s)
}

// loopback reports whether host is a loopback name or address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// token is the agent token of agent id: derived from the secret, so
// nothing needs to store it.
func (p *Provider) token(id string) string { return providers.DeriveToken(p.tokens, id) }

// Name returns the provider's configured name (Options.Name, default
// "cloudflare").
func (p *Provider) Name() string { return p.opts.Name }

// Kind returns "cloudflare".
func (p *Provider) Kind() string { return "cloudflare" }

// Options returns the options in effect, defaults applied.
func (p *Provider) Options() Options { return p.opts }

// Close releases idle connections to the Worker. Agents keep running.
func (p *Provider) Close() error {
	p.api.closeIdle()
	return nil
}

// Ping checks that the Worker answers and takes the secret. Its error
// wraps [providers.ErrUnavailable] unless ctx ended.
func (p *Provider) Ping(ctx context.Context) error {
	if err := p.api.do(ctx, http.MethodGet, "/v1/ping", nil, nil); err != nil {
		return p.apiError("ping", "", err)
	}
	return nil
}

// Interface guards.
var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Sleeper  = (*Provider)(nil)
	_ providers.Watcher  = (*Provider)(nil)
	_ providers.Pinger   = (*Provider)(nil)
)
