// Package fly is the Fly Machines provider: it runs each agent as a Fly
// Machine of the agent image in one Fly app, through fly-go's flaps client
// (github.com/superfly/fly-go/flaps, the client flyctl itself uses). One
// Machine serves one conversation; its metadata (session, owner hash,
// conversation, configuration, provider name, pool entry) lets a restarted
// gateway find it again, and its config's environment keeps the agent's
// bearer token (never an API key: keys travel with each query).
//
// The control plane reaches an agent through Fly's proxy at PublicURL with
// the fly-force-instance-id header naming its Machine, or, with Private,
// at the Machine's private (6PN) address when Caddy runs inside the
// organisation. Idle agents are suspended (a memory snapshot: workspace,
// CLI and context come back on resume) or, when Fly cannot suspend them,
// stopped; Fly has no event stream, so deaths are found by polling Machine
// states. Mutations of a Machine take a Fly lease, so two gateways sharing
// an app do not race, and 429 answers (Fly's per-action rate limits) are
// retried with backoff, honouring Retry-After.
package fly

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/statepoll"
)

// Metadata keys set on every agent Machine. They are the Docker provider's
// label names with underscores for dots (agcluster_session for
// agcluster.session): Fly's own keys use underscores (fly_process_group),
// and the list filter is the query parameter metadata.<key>, which a dot
// in the key would make ambiguous.
const (
	// MetaManaged marks Machines made by agcluster ("true").
	MetaManaged = "agcluster_managed"
	// MetaProvider holds the configured name of the provider that made the
	// Machine: providers of other names on the same app ignore it.
	MetaProvider = "agcluster_provider"
	// MetaSession holds the session id.
	MetaSession = "agcluster_session"
	// MetaOwner holds the owner's opaque id (a hash).
	MetaOwner = "agcluster_owner"
	// MetaConversation holds the client's conversation id.
	MetaConversation = "agcluster_conversation"
	// MetaConfig holds the agent configuration id.
	MetaConfig = "agcluster_config"
	// MetaPool names the warm pool entry a Machine was made for (empty
	// session, owner and conversation then).
	MetaPool = "agcluster_pool"
)

// identityKeys are the metadata keys an agent's identity is recorded under.
var identityKeys = providers.IdentityKeys{
	Managed:      MetaManaged,
	Provider:     MetaProvider,
	Session:      MetaSession,
	Owner:        MetaOwner,
	Conversation: MetaConversation,
	Config:       MetaConfig,
	Pool:         MetaPool,
}

// Defaults applied to zero-valued [Options] fields.
const (
	// DefaultAPIURL is Fly's Machines API.
	DefaultAPIURL = "https://api.machines.dev"
	// DefaultCPUKind is the guest's CPU kind.
	DefaultCPUKind = "shared"
	// DefaultCPUs is the guest's CPU count.
	DefaultCPUs = 1
	// DefaultMemoryMB is the guest's memory (shared-cpu-1x with 1 GB: the
	// CLI and its tools need more than Fly's 256 MB default).
	DefaultMemoryMB = 1024
	// DefaultReadyTimeout bounds how long Create and Wake wait for the
	// Machine to start and the agent's /health to answer ready.
	DefaultReadyTimeout = 60 * time.Second
	// DefaultPollInterval is how often Events polls Machine states.
	DefaultPollInterval = 2 * time.Second
	// DefaultName is the provider's name when Options.Name is empty.
	DefaultName = "fly"
)

// Fixed facts about the agent image and Fly.
const (
	// agentPort is the agent server's port inside the Machine (the image's
	// AGENT_ADDR=:8080).
	agentPort = 8080
	// stateDir is where the agent keeps its CLI sessions and own state
	// (AGENT_STATE_DIR), on the Machine's root file system.
	stateDir = "/state"
	// forceInstanceHeader routes a request through Fly's proxy to one
	// Machine.
	forceInstanceHeader = "Fly-Force-Instance-Id"
	// cleanupBudget bounds the calls that undo a failed Create.
	cleanupBudget = 30 * time.Second
	// leaseTTL is how long a Machine lease taken around a mutation lasts
	// (seconds) if this gateway dies holding it.
	leaseTTL = 60
	// leaseWait bounds how long a mutation waits for another holder's
	// lease (flaps retries a taken lease for up to a minute).
	leaseWait = 20 * time.Second
	// stopTimeout is how long a stop lets the agent shut down before Fly
	// kills it.
	stopTimeout = 10 * time.Second
)

