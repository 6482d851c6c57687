// Package module is the Caddy glue of caddy-agcluster: the agcluster app
// (sessions and the container provider), the http.handlers.agcluster
// handler (the OpenAI-compatible API), their Caddyfile syntax, and the
// provider guest modules.
package module

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/configs"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/session"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the agcluster app: it owns the conversations' sessions and the
// provider that runs their containers. Its state lives in a process-wide
// pool, so a config reload keeps every session and in-flight stream.
type App struct {
	// ProviderRaw is the container provider, a module in the
	// agcluster.providers namespace. Default: docker.
	ProviderRaw json.RawMessage `json:"provider,omitempty" caddy:"namespace=agcluster.providers inline_key=name"`
	// IdleTimeout removes a session's container after this long without a
	// turn. Default 30m; 0 keeps sessions until they are deleted.
	IdleTimeout *caddy.Duration `json:"idle_timeout,omitempty"`
	// MaxSessions caps live sessions in total (0 = no cap). Default 100.
	MaxSessions *int `json:"max_sessions,omitempty"`
	// MaxSessionsPerOwner caps live sessions per owner (0 = no cap).
	MaxSessionsPerOwner int `json:"max_sessions_per_owner,omitempty"`
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
	// (default) leaves their containers running to be rediscovered by the
	// next start; "destroy" removes them. Warm-pool agents follow the same
	// rule.
	Shutdown string `json:"shutdown,omitempty"`
	// WarmPool keeps ready agents per configuration, so a new conversation
	// starts without waiting for a container. Default: no pool.
	WarmPool *WarmPool `json:"warm_pool,omitempty"`

	state   *state
	configs *configs.Store
	logger  *zap.Logger
}

// WarmPool configures the warm pool of ready agents.
type WarmPool struct {
	// Sizes maps a configuration id (a model name such as "agent" or
	// "code-assistant") to how many ready agents to keep for it.
	// Configurations that need MCP credentials cannot be kept warm.
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
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster",
		New: func() caddy.Module { return new(App) },
	}
}

// Defaults.
const (
	defaultIdleTimeout = 30 * time.Minute
	defaultMaxSessions = 100
	defaultBaseURL     = "https://api.anthropic.com"
)

// Provision loads the provider and attaches to the shared state. Nothing
// here contacts the container engine.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.AnthropicBaseURL = caddy.NewReplacer().ReplaceAll(a.AnthropicBaseURL, "")
	if a.AnthropicBaseURL == "" {
		a.AnthropicBaseURL = defaultBaseURL
	}
	if a.ProviderRaw == nil {
		a.ProviderRaw = json.RawMessage(`{"name":"docker"}`)
	}
	mod, err := ctx.LoadModule(a, "ProviderRaw")
	if err != nil {
		return fmt.Errorf("loading agcluster provider: %w", err)
	}
	pm, ok := mod.(ProviderModule)
	if !ok {
		return fmt.Errorf("agcluster provider %T does not implement ProviderModule", mod)
	}
	a.configs, err = configs.Load(caddy.NewReplacer().ReplaceAll(a.ConfigsDir, ""))
	if err != nil {
		return fmt.Errorf("agcluster configs: %w", err)
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
	st.configure(pm.Provider(), a.managerOptions(), poolOpts, a.Shutdown == "destroy", time.Duration(a.TurnTimeout))
	return nil
}

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
		Generation: string(a.ProviderRaw) + "|" + time.Duration(a.TurnTimeout).String(),
	}
	if opts.MinFreeMemory == 0 {
		opts.MinFreeMemory = defaultMinFreeMemory
	}
	for _, id := range slices.Sorted(maps.Keys(wp.Sizes)) {
		n := wp.Sizes[id]
		if n < 0 {
			return opts, fmt.Errorf("agcluster: warm_pool %s: size must not be negative, got %d", id, n)
		}
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
		opts.Entries = append(opts.Entries, session.PoolEntry{Size: n, Spec: providers.Spec{
			ConfigID: req.ConfigID, Config: req.Config, Image: req.Image, Limits: req.Limits,
		}})
	}
	return opts, nil
}

