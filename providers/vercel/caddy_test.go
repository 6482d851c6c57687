package vercel

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/caddytest"
	"github.com/agcluster/caddy-agcluster/providers"
)

func TestModuleCaddyfile(t *testing.T) {
	caddytest.Unmarshal(t, func() *Module { return new(Module) }, []caddytest.Case{
		{Name: "bare", Input: "vercel", WantJSON: `{}`},
		{
			Name: "the issue's block, preparing the snapshot",
			Input: "vercel {\n token {env.VERCEL_TOKEN}\n project_id prj_1\n team_id team_1\n api_url https://vercel.com/api\n" +
				" agent_binary /opt/agcluster/agcluster-agent\n claude_binary /opt/agcluster/claude\n vcpus 4\n timeout 30m\n" +
				" env A b\n env C d\n}",
			WantJSON: `{"token":"{env.VERCEL_TOKEN}","project_id":"prj_1","team_id":"team_1","api_url":"https://vercel.com/api",
				"agent_binary":"/opt/agcluster/agcluster-agent","claude_binary":"/opt/agcluster/claude","vcpus":4,
				"timeout":1800000000000,"env":{"A":"b","C":"d"}}`,
		},
		{Name: "a prepared snapshot", Input: "vercel {\n snapshot snap_abc\n}", WantJSON: `{"snapshot":"snap_abc"}`},
		{Name: "the CLI from npm", Input: "vercel {\n claude_version 2.1.328\n}", WantJSON: `{"claude_version":"2.1.328"}`},
		{
			Name:     "extras",
			Input:    "vercel {\n agent_secret {env.SECRET}\n ready_timeout 3m\n poll_interval 2s\n}",
			WantJSON: `{"agent_secret":"{env.SECRET}","ready_timeout":180000000000,"poll_interval":2000000000}`,
		},
		{Name: "argument on the kind", Input: "vercel extra", WantErr: "wrong argument count"},
		{Name: "unknown subdirective", Input: "vercel {\n region iad1\n}", WantErr: `unknown vercel provider subdirective "region"`},
		{Name: "too many vcpus", Input: "vercel {\n vcpus 16\n}", WantErr: `vcpus "16": want a whole number from 1 to 8`},
		{Name: "fractional vcpus", Input: "vercel {\n vcpus 0.5\n}", WantErr: `vcpus "0.5"`},
		{Name: "bad timeout", Input: "vercel {\n timeout forever\n}", WantErr: `timeout "forever": want a duration`},
		{Name: "zero timeout", Input: "vercel {\n timeout 0s\n}", WantErr: `timeout "0s"`},
		{Name: "duplicate option", Input: "vercel {\n project_id a\n project_id b\n}", WantErr: "project_id already specified"},
		{Name: "duplicate env", Input: "vercel {\n env A 1\n env A 2\n}", WantErr: "env A already specified"},
		{Name: "token without value", Input: "vercel {\n token\n}", WantErr: "wrong argument count"},
	})
}

// TestModuleLoadsLikeTheApp: the app hands the registered module a
// dispenser positioned at the kind token.
func TestModuleLoadsLikeTheApp(t *testing.T) {
	m := caddytest.LoadModule[*Module](t, "agcluster.providers.vercel", "vercel {\n project_id prj_1\n}")
	assert.Equal(t, "prj_1", m.ProjectID)
}

