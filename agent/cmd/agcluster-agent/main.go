// Command agcluster-agent is the agent server that runs inside every agent
// container. It keeps one Claude Code CLI process warm and serves the agent
// HTTP API (see package server) on AGENT_ADDR.
//
// Environment:
//
//	AGENT_TOKEN          required; bearer token for every endpoint but /health
//	AGENT_CONFIG         agent configuration as JSON (see agent.Config); default {}
//	AGENT_WORKSPACE      workspace directory (default /workspace)
//	AGENT_ADDR           listen address (default :8080)
//	AGENT_TURN_TIMEOUT   longest a turn may run, e.g. 30m (default 30m; 0 = none)
//	AGENT_MAX_FILE_BYTES upload limit for PUT /files (default 104857600)
//	AGENT_TOOL_RESULT_TIMEOUT how long a turn waits for the results of the client's
//	                     function calls (POST /tool_results), e.g. 10m (default 10m)
//	AGENT_WARM_UP        "1": run a first turn answered by the agent itself, then /clear,
//	                     before reporting ready (warm-pool agents; see claude.Options.WarmUp)
//	AGENT_STATE_DIR      optional; a directory on a persistent volume (/state in the image,
//	                     unset by default). The CLI keeps its sessions in <dir>/claude
//	                     (CLAUDE_CONFIG_DIR, unless set) and the agent its session id,
//	                     turn count, turn tree and binding in <dir>/agent.json (and the
//	                     files of branches it left in <dir>/branches), so an agent whose
//	                     container is stopped and started again resumes its conversation
//	                     (GET /health says "resumed": true). Unset: nothing survives a restart.
//	AGENT_RESTORE        "1": wait, before opening the state directory and starting the CLI,
//	                     until the control plane restores the disk with PUT /snapshot (a
//	                     snapshot from GET /snapshot, or an empty body); for platforms whose
//	                     containers start with an empty disk (Cloudflare). /health says
//	                     "restoring" meanwhile.
//	CLAUDE_BIN           the claude executable (default: claude on PATH)
//	ANTHROPIC_BASE_URL   the Anthropic API (default https://api.anthropic.com)
//	ANTHROPIC_API_KEY    optional key for queries that bring none
//
// Other variables pass through to the CLI (CLAUDE_CODE_*, proxies, ...). The CLI
// gets CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING=1 unless it is set: branches
// (QueryRequest.Branch) rewind workspace files to its checkpoints.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/claude"
	"github.com/agcluster/caddy-agcluster/agent/keyproxy"
	"github.com/agcluster/caddy-agcluster/agent/server"
	"github.com/agcluster/caddy-agcluster/agent/statefile"
	"github.com/agcluster/caddy-agcluster/agent/workspace"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "healthcheck":
			os.Exit(healthcheck())
		default:
			fmt.Fprintln(os.Stderr, "usage: agcluster-agent [healthcheck]  (configured by environment; see the package documentation)")
			os.Exit(2)
		}
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agcluster-agent:", err)
		os.Exit(1)
	}
}

// settings is the agent's configuration read from the environment.
type settings struct {
	token        string
	config       *agent.Config
	workspace    string
	addr         string
	turnTimeout  time.Duration
	toolTimeout  time.Duration // how long a turn waits for client tool results
	maxFileBytes int64
	claudeBin    string
	upstream     string
	defaultKey   string
	warmUp       bool
	stateDir     string
	restore      bool // wait for PUT /snapshot before starting
}

