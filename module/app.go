// Package module is the Caddy glue of caddy-agcluster: the agcluster app
// (sessions and the providers their agents run on), the
// http.handlers.agcluster handler (the OpenAI-compatible API), their
// Caddyfile syntax, the admin API and metrics. Providers register their
// own guest modules from their own packages (see providers/all); nothing
// here imports a provider.
package module

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/configs"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/session"
	"github.com/agcluster/caddy-agcluster/usage"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the agcluster app: it owns the conversations' sessions and the
// providers that run their agents. Its state lives in a process-wide pool,
// so a config reload keeps every session and in-flight stream.
type App struct {
	// ProvidersRaw are the providers that run agents, by name: modules in
	// the agcluster.providers namespace, the module named by "kind".
	// Several may be configured (two Docker engines, Docker and a cloud).
	// Default: one Docker provider named "docker".
	ProvidersRaw map[string]json.RawMessage `json:"providers,omitempty" caddy:"namespace=agcluster.providers inline_key=kind"`
	// DefaultProvider names the provider of sessions whose configuration
	// and launch name none. Default: the only provider; required when
	// several are configured.
	DefaultProvider string `json:"default_provider,omitempty"`
	// IdleTimeout puts a session's agent to sleep after this long without
	// a turn (stopped, its workspace and CLI session kept; the next
	// message wakes it). Agents of a provider that cannot sleep are
	// removed instead. Default 30m; 0 keeps agents awake.
	IdleTimeout *caddy.Duration `json:"idle_timeout,omitempty"`
	// Retention removes a conversation, with its workspace, after it has
	// slept this long. Default 7d; 0 keeps it until it is deleted.
	Retention *caddy.Duration `json:"retention,omitempty"`
	// MaxSessions caps live (awake) agents in total (0 = no cap). Default
	// 100. Sleeping conversations do not count.
	MaxSessions *int `json:"max_sessions,omitempty"`
	// MaxSessionsPerOwner caps live agents per owner (0 = no cap).
	MaxSessionsPerOwner int `json:"max_sessions_per_owner,omitempty"`
	// MaxConversations caps conversations, awake or asleep, in total (0 =
	// no cap).
	MaxConversations int `json:"max_conversations,omitempty"`
	// MaxConversationsPerOwner caps conversations, awake or asleep, per
	// owner (0 = no cap).
	MaxConversationsPerOwner int `json:"max_conversations_per_owner,omitempty"`
	// AnthropicBaseURL is where the gateway itself sends one-shot calls
	// (titles and other background tasks). Default https://api.anthropic.com.
	AnthropicBaseURL string `json:"anthropic_base_url,omitempty"`
	// TurnTimeout stops an agent turn that runs longer (the mock or the
	// API stalling, a tool that never ends); the client gets a clean end
	// of its stream. Default 30m.
	TurnTimeout caddy.Duration `json:"turn_timeout,omitempty"`
	// ConfigsDir is a directory of custom agent configurations (*.json),
	// offered next to the shipped presets. Invalid files fail the config
	// load with the file, field and reason.
	ConfigsDir string `json:"configs_dir,omitempty"`
	// Shutdown says what happens to sessions when Caddy exits: "keep"
	// (default) leaves their agents to be rediscovered by the next start;
	// "destroy" removes them. Warm-pool agents follow the same rule.
	Shutdown string `json:"shutdown,omitempty"`
	// WarmPool keeps ready agents per configuration and provider, so a new
	// conversation starts without waiting for a container. Default: no
	// pool.
	WarmPool *WarmPool `json:"warm_pool,omitempty"`
	// UsageStore is the file of the usage database (bbolt): every turn's
	// tokens, cost and time per owner, configuration, provider and UTC
	// day, kept across restarts. Default: agcluster/usage.db in Caddy's
	// data directory.
	UsageStore string `json:"usage_store,omitempty"`
	// OwnerQuota caps each owner's usage per UTC day over all
	// configurations; past it, turns are refused with 429
	// insufficient_quota until UTC midnight. Default: no quota.
	OwnerQuota *usage.Quota `json:"owner_quota,omitempty"`
	// ConfigQuotas cap each owner's usage of one configuration (by id)
	// per UTC day, besides OwnerQuota.
	ConfigQuotas map[string]*usage.Quota `json:"config_quotas,omitempty"`

	quotas    *usage.Meter                // the provisioned meter: its quotas, no store
	meter     atomic.Pointer[usage.Meter] // the started meter, with its store; nil before Start
	usagePath string                      // the store this config holds in usagePool, once started
	providers map[string]configuredProvider
	state     *state
	configs   *configs.Store
	logger    *zap.Logger
}

