package docker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/caddytest"
)

func TestModuleCaddyfile(t *testing.T) {
	caddytest.Unmarshal(t, func() *Module { return new(Module) }, []caddytest.Case{
		{Name: "bare", Input: "docker", WantJSON: `{}`},
		{Name: "empty block", Input: "docker {\n}", WantJSON: `{}`},
		{
			Name: "every subdirective",
			Input: "docker {\n image x:1\n memory 512m\n cpus 0.5\n pids 64\n env A b\n env C d\n reach_by_container_ip\n network n\n" +
				" isolated_network iso\n ready_timeout 2s\n label team x\n host unix:///run/d.sock\n publish_host 0.0.0.0\n tmp_size 64m\n home_size 32m\n}",
			WantJSON: `{"image":"x:1","memory_bytes":536870912,"nano_cpus":500000000,"pids":64,"env":{"A":"b","C":"d"},
				"reach_by_container_ip":true,"network":"n","isolated_network":"iso","ready_timeout":2000000000,"extra_labels":{"team":"x"},
				"host":"unix:///run/d.sock","publish_host":"0.0.0.0","tmp_size":"64m","home_size":"32m"}`,
		},
		{Name: "isolated network none", Input: "docker {\n isolated_network none\n}", WantJSON: `{"isolated_network":"none"}`},
		{Name: "ready timeout in days", Input: "docker {\n ready_timeout 1d\n}", WantJSON: `{"ready_timeout":86400000000000}`},
		{Name: "argument on the kind", Input: "docker extra", WantErr: "wrong argument count"},
		{Name: "unknown subdirective", Input: "docker {\n gpus 1\n}", WantErr: `unknown docker provider subdirective "gpus"`},
		{Name: "bad memory", Input: "docker {\n memory lots\n}", WantErr: `memory "lots": want a size`},
		{Name: "zero memory", Input: "docker {\n memory 0\n}", WantErr: `memory "0"`},
		{Name: "bad cpus", Input: "docker {\n cpus -1\n}", WantErr: `cpus "-1": want a positive number`},
		{Name: "bad pids", Input: "docker {\n pids 1.5\n}", WantErr: `pids "1.5": want a positive whole number`},
		{Name: "bad ready timeout", Input: "docker {\n ready_timeout soon\n}", WantErr: `ready_timeout "soon": want a duration`},
		{Name: "zero ready timeout", Input: "docker {\n ready_timeout 0s\n}", WantErr: `ready_timeout "0s"`},
		{Name: "duplicate env", Input: "docker {\n env A 1\n env A 2\n}", WantErr: "env A already specified"},
		{Name: "duplicate label", Input: "docker {\n label k 1\n label k 2\n}", WantErr: "label k already specified"},
		{Name: "duplicate option", Input: "docker {\n image a\n image b\n}", WantErr: "image already specified"},
		{Name: "image without value", Input: "docker {\n image\n}", WantErr: "wrong argument count"},
		{Name: "image with two values", Input: "docker {\n image a b\n}", WantErr: "wrong argument count"},
		{Name: "env without value", Input: "docker {\n env A\n}", WantErr: "wrong argument count"},
		{Name: "flag with a value", Input: "docker {\n reach_by_container_ip yes\n}", WantErr: "wrong argument count"},
	})
}

// TestModuleLoadsLikeTheApp: the app hands the registered module a
// dispenser positioned at the kind token.
func TestModuleLoadsLikeTheApp(t *testing.T) {
	m := caddytest.LoadModule[*Module](t, "agcluster.providers.docker", "docker {\n image x:1\n}")
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
