package vercel

import (
	"encoding/json"
	"strings"
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
		{name: "bare", input: "vercel", wantJSON: `{}`},
		{
			name: "the issue's block, preparing the snapshot",
			input: "vercel {\n token {env.VERCEL_TOKEN}\n project_id prj_1\n team_id team_1\n api_url https://vercel.com/api\n" +
				" agent_binary /opt/agcluster/agcluster-agent\n claude_binary /opt/agcluster/claude\n vcpus 4\n timeout 30m\n" +
				" env A b\n env C d\n}",
			wantJSON: `{"token":"{env.VERCEL_TOKEN}","project_id":"prj_1","team_id":"team_1","api_url":"https://vercel.com/api",
				"agent_binary":"/opt/agcluster/agcluster-agent","claude_binary":"/opt/agcluster/claude","vcpus":4,
				"timeout":1800000000000,"env":{"A":"b","C":"d"}}`,
		},
		{name: "a prepared snapshot", input: "vercel {\n snapshot snap_abc\n}", wantJSON: `{"snapshot":"snap_abc"}`},
		{name: "the CLI from npm", input: "vercel {\n claude_version 2.1.328\n}", wantJSON: `{"claude_version":"2.1.328"}`},
		{
			name:     "extras",
			input:    "vercel {\n agent_secret {env.SECRET}\n ready_timeout 3m\n poll_interval 2s\n}",
			wantJSON: `{"agent_secret":"{env.SECRET}","ready_timeout":180000000000,"poll_interval":2000000000}`,
		},
		{name: "argument on the kind", input: "vercel extra", wantErr: "wrong argument count"},
		{name: "unknown subdirective", input: "vercel {\n region iad1\n}", wantErr: `unknown vercel provider subdirective "region"`},
		{name: "too many vcpus", input: "vercel {\n vcpus 16\n}", wantErr: `vcpus "16": want a whole number from 1 to 8`},
		{name: "fractional vcpus", input: "vercel {\n vcpus 0.5\n}", wantErr: `vcpus "0.5"`},
		{name: "bad timeout", input: "vercel {\n timeout forever\n}", wantErr: `timeout "forever": want a duration`},
		{name: "zero timeout", input: "vercel {\n timeout 0s\n}", wantErr: `timeout "0s"`},
		{name: "duplicate option", input: "vercel {\n project_id a\n project_id b\n}", wantErr: "project_id already specified"},
		{name: "duplicate env", input: "vercel {\n env A 1\n env A 2\n}", wantErr: "env A already specified"},
		{name: "token without value", input: "vercel {\n token\n}", wantErr: "wrong argument count"},
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
	d := caddyfile.NewTestDispenser("vercel {\n project_id prj_1\n}")
	require.True(t, d.Next())
	unm, err := caddyfile.UnmarshalModule(d, "agcluster.providers.vercel")
	require.NoError(t, err)
	m, ok := unm.(*Module)
	require.True(t, ok, "%T", unm)
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
			assert.ElementsMatch(t, []string{"sleep", "events", "expiry", "ping"}, providers.Capabilities(p))
			o := p.(*Provider).Options()
			assert.Equal(t, "https://vercel.com/api", o.APIURL)
			assert.Equal(t, DefaultVCPUs, o.VCPUs)
			assert.Equal(t, DefaultTimeout, time.Duration(o.Timeout))
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	valid := Options{Token: "t", ProjectID: "prj", AgentBinary: "/a", ClaudeBinary: "/c"}
	for _, tc := range []struct {
		name    string
		change  func(o *Options)
		wantErr []string
	}{
		{"valid", func(*Options) {}, nil},
		{"a snapshot instead of binaries", func(o *Options) { o.Snapshot, o.AgentBinary, o.ClaudeBinary = "snap_1", "", "" }, nil},
		{"the CLI from npm", func(o *Options) { o.ClaudeBinary, o.ClaudeVersion = "", "2.1.328" }, nil},
		{"nothing set", func(o *Options) { *o = Options{} },
			[]string{"token is required", "project_id is required", "agent_binary is required", "claude_binary or claude_version is required"}},
		{"both CLI sources", func(o *Options) { o.ClaudeVersion = "2.1.328" }, []string{"claude_binary and claude_version: give one"}},
		{"a snapshot and binaries", func(o *Options) { o.Snapshot = "snap_1" }, []string{"snapshot is prepared already"}},
		{"api key in env", func(o *Options) { o.Env = map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"} }, []string{"ANTHROPIC_API_KEY is refused"}},
		{"reserved env", func(o *Options) { o.Env = map[string]string{"AGENT_TOKEN": "x"} }, []string{"AGENT_TOKEN is set by the provider"}},
		{"too many vcpus", func(o *Options) { o.VCPUs = 9 }, []string{"vcpus 9"}},
		{"timeout too short", func(o *Options) { o.Timeout = caddy.Duration(time.Second) }, []string{"timeout 1s: want at least 10s"}},
		{"short agent secret", func(o *Options) { o.AgentSecret = "short" }, []string{"agent_secret: want at least 32 characters"}},
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