// WarmPool configures the warm pool of ready agents.
type WarmPool struct {
	// Sizes maps a configuration id (a model name such as "agent" or
	// "code-assistant"), optionally followed by "@" and a provider name
	// ("agent@gpu"; default: the configuration's provider), to how many
	// ready agents to keep for it. Configurations that need MCP
	// credentials cannot be kept warm.
	Sizes map[string]int `json:"sizes,omitempty"`
	// Max caps ready agents over all configurations (0 = the sum of Sizes).
	// Ready agents also count against max_sessions: the pool shrinks as
	// sessions fill it.
	Max int `json:"max,omitempty"`
	// MinFreeMemory: while the host has less memory available than this
	// many bytes (MemAvailable), the pool makes no agents and gives one
	// back per check. Default 1 GiB; -1 disables the check (e.g. when the
	// Docker engine runs on another machine).
	MinFreeMemory int64 `json:"min_free_memory,omitempty"`
	// CheckInterval is how often ready agents' health and the available
	// memory are checked. Default 5s.
	CheckInterval caddy.Duration `json:"check_interval,omitempty"`
}

// defaultMinFreeMemory is WarmPool.MinFreeMemory's default.
const defaultMinFreeMemory = 1 << 30

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster",
		New: func() caddy.Module { return new(App) },
	}
}

// Defaults.
const (
	defaultIdleTimeout = 30 * time.Minute
	defaultRetention   = 7 * 24 * time.Hour
	defaultMaxSessions = 100
	defaultBaseURL     = "https://api.anthropic.com"
)

// Provision loads the providers and attaches to the shared state.
// Nothing here contacts a provider's backend.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.AnthropicBaseURL = caddy.NewReplacer().ReplaceAll(a.AnthropicBaseURL, "")
	if a.AnthropicBaseURL == "" {
		a.AnthropicBaseURL = defaultBaseURL
	}
	var err error
	if a.providers, err = a.loadProviders(ctx); err != nil {
		return err
	}
	a.configs, err = configs.Load(caddy.NewReplacer().ReplaceAll(a.ConfigsDir, ""))
	if err != nil {
		return fmt.Errorf("agcluster configs: %w", err)
	}
	for _, id := range a.configs.IDs() {
		if cfg, _ := a.configs.Get(id); cfg.Provider != "" {
			if _, ok := a.providers[cfg.Provider]; !ok {
				return fmt.Errorf("agcluster: configuration %s names provider %q; configured: %s", id, cfg.Provider, strings.Join(a.providerNames(), ", "))
			}
		}
	}
	poolOpts, err := a.poolOptions()
	if err != nil {
		return err
	}
	st, err := loadState(a.logger)
	if err != nil {
		return err
	}
	a.state = st
	if err := a.provisionUsage(); err != nil {
		return err
	}
	return st.configure(a.providers, a.DefaultProvider, a.managerOptions(), poolOpts, a.Shutdown == "destroy", time.Duration(a.TurnTimeout))
}

// defaultProviders is the provider set when none is configured.
var defaultProviders = map[string]json.RawMessage{"docker": json.RawMessage(`{"kind":"docker"}`)}

// loadProviders loads the provider guest modules and picks the default.
func (a *App) loadProviders(ctx caddy.Context) (map[string]configuredProvider, error) {
	if len(a.ProvidersRaw) == 0 {
		a.ProvidersRaw = maps.Clone(defaultProviders)
	}
	raws := maps.Clone(a.ProvidersRaw) // LoadModule clears the field
	mods, err := ctx.LoadModule(a, "ProvidersRaw")
	if err != nil {
		return nil, fmt.Errorf("loading agcluster providers: %w", err)
	}
	out := map[string]configuredProvider{}
	for name, mod := range mods.(map[string]any) {
		if !validProviderName(name) {
			return nil, fmt.Errorf("agcluster: provider name %q: use letters, digits, '_' and '-'", name)
		}
		pm, ok := mod.(providers.Module)
		if !ok {
			return nil, fmt.Errorf("agcluster: provider %s: module %T is not an agcluster provider", name, mod)
		}
		out[name] = configuredProvider{module: pm, raw: string(raws[name])}
	}
	switch {
	case a.DefaultProvider != "":
		if _, ok := out[a.DefaultProvider]; !ok {
			return nil, fmt.Errorf("agcluster: default_provider %q is not configured; configured: %s", a.DefaultProvider, strings.Join(slices.Sorted(maps.Keys(out)), ", "))
		}
	case len(out) == 1:
		for name := range out {
			a.DefaultProvider = name
		}
	default:
		return nil, fmt.Errorf("agcluster: several providers are configured (%s): name the default with default_provider", strings.Join(slices.Sorted(maps.Keys(out)), ", "))
	}
	return out, nil
}

