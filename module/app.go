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
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

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
	// next start; "destroy" removes them.
	Shutdown string `json:"shutdown,omitempty"`

	state   *state
	configs *configs.Store
	logger  *zap.Logger
}

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
	st, err := loadState(a.logger)
	if err != nil {
		return err
	}
	a.state = st
	st.configure(pm.Provider(), a.managerOptions(), a.Shutdown == "destroy", time.Duration(a.TurnTimeout))
	return nil
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
		st.manager = session.NewManager(session.Options{Source: st, Logger: logger.Named("session")})
		return st, nil
	})
	if err != nil {
		return nil, fmt.Errorf("agcluster state: %w", err)
	}
	return v.(*state), nil
}

// configure applies a (re)loaded config: new sessions use the new provider
// and limits; existing sessions keep running.
func (s *state) configure(p providers.Provider, opts session.Options, destroyOnExit bool, turnTimeout time.Duration) {
	s.mu.Lock()
	old := s.provider
	s.provider = p
	s.destroy = destroyOnExit
	s.turnTimeout = turnTimeout
	s.mu.Unlock()
	s.manager.Reconfigure(opts)
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
		spec.Env = maps.Clone(spec.Env)
		if spec.Env == nil {
			spec.Env = map[string]string{}
		}
		spec.Env["AGENT_TURN_TIMEOUT"] = timeout.String()
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
				if ev.Reason == "die" {
					s.manager.InstanceDied(ev.InstanceID)
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

// rediscover adopts the instances a previous run left, once per process.
func (s *state) rediscover() {
	s.discovered.Do(func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			insts, err := s.current().List(ctx)
			if err != nil {
				s.logger.Warn("session rediscovery failed", zap.Error(err))
				return
			}
			n := s.manager.Adopt(insts)
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