// appRE is what Fly accepts as an app name.
var appRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Options configure the Fly provider. The guest module [Module] embeds
// this struct as its JSON configuration.
type Options struct {
	// Name is the provider's configured name (Provider.Name), recorded in
	// every Machine's metadata: providers of different names share an app
	// without seeing each other's agents. Default "fly". It is not part of
	// the JSON: the app names its providers.
	Name string `json:"-"`
	// App is the Fly app whose Machines run agents (required). Create it
	// with `fly apps create`; give it a shared IP for the public route.
	App string `json:"app,omitempty"`
	// Token is the Fly API token (required), e.g. "{env.FLY_API_TOKEN}"
	// (placeholders are replaced at provision). A deploy token scoped to
	// App is enough: `fly tokens create deploy -a <app>`.
	Token string `json:"token,omitempty"`
	// Image is the agent image, in a registry Fly can pull (required),
	// e.g. "registry.fly.io/<app>:agent".
	Image string `json:"image,omitempty"`
	// APIURL is the Machines API. Default "https://api.machines.dev".
	APIURL string `json:"api_url,omitempty"`
	// Region is the Fly region new Machines are created in, e.g. "ams".
	// Empty lets Fly choose (near the API's caller).
	Region string `json:"region,omitempty"`
	// PublicURL is where the control plane reaches agents through Fly's
	// proxy, each request carrying the fly-force-instance-id header of its
	// Machine. Default "https://<app>.fly.dev". It must be HTTPS outside
	// tests: the agent token travels with every request.
	PublicURL string `json:"public_url,omitempty"`
	// Private makes the control plane reach agents at their private (6PN)
	// address, http://[private_ip]:8080, instead of PublicURL: for a
	// gateway running inside the same Fly organisation (or on its
	// WireGuard network).
	Private bool `json:"private,omitempty"`
	// CPUKind is the guest's CPU kind: "shared" (default) or "performance".
	CPUKind string `json:"cpu_kind,omitempty"`
	// CPUs is the guest's CPU count. Default 1.
	CPUs int `json:"cpus,omitempty"`
	// MemoryMB is the guest's memory in MiB, a multiple of 256. Default 1024.
	MemoryMB int `json:"memory_mb,omitempty"`
	// Env is extra environment passed to every agent. It must not hold an
	// API key (ANTHROPIC_API_KEY, ...) nor the variables the provider sets
	// (AGENT_TOKEN, AGENT_CONFIG, AGENT_ADDR, AGENT_WORKSPACE,
	// AGENT_STATE_DIR). A Spec's Env overrides it name by name.
	Env map[string]string `json:"env,omitempty"`
	// ReadyTimeout bounds how long Create and Wake wait for the Machine to
	// start and its agent to answer ready: a duration string such as
	// "60s", or nanoseconds. Default 60s.
	ReadyTimeout caddy.Duration `json:"ready_timeout,omitempty"`
	// PollInterval is how often the event watcher lists Machine states to
	// notice deaths (Fly has no event stream): a duration string or
	// nanoseconds. Default 2s; each poll is one list call for the app.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`
}

// Provider runs agents as Fly Machines. It is safe for concurrent use.
type Provider struct {
	opts   Options
	api    *flaps.Client
	conns  *http.Transport // the API client's connections
	public *url.URL        // parsed PublicURL (nil with Private)
	logger *zap.Logger

	creating providers.IDSet                 // Machines this Provider is creating
	sleeping providers.IDSet                 // Machines this Provider put to sleep and has not woken
	gone     providers.GoneSet               // Machines this Provider destroyed in the last hour
	poller   *statepoll.Poller[*fly.Machine] // Events' subscriptions
}