func validProviderName(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// providerNames lists the configured providers' names.
func (a *App) providerNames() []string { return slices.Sorted(maps.Keys(a.providers)) }

// poolOptions turns the warm_pool settings into pool entries: each
// configuration's agent exactly as a new session of it would get.
func (a *App) poolOptions() (session.PoolOptions, error) {
	wp := a.WarmPool
	if wp == nil {
		return session.PoolOptions{}, nil
	}
	opts := session.PoolOptions{
		Max:           wp.Max,
		MinFreeMemory: wp.MinFreeMemory,
		CheckInterval: time.Duration(wp.CheckInterval),
		// Agents made under another provider setup or turn timeout are
		// replaced rather than handed out.
		Generation: a.providersFingerprint() + "|" + time.Duration(a.TurnTimeout).String(),
	}
	if opts.MinFreeMemory == 0 {
		opts.MinFreeMemory = defaultMinFreeMemory
	}
	for _, key := range slices.Sorted(maps.Keys(wp.Sizes)) {
		n := wp.Sizes[key]
		if n < 0 {
			return opts, fmt.Errorf("agcluster: warm_pool %s: size must not be negative, got %d", key, n)
		}
		id, provider, _ := strings.Cut(key, "@")
		cfg, ok := a.Config(id)
		if !ok {
			return opts, fmt.Errorf("agcluster: warm_pool %s: no such agent configuration (have: %s)", id, strings.Join(a.ModelIDs(), ", "))
		}
		if missing := configs.MissingMCPEnv(cfg); len(missing) > 0 {
			return opts, fmt.Errorf("agcluster: warm_pool %s: the configuration needs MCP credentials per session (%s), so it cannot be kept warm",
				id, strings.Join(missing, ", "))
		}
		req, serr := agentsapi.SessionRequest("", cfg)
		if serr != nil {
			return opts, fmt.Errorf("agcluster: warm_pool %s: %s", id, serr.Message)
		}
		if req.Provider, serr = a.ResolveProvider(provider, cfg); serr != nil {
			return opts, fmt.Errorf("agcluster: warm_pool %s: %s", key, serr.Message)
		}
		opts.Entries = append(opts.Entries, session.PoolEntry{Size: n, Spec: providers.Spec{
			Provider: req.Provider, ConfigID: req.ConfigID, Config: req.Config, Image: req.Image, Limits: req.Limits,
		}})
	}
	return opts, nil
}

// providersFingerprint identifies the providers' whole configuration.
func (a *App) providersFingerprint() string {
	h := sha256.New()
	for _, name := range a.providerNames() {
		fmt.Fprintf(h, "%s=%s\n", name, a.providers[name].raw)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// seedProviderAliases are the provider names of the system this one
// reimplements: a launch may use them for the provider of that kind.
var seedProviderAliases = map[string]string{"docker": "docker", "fly_machines": "fly", "cloudflare": "cloudflare", "vercel": "vercel"}

// ResolveProvider picks the provider of a new session: requested (a
// launch's "provider"), else the configuration's, else the default. A
// name may also be one of the original system's provider names
// (fly_machines, cloudflare, vercel, docker) when exactly one provider of
// that kind is configured. An unknown name is a 400 listing the
// configured ones.
func (a *App) ResolveProvider(requested string, cfg *agent.Config) (string, *openai.Error) {
	name := requested
	if name == "" && cfg != nil {
		name = cfg.Provider
	}
	if name == "" {
		return a.DefaultProvider, nil
	}
	if _, ok := a.providers[name]; ok {
		return name, nil
	}
	if kind, ok := seedProviderAliases[name]; ok {
		var match []string
		for n, cp := range a.providers {
			if cp.kind() == kind {
				match = append(match, n)
			}
		}
		if len(match) == 1 {
			return match[0], nil
		}
	}
	return "", openai.BadRequest(fmt.Sprintf("unknown provider %q; configured providers: %s", name, strings.Join(a.providerNames(), ", ")), "provider")
}

func (a *App) managerOptions() session.Options {
	idle := defaultIdleTimeout
	if a.IdleTimeout != nil {
		idle = time.Duration(*a.IdleTimeout)
	}
	retention := defaultRetention
	if a.Retention != nil {
		retention = time.Duration(*a.Retention)
	}
	maxSessions := defaultMaxSessions
	if a.MaxSessions != nil {
		maxSessions = *a.MaxSessions
	}
	return session.Options{
		IdleTimeout:              idle,
		Retention:                retention,
		MaxSessions:              maxSessions,
		MaxSessionsPerOwner:      a.MaxSessionsPerOwner,
		MaxConversations:         a.MaxConversations,
		MaxConversationsPerOwner: a.MaxConversationsPerOwner,
	}
}

// Validate checks the settings.
func (a *App) Validate() error {
	switch a.Shutdown {
	case "", "keep", "destroy":
	default:
		return fmt.Errorf("agcluster: shutdown must be \"keep\" or \"destroy\", got %q", a.Shutdown)
	}
	if a.MaxSessions != nil && *a.MaxSessions < 0 {
		return fmt.Errorf("agcluster: max_sessions must not be negative")
	}
	if a.MaxSessionsPerOwner < 0 || a.MaxConversations < 0 || a.MaxConversationsPerOwner < 0 {
		return fmt.Errorf("agcluster: max_sessions_per_owner, max_conversations and max_conversations_per_owner must not be negative")
	}
	if a.Retention != nil && *a.Retention < 0 {
		return fmt.Errorf("agcluster: retention must not be negative")
	}
	if wp := a.WarmPool; wp != nil && (wp.Max < 0 || wp.MinFreeMemory < -1 || wp.CheckInterval < 0) {
		return fmt.Errorf("agcluster: warm_pool max and check_interval must not be negative, min_free_memory not below -1")
	}
	return nil
}

// Start follows every provider's instance events and rediscovers the
// sessions of a previous run, both in the background (Provision, which
// `caddy validate` also runs, contacts nothing).
func (a *App) Start() error {
	if err := a.startUsage(); err != nil {
		return err
	}
	a.state.start()
	return nil
}

// Stop does nothing: sessions outlive the config that started them.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's hold on the shared state; the state goes
// when the last config using it does.
func (a *App) Cleanup() error {
	a.cleanupUsage()
	if a.state != nil {
		_, err := statePool.Delete(statePoolKey)
		a.state = nil
		return err
	}
	return nil
}

// Configs returns the agent configuration templates.
func (a *App) Configs() *configs.Store { return a.configs }

// Manager returns the session manager.
func (a *App) Manager() *session.Manager { return a.state.manager }

// defaultAgentModelID is the model served by the built-in agent.
const defaultAgentModelID = "agent"

// defaultAgentConfig is the "agent" model: a coding agent that may use the
// shell and edit files in its own workspace without asking.
func defaultAgentConfig() *agent.Config {
	return &agent.Config{
		ID:             defaultAgentModelID,
		Name:           "Agent",
		Description:    "Claude Code in an isolated workspace: shell, files, search",
		AllowedTools:   []string{"Bash", "Read", "Write", "Edit", "Glob", "Grep", "TodoWrite"},
		PermissionMode: "acceptEdits",
	}
}

// Config returns the agent configuration a model names: "agent", or a
// template id.
func (a *App) Config(model string) (*agent.Config, bool) {
	if model == defaultAgentModelID {
		return defaultAgentConfig(), true
	}
	return a.configs.Get(model)
}

// ModelIDs lists the models: "agent", then the templates.
func (a *App) ModelIDs() []string {
	return append([]string{defaultAgentModelID}, a.configs.IDs()...)
}

// Pool returns the warm pool (empty when none is configured).
func (a *App) Pool() *session.Pool { return a.state.pool }

// configuredProvider is a provider as a config gives it: its provisioned
// guest module and its JSON, which tells whether a reload changed it.
type configuredProvider struct {
	module providers.Module
	raw    string
}

// kind is the provider's module name, read from its JSON.
func (c configuredProvider) kind() string {
	var v struct {
		Kind string `json:"kind"`
	}
	_ = json.Unmarshal([]byte(c.raw), &v)
	return v.Kind
}

// statePool holds the one agcluster state of the process across reloads.
var statePool = caddy.NewUsagePool()

const statePoolKey = "agcluster"

// state is what outlives config reloads: the session manager, the warm
// pool and the providers their agents run on.
type state struct {
	logger    *zap.Logger
	manager   *session.Manager
	pool      *session.Pool // stands between the manager and the providers
	lifecycle *session.Lifecycle

	mu          sync.RWMutex
	providers   map[string]*liveProvider // configured ones, and removed ones that still have sessions
	defaultName string
	destroy     bool
	turnTimeout time.Duration
	started     bool
	discovered  map[string]bool // provider names whose agents were rediscovered
}

// liveProvider is a provider value in use.
type liveProvider struct {
	providers.Provider
	raw       string
	removed   bool               // no longer configured; kept while sessions use it
	stopWatch context.CancelFunc // ends its event watcher
}

func loadState(logger *zap.Logger) (*state, error) {
	v, _, err := statePool.LoadOrNew(statePoolKey, func() (caddy.Destructor, error) {
		st := &state{logger: logger, providers: map[string]*liveProvider{}, discovered: map[string]bool{}}
		st.pool = session.NewPool(session.PoolOptions{Source: st, Providers: st.provider, Logger: logger.Named("warm_pool")})
		st.manager = session.NewManager(session.Options{
			Source: st.pool, Providers: st.provider, AllProviders: st.allProviders, Logger: logger.Named("session"), OnWake: observeWake,
		})
		st.lifecycle = &session.Lifecycle{Manager: st.manager, Pool: st.pool, Logger: logger}
		return st, nil
	})
	if err != nil {
		return nil, fmt.Errorf("agcluster state: %w", err)
	}
	return v.(*state), nil
}

// configure applies a (re)loaded config. A provider whose name and JSON
// are unchanged keeps its value (and its clients); a changed one is
// replaced by a new value under the same name; a removed one keeps
// serving its sessions until they end. Existing sessions keep running and
// the warm pool keeps the agents that still fit.
func (s *state) configure(cfg map[string]configuredProvider, defaultName string, opts session.Options, poolOpts session.PoolOptions, destroyOnExit bool, turnTimeout time.Duration) error {
	fresh := map[string]providers.Provider{}
	s.mu.RLock()
	for name, cp := range cfg {
		if old, ok := s.providers[name]; ok && old.raw == cp.raw {
			continue
		}
		p, err := cp.module.NewProvider(name, s.logger.Named("provider").With(zap.String("provider", name)))
		if err != nil {
			s.mu.RUnlock()
			return fmt.Errorf("agcluster: provider %s: %w", name, err)
		}
		fresh[name] = p
	}
	s.mu.RUnlock()

	var replaced []*liveProvider
	s.mu.Lock()
	for name, p := range fresh {
		if old, ok := s.providers[name]; ok {
			replaced = append(replaced, old)
		}
		s.providers[name] = &liveProvider{Provider: p, raw: cfg[name].raw}
	}
	for name, lp := range s.providers {
		_, configured := cfg[name]
		lp.removed = !configured
	}
	s.defaultName = defaultName
	s.destroy = destroyOnExit
	s.turnTimeout = turnTimeout
	started := s.started
	s.mu.Unlock()

	s.manager.Reconfigure(opts)
	poolOpts.Headroom = s.manager.Headroom
	s.pool.Reconfigure(poolOpts)
	for _, old := range replaced {
		if old.stopWatch != nil {
			old.stopWatch()
		}
		// Creations started under the old config may still use it.
		time.AfterFunc(time.Minute, func() { _ = old.Close() })
	}
	if started {
		s.start() // watch and rediscover new and changed providers
	}
	s.dropUnused()
	return nil
}

// provider finds a provider by name, configured or removed but still in
// use (session.Options.Providers).
func (s *state) provider(name string) (providers.Provider, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	lp, ok := s.providers[name]
	if !ok {
		return nil, false
	}
	return lp.Provider, true
}

// allProviders lists the configured providers.
func (s *state) allProviders() []providers.Provider {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]providers.Provider, 0, len(s.providers))
	for _, lp := range s.providers {
		if !lp.removed {
			out = append(out, lp.Provider)
		}
	}
	return out
}

// Get creates an instance with the provider spec names, or the default
// (session.Source).
func (s *state) Get(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	s.mu.RLock()
	name, timeout := spec.Provider, s.turnTimeout
	if name == "" {
		name = s.defaultName
	}
	lp, ok := s.providers[name]
	s.mu.RUnlock()
	if !ok || lp.removed {
		return nil, fmt.Errorf("provider %q is not configured: %w", name, providers.ErrUnavailable)
	}
	if timeout > 0 {
		spec = spec.WithEnv(agent.EnvTurnTimeout, timeout.String())
	}
	return lp.Create(ctx, spec)
}

// Release destroys an instance through the provider that made it, never
// another (session.Source).
func (s *state) Release(ctx context.Context, inst *providers.Instance) error {
	p, ok := s.provider(inst.Provider)
	if !ok {
		return fmt.Errorf("instance %s belongs to provider %q, which is not configured: left as it is", inst.ID, inst.Provider)
	}
	err := p.Destroy(ctx, inst.ID)
	s.dropUnused()
	return err
}

// dropUnused closes removed providers that no session uses any more.
func (s *state) dropUnused() {
	counts := s.manager.Counts()
	var gone []*liveProvider
	s.mu.Lock()
	for name, lp := range s.providers {
		if c := counts[name]; lp.removed && c.Live+c.Sleeping == 0 {
			delete(s.providers, name)
			gone = append(gone, lp)
		}
	}
	s.mu.Unlock()
	for _, lp := range gone {
		if lp.stopWatch != nil {
			lp.stopWatch()
		}
		_ = lp.Close()
		s.logger.Info("removed provider closed", zap.String("provider", lp.Name()))
	}
}

// start watches the providers that have no watcher yet and rediscovers
// the agents of those not rediscovered yet; the warm pool starts filling
// after the first rediscovery, so it does not make agents it is about to
// find.
func (s *state) start() {
	s.mu.Lock()
	first := !s.started
	s.started = true
	var discover []providers.Provider
	for name, lp := range s.providers {
		if lp.stopWatch == nil {
			lp.stopWatch = s.lifecycle.Watch(lp.Provider)
		}
		if !s.discovered[name] && !lp.removed {
			s.discovered[name] = true
			discover = append(discover, lp.Provider)
		}
	}
	s.mu.Unlock()
	go func() {
		if first {
			defer s.pool.Start()
		}
		for _, p := range discover {
			s.lifecycle.Rediscover(p)
		}
	}()
}

// providerStatus is one provider as GET /api/providers shows it.
type providerStatus struct {
	// Name is the provider's configured name.
	Name string `json:"name"`
	// Kind is its module, e.g. "docker".
	Kind string `json:"kind"`
	// Default tells whether sessions run on it unless told otherwise.
	Default bool `json:"default"`
	// Removed: no longer configured; it serves its sessions until they end.
	Removed bool `json:"removed,omitempty"`
	// Capabilities are its optional features: sleep, events, expiry, ping.
	Capabilities []string `json:"capabilities"`
	// Health is "reachable", "unreachable" or "unknown" (it cannot be
	// asked).
	Health string `json:"health"`
	// Live and Sleeping count its sessions' agents.
	Live int `json:"live"`
	// Sleeping counts sessions asleep on it.
	Sleeping int `json:"sleeping"`
}

// status describes every provider in use, by name.
func (s *state) status(ctx context.Context) []providerStatus {
	counts := s.manager.Counts()
	s.mu.RLock()
	out := make([]providerStatus, 0, len(s.providers))
	var pingers []providers.Pinger
	for _, name := range slices.Sorted(maps.Keys(s.providers)) {
		lp := s.providers[name]
		c := counts[name]
		out = append(out, providerStatus{Name: name, Kind: lp.Kind(), Default: name == s.defaultName, Removed: lp.removed,
			Capabilities: providers.Capabilities(lp.Provider), Health: "unknown", Live: c.Live, Sleeping: c.Sleeping})
		pg, _ := lp.Provider.(providers.Pinger)
		pingers = append(pingers, pg)
	}
	s.mu.RUnlock()
	var wg sync.WaitGroup
	for i, pg := range pingers {
		if pg == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			out[i].Health = "reachable"
			if pg.Ping(pctx) != nil {
				out[i].Health = "unreachable"
			}
		}()
	}
	wg.Wait()
	return out
}

// Destruct runs when no config uses the state any more (Caddy exits or
// the app was removed from the config).
func (s *state) Destruct() error {
	s.mu.Lock()
	destroy := s.destroy
	all := slices.Collect(maps.Values(s.providers))
	for _, lp := range all {
		if lp.stopWatch != nil {
			lp.stopWatch()
		}
	}
	s.mu.Unlock()
	s.pool.Close(destroy)
	s.manager.Close(destroy)
	var errs []error
	for _, lp := range all {
		errs = append(errs, lp.Close())
	}
	return errors.Join(errs...)
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ session.Source     = (*state)(nil)
)