func (a *App) managerOptions() session.Options {
	idle := defaultIdleTimeout
	if a.IdleTimeout != nil {
		idle = time.Duration(*a.IdleTimeout)
	}
	maxSessions := defaultMaxSessions
	if a.MaxSessions != nil {
		maxSessions = *a.MaxSessions
	}
	return session.Options{
		IdleTimeout:         idle,
		MaxSessions:         maxSessions,
		MaxSessionsPerOwner: a.MaxSessionsPerOwner,
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
	if a.MaxSessionsPerOwner < 0 {
		return fmt.Errorf("agcluster: max_sessions_per_owner must not be negative")
	}
	if wp := a.WarmPool; wp != nil && (wp.Max < 0 || wp.MinFreeMemory < -1 || wp.CheckInterval < 0) {
		return fmt.Errorf("agcluster: warm_pool max and check_interval must not be negative, min_free_memory not below -1")
	}
	return nil
}

// Start follows the provider's instance deaths and rediscovers the
// sessions of a previous run, both in the background (Provision, which
// `caddy validate` also runs, contacts nothing).
func (a *App) Start() error {
	a.state.watch(a.state.current())
	a.state.rediscover()
	return nil
}

// Stop does nothing: sessions outlive the config that started them.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's hold on the shared state; the state goes
// when the last config using it does.
func (a *App) Cleanup() error {
	if a.state != nil {
		_, err := statePool.Delete(statePoolKey)
		a.state = nil
		return err
	}
	return nil
}

// Configs returns the agent configuration templates.
func (a *App) Configs() *configs.Store { return a.configs }

// ProviderName names the provider new sessions run on.
func (a *App) ProviderName() string { return a.state.current().Name() }

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

// ProviderModule is a Caddy module that provides a container provider.
type ProviderModule interface {
	// Provider returns the provisioned provider.
	Provider() providers.Provider
}

// statePool holds the one agcluster state of the process across reloads.
var statePool = caddy.NewUsagePool()

const statePoolKey = "agcluster"

// state is what outlives config reloads: the session manager and the
// provider its sessions run on.
type state struct {
	logger  *zap.Logger
	manager *session.Manager
	pool    *session.Pool // stands between the manager and the provider

	mu          sync.RWMutex
	provider    providers.Provider
	destroy     bool
	discovered  sync.Once
	stopWatcher context.CancelFunc
	turnTimeout time.Duration
}

func loadState(logger *zap.Logger) (*state, error) {
	v, _, err := statePool.LoadOrNew(statePoolKey, func() (caddy.Destructor, error) {
		st := &state{logger: logger}
		st.pool = session.NewPool(session.PoolOptions{Source: st, Logger: logger.Named("warm_pool")})
		st.manager = session.NewManager(session.Options{Source: st.pool, Logger: logger.Named("session")})
		return st, nil
	})
	if err != nil {
		return nil, fmt.Errorf("agcluster state: %w", err)
	}
	return v.(*state), nil
}

// configure applies a (re)loaded config: new sessions use the new provider
// and limits; existing sessions keep running; the warm pool keeps the
// agents that still fit.
func (s *state) configure(p providers.Provider, opts session.Options, poolOpts session.PoolOptions, destroyOnExit bool, turnTimeout time.Duration) {
	s.mu.Lock()
	old := s.provider
	s.provider = p
	s.destroy = destroyOnExit
	s.turnTimeout = turnTimeout
	s.mu.Unlock()
	s.manager.Reconfigure(opts)
	poolOpts.Headroom = s.manager.Headroom
	s.pool.Reconfigure(poolOpts)
	if old != nil && old != p {
		// Creations started under the old config may still use it.
		time.AfterFunc(time.Minute, func() { _ = old.Close() })
	}
}

func (s *state) current() providers.Provider {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.provider
}

// Get creates an instance with the current provider (session.Source).
func (s *state) Get(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	s.mu.RLock()
	p, timeout := s.provider, s.turnTimeout
	s.mu.RUnlock()
	if timeout > 0 {
		spec = spec.WithEnv("AGENT_TURN_TIMEOUT", timeout.String())
	}
	return p.Create(ctx, spec)
}

// Release destroys an instance (session.Source).
func (s *state) Release(ctx context.Context, inst *providers.Instance) error {
	return s.current().Destroy(ctx, inst.ID)
}

// watch follows the provider's instance deaths, so a conversation whose
// container was killed gets a new one; it replaces any previous watcher.
func (s *state) watch(p providers.Provider) {
	w, ok := p.(providers.Watcher)
	s.mu.Lock()
	if s.stopWatcher != nil {
		s.stopWatcher()
		s.stopWatcher = nil
	}
	if !ok {
		s.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopWatcher = cancel
	s.mu.Unlock()
	go func() {
		backoff := time.Second
		for ctx.Err() == nil {
			events, errs := w.Events(ctx)
			for ev := range events {
				backoff = time.Second
				// "oom" alone means some process in the container was
				// killed for memory (often a tool); the agent lives on
				// unless a "die" follows.
				if ev.Reason == providers.ReasonDied && !s.manager.InstanceDied(ev.InstanceID) {
					s.pool.InstanceDied(ev.InstanceID)
				}
			}
			if err := <-errs; err != nil {
				s.logger.Warn("provider event stream failed; resubscribing", zap.Error(err), zap.Duration("after", backoff))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}()
}

// rediscover adopts the instances a previous run left, once per process:
// sessions (including warm agents that were handed out) and ready warm
// agents. The warm pool starts filling after it, so it does not make
// agents it is about to find.
func (s *state) rediscover() {
	s.discovered.Do(func() {
		go func() {
			defer s.pool.Start()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			insts, err := s.current().List(ctx)
			if err != nil {
				s.logger.Warn("session rediscovery failed", zap.Error(err))
				return
			}
			n := s.manager.Adopt(s.pool.Adopt(ctx, insts))
			if n > 0 {
				s.logger.Info("sessions rediscovered", zap.Int("count", n))
			}
		}()
	})
}

// Destruct runs when no config uses the state any more (Caddy exits or
// the app was removed from the config).
func (s *state) Destruct() error {
	s.mu.Lock()
	destroy, p := s.destroy, s.provider
	if s.stopWatcher != nil {
		s.stopWatcher()
	}
	s.mu.Unlock()
	s.pool.Close(destroy)
	s.manager.Close(destroy)
	if p != nil {
		return p.Close()
	}
	return nil
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ session.Source     = (*state)(nil)
)
