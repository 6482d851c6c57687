package fly

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/caddytest"
)

func TestModuleCaddyfile(t *testing.T) {
	caddytest.Unmarshal(t, func() *Module { return new(Module) }, []caddytest.Case{
		{Name: "bare", Input: "fly", WantJSON: `{}`},
		{
			Name: "the issue's block",
			Input: "fly {\n app agents\n token {env.FLY_API_TOKEN}\n image registry.fly.io/agents:v1\n api_url https://api.machines.dev\n" +
				" region ams\n public_url https://agents.fly.dev\n private\n cpu_kind performance\n cpus 2\n memory 2g\n env A b\n env C d\n}",
			WantJSON: `{"app":"agents","token":"{env.FLY_API_TOKEN}","image":"registry.fly.io/agents:v1","api_url":"https://api.machines.dev",
				"region":"ams","public_url":"https://agents.fly.dev","private":true,"cpu_kind":"performance","cpus":2,"memory_mb":2048,
				"env":{"A":"b","C":"d"}}`,
		},
		{Name: "memory in megabytes", Input: "fly {\n memory 512m\n}", WantJSON: `{"memory_mb":512}`},
		{Name: "timeouts", Input: "fly {\n ready_timeout 2m\n poll_interval 500ms\n}", WantJSON: `{"ready_timeout":120000000000,"poll_interval":500000000}`},
		{Name: "argument on the kind", Input: "fly extra", WantErr: "wrong argument count"},
		{Name: "unknown subdirective", Input: "fly {\n gpus 1\n}", WantErr: `unknown fly provider subdirective "gpus"`},
		{Name: "memory not in 256m steps", Input: "fly {\n memory 300m\n}", WantErr: `memory "300m": want a size in steps of 256m`},
		{Name: "bad memory", Input: "fly {\n memory lots\n}", WantErr: `memory "lots"`},
		{Name: "fractional cpus", Input: "fly {\n cpus 0.5\n}", WantErr: `cpus "0.5": want a positive whole number`},
		{Name: "zero cpus", Input: "fly {\n cpus 0\n}", WantErr: `cpus "0"`},
		{Name: "bad poll interval", Input: "fly {\n poll_interval often\n}", WantErr: `poll_interval "often": want a duration`},
		{Name: "zero ready timeout", Input: "fly {\n ready_timeout 0s\n}", WantErr: `ready_timeout "0s"`},
		{Name: "duplicate option", Input: "fly {\n app a\n app b\n}", WantErr: "app already specified"},
		{Name: "duplicate env", Input: "fly {\n env A 1\n env A 2\n}", WantErr: "env A already specified"},
		{Name: "token without value", Input: "fly {\n token\n}", WantErr: "wrong argument count"},
		{Name: "private with a value", Input: "fly {\n private yes\n}", WantErr: "wrong argument count"},
	})
}

// TestModuleLoadsLikeTheApp: the app hands the registered module a
// dispenser positioned at the kind token.
func TestModuleLoadsLikeTheApp(t *testing.T) {
	m := caddytest.LoadModule[*Module](t, "agcluster.providers.fly", "fly {\n app agents\n}")
	assert.Equal(t, "agents", m.App)
}

func TestModuleProvisionAndValidate(t *testing.T) {
	t.Setenv("AGCLUSTER_TEST_FLY_TOKEN", "fo1_secret")
	t.Setenv("AGCLUSTER_TEST_URL", "http://mock:8080")
	env := map[string]string{"ANTHROPIC_BASE_URL": "{env.AGCLUSTER_TEST_URL}"}
	m := &Module{Options: Options{App: "agents", Token: "{env.AGCLUSTER_TEST_FLY_TOKEN}", Image: "registry.fly.io/agents:v1", Env: env}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	require.NoError(t, m.Provision(ctx))
	assert.Equal(t, "fo1_secret", m.Token)
	assert.Equal(t, "http://mock:8080", m.Env["ANTHROPIC_BASE_URL"])
	assert.Equal(t, "{env.AGCLUSTER_TEST_URL}", env["ANTHROPIC_BASE_URL"], "the decoded map is not changed in place")
	require.NoError(t, m.Validate())

	for _, tc := range []struct{ name, want string }{{"fly", "fly"}, {"fly-eu", "fly-eu"}, {"", "fly"}} {
		t.Run("NewProvider "+tc.name, func(t *testing.T) {
			p, err := m.NewProvider(tc.name, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			assert.Equal(t, tc.want, p.Name())
			assert.Equal(t, "fly", p.Kind())
			o := p.(*Provider).Options()
			assert.Equal(t, DefaultAPIURL, o.APIURL)
			assert.Equal(t, "https://agents.fly.dev", o.PublicURL, "public_url defaults to the app's fly.dev name")
			assert.Equal(t, DefaultMemoryMB, o.MemoryMB)
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	valid := Options{App: "agents", Token: "t", Image: "i"}
	check := func(o Options) error { _, err := o.normalize(); return err }
	newProvider := func(o Options) (*Provider, error) { return New(o, nil) }
	caddytest.Validate(t, valid, check, newProvider, []caddytest.OptionsCase[Options]{
		{Name: "valid", Change: func(*Options) {}},
		{Name: "private needs no public url", Change: func(o *Options) { o.Private, o.PublicURL = true, "" }},
		{Name: "nothing set", Change: func(o *Options) { *o = Options{} }, WantErr: []string{"app is required", "token is required", "image is required"}},
		{Name: "bad app name", Change: func(o *Options) { o.App = "My App" }, WantErr: []string{`app "My App"`}},
		{Name: "api key in env", Change: func(o *Options) { o.Env = map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"} }, WantErr: []string{"ANTHROPIC_API_KEY is refused"}},
		{Name: "reserved env", Change: func(o *Options) { o.Env = map[string]string{"AGENT_TOKEN": "x"} }, WantErr: []string{"AGENT_TOKEN is set by the provider"}},
		{Name: "bad cpu kind", Change: func(o *Options) { o.CPUKind = "gpu" }, WantErr: []string{`cpu_kind "gpu"`}},
		{Name: "memory off the 256 MiB grid", Change: func(o *Options) { o.MemoryMB = 1000 }, WantErr: []string{"multiple of 256"}},
		{Name: "bad public url", Change: func(o *Options) { o.PublicURL = "agents.fly.dev" }, WantErr: []string{"public_url"}},
		{Name: "bad api url", Change: func(o *Options) { o.APIURL = "ftp://x" }, WantErr: []string{"api_url"}},
	})
}
