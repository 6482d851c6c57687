package docker

import (
	"encoding/json"
	"testing"
	"time"

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
		{name: "bare", input: "docker", wantJSON: `{}`},
		{name: "empty block", input: "docker {\n}", wantJSON: `{}`},
		{
			name: "every subdirective",
			input: "docker {\n image x:1\n memory 512m\n cpus 0.5\n pids 64\n env A b\n env C d\n reach_by_container_ip\n network n\n" +
				" isolated_network iso\n ready_timeout 2s\n label team x\n host unix:///run/d.sock\n publish_host 0.0.0.0\n tmp_size 64m\n home_size 32m\n}",
			wantJSON: `{"image":"x:1","memory_bytes":536870912,"nano_cpus":500000000,"pids":64,"env":{"A":"b","C":"d"},
				"reach_by_container_ip":true,"network":"n","isolated_network":"iso","ready_timeout":2000000000,"extra_labels":{"team":"x"},
				"host":"unix:///run/d.sock","publish_host":"0.0.0.0","tmp_size":"64m","home_size":"32m"}`,
		},
		{name: "isolated network none", input: "docker {\n isolated_network none\n}", wantJSON: `{"isolated_network":"none"}`},
		{name: "ready timeout in days", input: "docker {\n ready_timeout 1d\n}", wantJSON: `{"ready_timeout":86400000000000}`},
		{name: "argument on the kind", input: "docker extra", wantErr: "wrong argument count"},
		{name: "unknown subdirective", input: "docker {\n gpus 1\n}", wantErr: `unknown docker provider subdirective "gpus"`},
		{name: "bad memory", input: "docker {\n memory lots\n}", wantErr: `memory "lots": want a size`},
		{name: "zero memory", input: "docker {\n memory 0\n}", wantErr: `memory "0"`},
		{name: "bad cpus", input: "docker {\n cpus -1\n}", wantErr: `cpus "-1": want a positive number`},
		{name: "bad pids", input: "docker {\n pids 1.5\n}", wantErr: `pids "1.5": want a positive whole number`},
		{name: "bad ready timeout", input: "docker {\n ready_timeout soon\n}", wantErr: `ready_timeout "soon": want a duration`},
		{name: "zero ready timeout", input: "docker {\n ready_timeout 0s\n}", wantErr: `ready_timeout "0s"`},
		{name: "duplicate env", input: "docker {\n env A 1\n env A 2\n}", wantErr: "env A already specified"},
		{name: "duplicate label", input: "docker {\n label k 1\n label k 2\n}", wantErr: "label k already specified"},
		{name: "duplicate option", input: "docker {\n image a\n image b\n}", wantErr: "image already specified"},
		{name: "image without value", input: "docker {\n image\n}", wantErr: "wrong argument count"},
		{name: "image with two values", input: "docker {\n image a b\n}", wantErr: "wrong argument count"},
		{name: "env without value", input: "docker {\n env A\n}", wantErr: "wrong argument count"},
		{name: "flag with a value", input: "docker {\n reach_by_container_ip yes\n}", wantErr: "wrong argument count"},
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
	d := caddyfile.NewTestDispenser("docker {\n image x:1\n}")
	require.True(t, d.Next())
	unm, err := caddyfile.UnmarshalModule(d, "agcluster.providers.docker")
	require.NoError(t, err)
	m, ok := unm.(*Module)
	require.True(t, ok, "%T", unm)
	assert.Equal(t, "x:1", m.Image)
}

func TestModuleJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
		want caddy.Duration
	}{
		{"nanoseconds", `{"ready_timeout":2000000000}`, caddy.Duration(2 * time.Second)},
		{"duration string", `{"ready_timeout":"2s"}`, caddy.Duration(2 * time.Second)},
		{"absent", `{}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Module
			require.NoError(t, json.Unmarshal([]byte(tc.json), &m))
			assert.Equal(t, tc.want, m.ReadyTimeout)
		})
	}
	t.Run("name is not a field", func(t *testing.T) {
		got, err := json.Marshal(Module{Options: Options{Name: "x", Image: "i"}})
		require.NoError(t, err)
		assert.JSONEq(t, `{"image":"i"}`, string(got))
	})
}

func TestModuleProvision(t *testing.T) {
	t.Setenv("AGCLUSTER_TEST_HOST", "tcp://127.0.0.1:2375")
	t.Setenv("AGCLUSTER_TEST_URL", "http://mock:8080")
	env := map[string]string{"ANTHROPIC_BASE_URL": "{env.AGCLUSTER_TEST_URL}"}
	m := &Module{Options: Options{Host: "{env.AGCLUSTER_TEST_HOST}", Env: env}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	require.NoError(t, m.Provision(ctx))
	assert.Equal(t, "tcp://127.0.0.1:2375", m.Host)
	assert.Equal(t, "http://mock:8080", m.Env["ANTHROPIC_BASE_URL"])
	assert.Equal(t, "{env.AGCLUSTER_TEST_URL}", env["ANTHROPIC_BASE_URL"], "the decoded map is not changed in place")
	require.NoError(t, m.Validate())

	for _, tc := range []struct{ name, want string }{{"docker", "docker"}, {"gpu", "gpu"}, {"", "docker"}} {
		t.Run("NewProvider "+tc.name, func(t *testing.T) {
			p, err := m.NewProvider(tc.name, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			assert.Equal(t, tc.want, p.Name())
			assert.Equal(t, "docker", p.Kind())
			assert.Equal(t, "tcp://127.0.0.1:2375", p.(*Provider).Options().Host)
		})
	}
}

func TestModuleValidate(t *testing.T) {
	m := &Module{Options: Options{Env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"}, Pids: -1}}
	err := m.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ANTHROPIC_API_KEY is refused")
	assert.Contains(t, err.Error(), "must not be negative")
	assert.NotContains(t, err.Error(), "sk-ant-x")
	p, err := m.NewProvider("docker", nil)
	require.Error(t, err)
	assert.Nil(t, p, "no typed nil in the interface")
}