func readSettings() (*settings, error) {
	s := &settings{
		token:        os.Getenv(agent.EnvToken),
		workspace:    envOr(agent.EnvWorkspace, "/workspace"),
		addr:         envOr(agent.EnvAddr, ":8080"),
		claudeBin:    envOr("CLAUDE_BIN", "claude"),
		upstream:     envOr("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
		defaultKey:   os.Getenv("ANTHROPIC_API_KEY"),
		warmUp:       os.Getenv(agent.EnvWarmUp) == "1",
		stateDir:     os.Getenv(agent.EnvStateDir),
		restore:      os.Getenv(agent.EnvRestore) == "1",
		turnTimeout:  30 * time.Minute,
		toolTimeout:  10 * time.Minute,
		maxFileBytes: 100 << 20,
	}
	if s.token == "" {
		return nil, errors.New(agent.EnvToken + " is required (the bearer token clients must send)")
	}
	cfg := &agent.Config{}
	if raw := os.Getenv(agent.EnvConfig); strings.TrimSpace(raw) != "" {
		var err error
		if cfg, err = agent.ParseConfig([]byte(raw)); err != nil {
			return nil, fmt.Errorf("%s: %w", agent.EnvConfig, err)
		}
	}
	s.config = cfg
	if v := os.Getenv(agent.EnvTurnTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%s %q: must be a duration such as 30m", agent.EnvTurnTimeout, v)
		}
		s.turnTimeout = d
	}
	if v := os.Getenv(agent.EnvToolResultTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%s %q: must be a positive duration such as 10m", agent.EnvToolResultTimeout, v)
		}
		s.toolTimeout = d
	}
	if v := os.Getenv(agent.EnvMaxFileBytes); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s %q: must be a positive number of bytes", agent.EnvMaxFileBytes, v)
		}
		s.maxFileBytes = n
	}
	if s.stateDir != "" {
		// The CLI runs in the workspace: a relative path would move.
		dir, err := filepath.Abs(s.stateDir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", agent.EnvStateDir, err)
		}
		s.stateDir = dir
	}
	bin, err := exec.LookPath(s.claudeBin)
	if err != nil {
		return nil, fmt.Errorf("CLAUDE_BIN: %w", err)
	}
	s.claudeBin = bin
	return s, nil
}

func run() error {
	s, err := readSettings()
	if err != nil {
		return err
	}
	logger, err := zap.NewProduction()
	if err != nil {
		return fmt.Errorf("logger: %w", err)
	}
	defer func() { _ = logger.Sync() }()

	ws, err := workspace.Open(s.workspace)
	if err != nil {
		return fmt.Errorf("%s: %w", agent.EnvWorkspace, err)
	}
	defer ws.Close()
	var stateFiles *workspace.Workspace // the state directory, for snapshots
	if s.stateDir != "" {
		if stateFiles, err = workspace.Open(s.stateDir); err != nil {
			return fmt.Errorf("%s: %w", agent.EnvStateDir, err)
		}
		defer stateFiles.Close()
	}

	// One listener and server for the whole life of the agent: the restore
	// gate answers first (when asked for), then the API.
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	handler := &swapHandler{}
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	// The server stops first (letting requests end), then what it uses.
	shutdown := sync.OnceFunc(func() {
		logger.Info("shutting down")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(shutdownCtx)
	})
	defer shutdown()
	if s.restore {
		if err := awaitRestore(ctx, s, ws, stateFiles, handler, errc, logger); err != nil || ctx.Err() != nil {
			return err
		}
	}

	state, err := openState(s.stateDir, logger)
	if err != nil {
		return err
	}
	var runner *claude.Runner
	proxy, err := keyproxy.New(s.upstream, func(status int) {
		if runner != nil {
			runner.ObserveUpstream(status)
		}
	})
	if err != nil {
		return fmt.Errorf("ANTHROPIC_BASE_URL: %w", err)
	}
	proxy.OnAbort = func(path string, after time.Duration, err error) {
		logger.Warn("claude abandoned an api request", zap.String("path", path), zap.Duration("after", after), zap.Error(err))
	}
	if err := proxy.Start(); err != nil {
		return err
	}
	defer proxy.Close()

	runner = claude.NewRunner(claude.Options{
		Bin:               s.claudeBin,
		Config:            s.config,
		Dir:               s.workspace,
		Env:               claudeEnv(os.Environ(), s.config, proxy, s.stateDir),
		Logger:            logger.Named("claude"),
		TurnTimeout:       s.turnTimeout,
		ToolResultTimeout: s.toolTimeout,
		WarmUp:            s.warmUp,
		SetWarmUp:         proxy.SetWarmUp,
		State:             state,
	})
	defer runner.Close()

	srv, err := server.New(server.Options{
		Token:         s.token,
		Runner:        runner,
		SetKey:        proxy.SetKey,
		DefaultKey:    s.defaultKey,
		Workspace:     ws,
		ClaudeVersion: claudeVersion(s.claudeBin),
		MaxFileBytes:  s.maxFileBytes,
		Logger:        logger.Named("http"),
		State:         state,
		StateDir:      stateFiles,
	})
	if err != nil {
		return err
	}
	handler.set(srv)
	logger.Info("agent listening", zap.String("addr", s.addr), zap.String("workspace", s.workspace),
		zap.String("config_id", s.config.ID))
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown()
	return nil
}

