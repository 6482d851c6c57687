package cloudflare

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/providers"
)

func TestModuleCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		input    string
		wantJSON string
		wantErr  string
	}{
		{name: "bare", input: "cloudflare", wantJSON: `{}`},
		{
			name: "the issue's block",
			input: "cloudflare {\n worker_url https://agcluster-agents.example.workers.dev\n secret {env.AGCLUSTER_WORKER_SECRET}\n" +
				" env A b\n env C d\n}",
			wantJSON: `{"worker_url":"https://agcluster-agents.example.workers.dev","secret":"{env.AGCLUSTER_WORKER_SECRET}",
				"env":{"A":"b","C":"d"}}`,
		},
		{name: "timeouts", input: "cloudflare {\n ready_timeout 3m\n poll_interval 500ms\n}", wantJSON: `{"ready_timeout":180000000000,"poll_interval":500000000}`},
		{name: "argument on the kind", input: "cloudflare extra", wantErr: "wrong argument count"},
		{name: "unknown subdirective", input: "cloudflare {\n account_id x\n}", wantErr: `unknown cloudflare provider subdirective "account_id"`},
		{name: "bad poll interval", input: "cloudflare {\n poll_interval often\n}", wantErr: `poll_interval "often": want a duration`},
		{name: "zero ready timeout", input: "cloudflare {\n ready_timeout 0s\n}", wantErr: `ready_timeout "0s"`},
		{name: "duplicate option", input: "cloudflare {\n secret a\n secret b\n}", wantErr: "secret already specified"},
		{name: "duplicate env", input: "cloudflare {\n env A 1\n env A 2\n}", wantErr: "env A already specified"},
		{name: "worker_url without value", input: "cloudflare {\n worker_url\n}", wantErr: "wrong argument count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Module
			err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			got, err := json.Marshal(m)
			require.NoError(t, err)
			assert.JSONEq(t, tc.wantJSON, string(got))
		})
	}
}

// TestModuleLoadsLikeTheApp: the app hands the registered module a
// dispenser positioned at the kind token.
func TestModuleLoadsLikeTheApp(t *testing.T) {
	d := caddyfile.NewTestDispenser("cloudflare {\n worker_url https://w.example.workers.dev\n}")
	require.True(t, d.Next())
	unm, err := caddyfile.UnmarshalModule(d, "agcluster.providers.cloudflare")
	require.NoError(t, err)
	m, ok := unm.(*Module)
	require.True(t, ok, "%T", unm)
	assert.Equal(t, "https://w.example.workers.dev", m.WorkerURL)
}