func TestModuleProvisionAndValidate(t *testing.T) {
	t.Setenv("AGCLUSTER_TEST_VERCEL_TOKEN", "vcp_secret")
	t.Setenv("AGCLUSTER_TEST_URL", "http://mock:8080")
	env := map[string]string{"ANTHROPIC_BASE_URL": "{env.AGCLUSTER_TEST_URL}"}
	m := &Module{Options: Options{Token: "{env.AGCLUSTER_TEST_VERCEL_TOKEN}", ProjectID: "prj_1", Snapshot: "snap_1", Env: env}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	require.NoError(t, m.Provision(ctx))
	assert.Equal(t, "vcp_secret", m.Token)
	assert.Equal(t, "http://mock:8080", m.Env["ANTHROPIC_BASE_URL"])
	assert.Equal(t, "{env.AGCLUSTER_TEST_URL}", env["ANTHROPIC_BASE_URL"], "the decoded map is not changed in place")
	require.NoError(t, m.Validate())

	for _, tc := range []struct{ name, want string }{{"vercel", "vercel"}, {"vercel-eu", "vercel-eu"}, {"", "vercel"}} {
		t.Run("NewProvider "+tc.name, func(t *testing.T) {
			p, err := m.NewProvider(tc.name, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			assert.Equal(t, tc.want, p.Name())
			assert.Equal(t, "vercel", p.Kind())
			assert.ElementsMatch(t, []string{"sleep", "events", "expiry", "ping", "find"}, providers.Capabilities(p))
			o := p.(*Provider).Options()
			assert.Equal(t, "https://vercel.com/api", o.APIURL)
			assert.Equal(t, DefaultVCPUs, o.VCPUs)
			assert.Equal(t, DefaultTimeout, time.Duration(o.Timeout))
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	valid := Options{Token: "t", ProjectID: "prj", AgentBinary: "/a", ClaudeBinary: "/c"}
	check := func(o Options) error { _, err := o.normalize(); return err }
	newProvider := func(o Options) (*Provider, error) { return New(o, nil) }
	caddytest.Validate(t, valid, check, newProvider, []caddytest.OptionsCase[Options]{
		{Name: "valid", Change: func(*Options) {}},
		{Name: "a snapshot instead of binaries", Change: func(o *Options) { o.Snapshot, o.AgentBinary, o.ClaudeBinary = "snap_1", "", "" }},
		{Name: "the CLI from npm", Change: func(o *Options) { o.ClaudeBinary, o.ClaudeVersion = "", "2.1.328" }},
		{Name: "nothing set", Change: func(o *Options) { *o = Options{} },
			WantErr: []string{"token is required", "project_id is required", "agent_binary is required", "claude_binary or claude_version is required"}},
		{Name: "both CLI sources", Change: func(o *Options) { o.ClaudeVersion = "2.1.328" }, WantErr: []string{"claude_binary and claude_version: give one"}},
		{Name: "a snapshot and binaries", Change: func(o *Options) { o.Snapshot = "snap_1" }, WantErr: []string{"snapshot is prepared already"}},
		{Name: "api key in env", Change: func(o *Options) { o.Env = map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"} }, WantErr: []string{"ANTHROPIC_API_KEY is refused"}},
		{Name: "reserved env", Change: func(o *Options) { o.Env = map[string]string{"AGENT_TOKEN": "x"} }, WantErr: []string{"AGENT_TOKEN is set by the provider"}},
		{Name: "too many vcpus", Change: func(o *Options) { o.VCPUs = 9 }, WantErr: []string{"vcpus 9"}},
		{Name: "timeout too short", Change: func(o *Options) { o.Timeout = caddy.Duration(time.Second) }, WantErr: []string{"timeout 1s: want at least 10s"}},
		{Name: "short agent secret", Change: func(o *Options) { o.AgentSecret = "short" }, WantErr: []string{"agent_secret: want at least 32 characters"}},
		{Name: "bad api url", Change: func(o *Options) { o.APIURL = "ftp://x" }, WantErr: []string{"api_url"}},
	})
}

// TestAgentTokens: a sandbox's token is derived from the secret (by
// default the API token and project) and its name: the same after a
// restart, different per sandbox and per secret.
func TestAgentTokens(t *testing.T) {
	base := Options{Token: "t", ProjectID: "prj", Snapshot: "snap"}
	p1, err := New(base, nil)
	require.NoError(t, err)
	defer p1.Close()
	p2, err := New(base, nil)
	require.NoError(t, err)
	defer p2.Close()
	assert.Equal(t, p1.token("agc-1"), p2.token("agc-1"), "a restarted gateway recomputes the token")
	assert.NotEqual(t, p1.token("agc-1"), p1.token("agc-2"))
	rotated := base
	rotated.Token = "t2"
	p3, err := New(rotated, nil)
	require.NoError(t, err)
	defer p3.Close()
	assert.NotEqual(t, p1.token("agc-1"), p3.token("agc-1"))
	pinned := rotated
	pinned.AgentSecret = strings.Repeat("s", 32)
	p4, err := New(pinned, nil)
	require.NoError(t, err)
	defer p4.Close()
	pinned.Token = "t3"
	p5, err := New(pinned, nil)
	require.NoError(t, err)
	defer p5.Close()
	assert.Equal(t, p4.token("agc-1"), p5.token("agc-1"), "agent_secret keeps tokens across a token rotation")
}

// TestSandboxNames: a session's sandbox name is the same on every gateway
// (provider name and session id), differs per session and per provider,
// and is a valid Vercel name; a warm-pool sandbox's is random.
func TestSandboxNames(t *testing.T) {
	newP := func(name string) *Provider {
		p, err := New(Options{Name: name, Token: "t", ProjectID: "prj", Snapshot: "snap"}, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	a, again, b := newP("vercel"), newP("vercel"), newP("gpu")
	name := a.sandboxName("sess_1")
	assert.Equal(t, name, again.sandboxName("sess_1"), "another gateway derives the same name")
	assert.NotEqual(t, name, a.sandboxName("sess_2"))
	assert.NotEqual(t, name, b.sandboxName("sess_1"), "providers sharing a project do not collide")
	assert.Regexp(t, `^agc-[0-9a-f]{16}$`, name)
	pool := a.sandboxName("")
	assert.Regexp(t, `^agc-pool-[0-9a-f]{16}$`, pool)
	assert.NotEqual(t, pool, a.sandboxName(""), "pool names are random")
}