// awaitRestore serves the restore gate until the control plane has
// restored the disk (PUT /snapshot), the agent is asked to stop (ctx), or
// the server fails.
func awaitRestore(ctx context.Context, s *settings, ws, stateFiles *workspace.Workspace, handler *swapHandler, errc <-chan error, logger *zap.Logger) error {
	gate, err := server.NewRestoreGate(server.RestoreOptions{
		Token: s.token, Workspace: ws, StateDir: stateFiles, Logger: logger.Named("restore"),
		// Requests from now on wait for the API instead of the gate's 503.
		OnRestored: handler.hold,
	})
	if err != nil {
		return err
	}
	handler.set(gate)
	logger.Info("agent waiting for its snapshot", zap.String("addr", s.addr))
	select {
	case <-gate.Done():
		return nil
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// openState opens the agent's saved state in dir (nil without one: nothing
// is kept). A corrupt state is ignored: the conversation starts afresh.
func openState(dir string, logger *zap.Logger) (*statefile.Store, error) {
	if dir == "" {
		return nil, nil
	}
	state, err := statefile.Open(dir)
	if err != nil {
		if !errors.Is(err, statefile.ErrCorrupt) {
			return nil, fmt.Errorf("%s: %w", agent.EnvStateDir, err)
		}
		logger.Warn("saved agent state ignored; starting a fresh conversation", zap.Error(err))
	}
	if saved := state.Get(); saved.HasSession {
		logger.Info("resuming the saved conversation", zap.String("session_id", saved.SessionID), zap.Int64("turns", saved.Turns))
	}
	return state, nil
}

// swapHandler serves with the handler set last: the restore gate, then
// the agent's API, on one listener. Between hold and the next set,
// requests wait for the next handler.
type swapHandler struct {
	h    atomic.Pointer[http.Handler]
	mu   sync.Mutex
	wait chan struct{} // closed by set; nil when nothing is held
}

// set makes h the handler and releases held requests.
func (s *swapHandler) set(h http.Handler) {
	s.h.Store(&h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wait != nil {
		close(s.wait)
		s.wait = nil
	}
}

// hold makes requests wait for the next set.
func (s *swapHandler) hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wait == nil {
		s.wait = make(chan struct{})
	}
}

// ServeHTTP serves r with the current handler (503 before any is set).
func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	wait := s.wait
	s.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-r.Context().Done():
			return
		}
	}
	h := s.h.Load()
	if h == nil {
		w.Header().Set(agent.HeaderServer, "1")
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

// droppedEnv are variables of the agent that the CLI must not see: its
// credentials and API location come from the proxy instead.
var droppedEnv = map[string]bool{
	"ANTHROPIC_API_KEY": true, "ANTHROPIC_AUTH_TOKEN": true, "ANTHROPIC_BASE_URL": true, "CLAUDE_BIN": true,
}

// claudeEnv is the CLI's environment: the agent's own, without the agent's
// secrets and settings, pointed at the credential proxy, plus the config's env.
// With a state directory the CLI keeps its configuration and sessions in
// <stateDir>/claude, unless CLAUDE_CONFIG_DIR is set already.
func claudeEnv(base []string, cfg *agent.Config, proxy *keyproxy.Proxy, stateDir string) []string {
	env := make([]string, 0, len(base)+8)
	set := map[string]bool{}
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "AGENT_") || droppedEnv[name] { // the agent's own (agent.Env*)
			continue
		}
		set[name] = true
		env = append(env, kv)
	}
	env = append(env,
		"ANTHROPIC_BASE_URL="+proxy.URL(),
		"ANTHROPIC_API_KEY="+proxy.Placeholder(),
	)
	if !set["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] {
		// Without it the CLI calls hosts other than the API base URL.
		env = append(env, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1")
	}
	if !set["CLAUDE_CODE_MAX_RETRIES"] {
		// The default (10) keeps a failing turn retrying for about 3 minutes.
		env = append(env, "CLAUDE_CODE_MAX_RETRIES=3")
	}
	if !set["DISABLE_AUTOUPDATER"] {
		env = append(env, "DISABLE_AUTOUPDATER=1")
	}
	if _, inConfig := cfg.Env["CLAUDE_CONFIG_DIR"]; stateDir != "" && !set["CLAUDE_CONFIG_DIR"] && !inConfig {
		// On the persistent volume: a restarted CLI finds its sessions
		// there and resumes them.
		env = append(env, "CLAUDE_CONFIG_DIR="+filepath.Join(stateDir, "claude"))
	}
	for k, v := range cfg.Env {
		env = append(env, k+"="+v)
	}
	return env
}

func claudeVersion(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// healthcheck asks the local server's /health, for Docker's HEALTHCHECK
// (the image has no curl). It returns the process exit code.
func healthcheck() int {
	addr := envOr(agent.EnvAddr, ":8080")
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + "/health")
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck: status", resp.Status)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