func TestModuleProvisionAndValidate(t *testing.T) {
	t.Setenv("AGCLUSTER_TEST_WORKER_SECRET", "0123456789abcdef0123456789abcdef")
	t.Setenv("AGCLUSTER_TEST_URL", "http://mock:8080")
	env := map[string]string{"ANTHROPIC_BASE_URL": "{env.AGCLUSTER_TEST_URL}"}
	m := &Module{Options: Options{WorkerURL: "https://w.example.workers.dev/", Secret: "{env.AGCLUSTER_TEST_WORKER_SECRET}", Env: env}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	require.NoError(t, m.Provision(ctx))
	assert.Equal(t, "0123456789abcdef0123456789abcdef", m.Secret)
	assert.Equal(t, "http://mock:8080", m.Env["ANTHROPIC_BASE_URL"])
	assert.Equal(t, "{env.AGCLUSTER_TEST_URL}", env["ANTHROPIC_BASE_URL"], "the decoded map is not changed in place")
	require.NoError(t, m.Validate())

	for _, tc := range []struct{ name, want string }{{"cloudflare", "cloudflare"}, {"edge", "edge"}, {"", "cloudflare"}} {
		t.Run("NewProvider "+tc.name, func(t *testing.T) {
			p, err := m.NewProvider(tc.name, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			assert.Equal(t, tc.want, p.Name())
			assert.Equal(t, "cloudflare", p.Kind())
			assert.Equal(t, []string{"sleep", "events", "ping", "find"}, providers.Capabilities(p))
			o := p.(*Provider).Options()
			assert.Equal(t, "https://w.example.workers.dev", o.WorkerURL, "the trailing slash goes")
			assert.Equal(t, caddy.Duration(DefaultReadyTimeout), o.ReadyTimeout)
			assert.Equal(t, caddy.Duration(DefaultPollInterval), o.PollInterval)
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	valid := Options{WorkerURL: "https://agcluster-agents.example.workers.dev", Secret: "0123456789abcdef"}
	for _, tc := range []struct {
		name    string
		change  func(o *Options)
		wantErr []string
	}{
		{"valid", func(*Options) {}, nil},
		{"http on loopback (wrangler dev)", func(o *Options) { o.WorkerURL = "http://127.0.0.1:8787" }, nil},
		{"http on localhost", func(o *Options) { o.WorkerURL = "http://localhost:8787" }, nil},
		{"nothing set", func(o *Options) { *o = Options{} }, []string{"worker_url is required", "secret is required"}},
		{"plain http elsewhere", func(o *Options) { o.WorkerURL = "http://agents.example.com" }, []string{"want https"}},
		{"not a URL", func(o *Options) { o.WorkerURL = "agents.example.workers.dev" }, []string{"worker_url"}},
		{"a query", func(o *Options) { o.WorkerURL = "https://w.example.workers.dev/?x=1" }, []string{"worker_url"}},
		{"short secret", func(o *Options) { o.Secret = "short" }, []string{"at least 16 characters"}},
		{"api key in env", func(o *Options) { o.Env = map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"} }, []string{"ANTHROPIC_API_KEY is refused"}},
		{"reserved env", func(o *Options) { o.Env = map[string]string{"AGENT_RESTORE": "1"} }, []string{"AGENT_RESTORE is set by the provider"}},
		{"negative timeout", func(o *Options) { o.ReadyTimeout = -1 }, []string{"must not be negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			tc.change(&o)
			_, err := o.normalize()
			if tc.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.wantErr {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "sk-ant-x", "no secret in the error")
			p, err := New(o, nil)
			require.Error(t, err)
			assert.Nil(t, p)
		})
	}
}

// TestInstanceRoute: an agent is reached through the Worker, at its relay
// path with the secret in a header of its own (the Authorization header
// is the agent's), with a token derived from the secret and its id.
func TestInstanceRoute(t *testing.T) {
	p, err := New(Options{WorkerURL: "https://w.example.workers.dev", Secret: "0123456789abcdef"}, nil)
	require.NoError(t, err)
	running := p.instance(record{ID: "sess_a b", Provider: "cloudflare", SessionID: "sess_a b", State: stateRunning,
		CreatedAt: "2026-12-01T10:00:00.5Z"})
	assert.Equal(t, "https://w.example.workers.dev/v1/agents/sess_a%20b/agent", running.URL)
	assert.Equal(t, http.Header{HeaderWorkerAuth: {"Bearer 0123456789abcdef"}}, running.Header)
	assert.Equal(t, providers.StateRunning, running.State)
	assert.Equal(t, time.Date(2026, 12, 1, 10, 0, 0, 5e8, time.UTC), running.CreatedAt)
	assert.Len(t, running.Token, 64)

	stopped := p.instance(record{ID: "sess_c", State: stateStopped})
	assert.Empty(t, stopped.URL, "a stopped agent has no route")
	assert.Equal(t, providers.StateStopped, stopped.State)
	assert.NotEqual(t, running.Token, stopped.Token, "each agent its token")
	again, err := New(Options{WorkerURL: "https://w.example.workers.dev", Secret: "0123456789abcdef"}, nil)
	require.NoError(t, err)
	assert.Equal(t, stopped.Token, again.instance(record{ID: "sess_c"}).Token, "a restarted gateway derives the same token")
	other, err := New(Options{WorkerURL: "https://w.example.workers.dev", Secret: "fedcba9876543210"}, nil)
	require.NoError(t, err)
	assert.NotEqual(t, stopped.Token, other.instance(record{ID: "sess_c"}).Token, "another secret, another token")
}
