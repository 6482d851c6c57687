package fly

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestModuleCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		input    string
		wantJSON string
		wantErr  string
	}{
		{name: "bare", input: "fly", wantJSON: `{}`},
		{
			name: "the issue's block",
			input: "fly {\n app agents\n token {env.FLY_API_TOKEN}\n image registry.fly.io/agents:v1\n api_url https://api.machines.dev\n" +
				" region ams\n public_url https://agents.fly.dev\n private\n cpu_kind performance\n cpus 2\n memory 2g\n env A b\n env C d\n}",
			wantJSON: `{"app":"agents","token":"{env.FLY_API_TOKEN}","image":"registry.fly.io/agents:v1","api_url":"https://api.machines.dev",
				"region":"ams","public_url":"https://agents.fly.dev","private":true,"cpu_kind":"performance","cpus":2,"memory_mb":2048,
				"env":{"A":"b","C":"d"}}`,
		},
		{name: "memory in megabytes", input: "fly {\n memory 512m\n}", wantJSON: `{"memory_mb":512}`},
		{name: "timeouts", input: "fly {\n ready_timeout 2m\n poll_interval 500ms\n}", wantJSON: `{"ready_timeout":120000000000,"poll_interval":500000000}`},
		{name: "argument on the kind", input: "fly extra", wantErr: "wrong argument count"},
		{name: "unknown subdirective", input: "fly {\n gpus 1\n}", wantErr: `unknown fly provider subdirective "gpus"`},
		{name: "memory not in 256m steps", input: "fly {\n memory 300m\n}", wantErr: `memory "300m": want a size in steps of 256m`},
		{name: "bad memory", input: "fly {\n memory lots\n}", wantErr: `memory "lots"`},
		{name: "fractional cpus", input: "fly {\n cpus 0.5\n}", wantErr: `cpus "0.5": want a positive whole number`},
		{name: "zero cpus", input: "fly {\n cpus 0\n}", wantErr: `cpus "0"`},
		{name: "bad poll interval", input: "fly {\n poll_interval often\n}", wantErr: `poll_interval "often": want a duration`},
		{name: "zero ready timeout", input: "fly {\n ready_timeout 0s\n}", wantErr: `ready_timeout "0s"`},
		{name: "duplicate option", input: "fly {\n app a\n app b\n}", wantErr: "app already specified"},
		{name: "duplicate env", input: "fly {\n env A 1\n env A 2\n}", wantErr: "env A already specified"},
		{name: "token without value", input: "fly {\n token\n}", wantErr: "wrong argument count"},
		{name: "private with a value", input: "fly {\n private yes\n}", wantErr: "wrong argument count"},
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
	d := caddyfile.NewTestDispenser("fly {\n app agents\n}")
	require.True(t, d.Next())
	unm, err := caddyfile.UnmarshalModule(d, "agcluster.providers.fly")
	require.NoError(t, err)
	m, ok := unm.(*Module)
	require.True(t, ok, "%T", unm)
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
	for _, tc := range []struct {
		name    string
		change  func(o *Options)
		wantErr []string
	}{
		{"valid", func(*Options) {}, nil},
		{"private needs no public url", func(o *Options) { o.Private, o.PublicURL = true, "" }, nil},
		{"nothing set", func(o *Options) { *o = Options{} }, []string{"app is required", "token is required", "image is required"}},
		{"bad app name", func(o *Options) { o.App = "My App" }, []string{`app "My App"`}},
		{"api key in env", func(o *Options) { o.Env = map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"} }, []string{"ANTHROPIC_API_KEY is refused"}},
		{"reserved env", func(o *Options) { o.Env = map[string]string{"AGENT_TOKEN": "x"} }, []string{"AGENT_TOKEN is set by the provider"}},
		{"bad cpu kind", func(o *Options) { o.CPUKind = "gpu" }, []string{`cpu_kind "gpu"`}},
		{"memory off the 256 MiB grid", func(o *Options) { o.MemoryMB = 1000 }, []string{"multiple of 256"}},
		{"bad public url", func(o *Options) { o.PublicURL = "agents.fly.dev" }, []string{"public_url"}},
		{"bad api url", func(o *Options) { o.APIURL = "ftp://x" }, []string{"api_url"}},
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