// New checks opts, applies defaults and creates the flaps client. It does
// not contact Fly, so it is fast; use [Provider.Ping] for that. A nil
// logger discards logs.
func New(opts Options, logger *zap.Logger) (*Provider, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	base, _ := url.Parse(opts.APIURL) // checked by normalize
	conns := http.DefaultTransport.(*http.Transport).Clone()
	api, err := flaps.NewWithOptions(context.Background(), flaps.NewClientOpts{
		Tokens:    tokens.Parse(opts.Token),
		UserAgent: "caddy-agcluster",
		Transport: &apiTransport{base: base, next: &providers.RetryTransport{Next: conns, Logger: logger, API: "machines api"}},
	})
	if err != nil {
		return nil, fmt.Errorf("fly: machines api client: %w", err)
	}
	p := &Provider{
		opts:   opts,
		api:    api,
		conns:  conns,
		logger: logger,
	}
	p.poller = p.newPoller()
	if !opts.Private {
		p.public, _ = url.Parse(opts.PublicURL) // checked by normalize
	}
	return p, nil
}

// normalize applies defaults to zero-valued fields and checks the result.
func (opts Options) normalize() (Options, error) {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.APIURL == "" {
		opts.APIURL = DefaultAPIURL
	}
	if opts.PublicURL == "" && opts.App != "" {
		opts.PublicURL = "https://" + opts.App + ".fly.dev"
	}
	opts.APIURL = strings.TrimRight(opts.APIURL, "/")
	opts.PublicURL = strings.TrimRight(opts.PublicURL, "/")
	if opts.CPUKind == "" {
		opts.CPUKind = DefaultCPUKind
	}
	if opts.CPUs == 0 {
		opts.CPUs = DefaultCPUs
	}
	if opts.MemoryMB == 0 {
		opts.MemoryMB = DefaultMemoryMB
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = caddy.Duration(DefaultReadyTimeout)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = caddy.Duration(DefaultPollInterval)
	}
	if err := opts.check(); err != nil {
		return opts, fmt.Errorf("fly: options: %w", err)
	}
	return opts, nil
}

// check reports every problem of normalized options at once.
func (opts Options) check() error {
	var errs []error
	if opts.App == "" {
		errs = append(errs, errors.New("app is required"))
	} else if !appRE.MatchString(opts.App) {
		errs = append(errs, fmt.Errorf("app %q: want a Fly app name (lowercase letters, digits and dashes)", opts.App))
	}
	if strings.TrimSpace(opts.Token) == "" {
		errs = append(errs, errors.New("token is required (e.g. {env.FLY_API_TOKEN})"))
	}
	if opts.Image == "" {
		errs = append(errs, errors.New("image is required (an agent image in a registry Fly can pull)"))
	}
	if err := checkURL(opts.APIURL); err != nil {
		errs = append(errs, fmt.Errorf("api_url: %w", err))
	}
	if !opts.Private {
		if err := checkURL(opts.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("public_url: %w", err))
		}
	}
	if opts.CPUKind != "shared" && opts.CPUKind != "performance" {
		errs = append(errs, fmt.Errorf("cpu_kind %q: want shared or performance", opts.CPUKind))
	}
	if opts.CPUs < 0 {
		errs = append(errs, fmt.Errorf("cpus %d: want a positive whole number", opts.CPUs))
	}
	if opts.MemoryMB < 0 || opts.MemoryMB%256 != 0 {
		errs = append(errs, fmt.Errorf("memory %d MiB: Fly wants a positive multiple of 256 MiB", opts.MemoryMB))
	}
	if opts.ReadyTimeout < 0 || opts.PollInterval < 0 {
		errs = append(errs, errors.New("ready_timeout and poll_interval must not be negative"))
	}
	if err := providers.CheckEnv(opts.Env); err != nil {
		errs = append(errs, fmt.Errorf("env: %w", err))
	}
	return errors.Join(errs...)
}

// checkURL accepts an absolute http or https URL without a query.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf("%q: want an http(s) URL such as https://example.fly.dev", s)
	}
	return nil
}

// Name returns the provider's configured name (Options.Name, default
// "fly").
func (p *Provider) Name() string { return p.opts.Name }

// Kind returns "fly".
func (p *Provider) Kind() string { return "fly" }

// Options returns the options in effect, defaults applied.
func (p *Provider) Options() Options { return p.opts }

// Close releases the provider's idle API connections. Agents keep running.
func (p *Provider) Close() error {
	p.conns.CloseIdleConnections()
	return nil
}

// Ping checks that the Machines API answers for the app with the token:
// it lists the app's agent Machines. Its error wraps
// [providers.ErrUnavailable] unless ctx ended.
func (p *Provider) Ping(ctx context.Context) error {
	if _, err := p.api.List(ctx, p.opts.App, p.listFilter()); err != nil {
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
