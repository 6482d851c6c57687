package docker

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

func TestNewDefaults(t *testing.T) {
	p, err := New(Options{}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	assert.Equal(t, Options{
		Name:            "docker",
		IsolatedNetwork: DefaultIsolatedNetwork,
		Image:           "agcluster/agent:latest",
		MemoryBytes:     1 << 30,
		NanoCPUs:        1e9,
		Pids:            256,
		TmpSize:         "256m",
		HomeSize:        "256m",
		PublishHost:     "127.0.0.1",
		ReadyTimeout:    caddy.Duration(60 * time.Second),
	}, p.Options())
	assert.Equal(t, "docker", p.Name())
	assert.Equal(t, "docker", p.Kind())

	named, err := New(Options{Name: "second"}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = named.Close() })
	assert.Equal(t, "second", named.Name())
	assert.Equal(t, "docker", named.Kind())
	assert.Equal(t, "second", named.labels(providers.Spec{}, volumes{})[LabelProvider])
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"api key in env", Options{Env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"}}, "ANTHROPIC_API_KEY is refused"},
		{"auth token in env", Options{Env: map[string]string{"ANTHROPIC_AUTH_TOKEN": "x"}}, "ANTHROPIC_AUTH_TOKEN is refused"},
		{"api key in any case", Options{Env: map[string]string{"anthropic_api_key": "x"}}, "anthropic_api_key is refused"},
		{"reserved env", Options{Env: map[string]string{"AGENT_TOKEN": "x"}}, "AGENT_TOKEN is set by the provider"},
		{"state dir env", Options{Env: map[string]string{"AGENT_STATE_DIR": "/tmp"}}, "AGENT_STATE_DIR is set by the provider"},
		{"bad env name", Options{Env: map[string]string{"A=B": "x"}}, "invalid variable name"},
		{"tmp size injection", Options{TmpSize: "64m,exec"}, `tmp_size "64m,exec"`},
		{"home size", Options{HomeSize: "lots"}, `home_size "lots"`},
		{"publish host", Options{PublishHost: "localhost"}, `publish_host "localhost"`},
		{"container ip without network", Options{ReachByContainerIP: true}, "reach_by_container_ip needs network"},
		{"negative limit", Options{Pids: -1}, "must not be negative"},
		{"own label", Options{ExtraLabels: map[string]string{LabelSession: "x"}}, "is set by the provider"},
		{"bad host", Options{Host: "nonsense://"}, "client for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.opts, nil)
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "sk-ant-x", "values are never echoed")
		})
	}
}

func TestNewDoesNotContactTheEngine(t *testing.T) {
	start := time.Now()
	p, err := New(Options{Host: "tcp://192.0.2.1:2375"}, nil) // TEST-NET-1: never answers
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	assert.Less(t, time.Since(start), time.Second, "a dial to that address would hang for 30s")
}

func TestContainerName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
	for _, tc := range []struct{ provider, session, want string }{
		{"docker", "sess_abc-123", "agcluster-docker-sess_abc-123"},
		{"gpu", "user@example.com/chat 1", "agcluster-gpu-user-example.com-chat-1"},
		{"docker", "", "agcluster-docker-x"},
		{"docker", "///", "agcluster-docker-x"},
		{"docker", "héllo", "agcluster-docker-h-llo"},
		{"docker", strings.Repeat("x", 100), "agcluster-docker-" + strings.Repeat("x", 40)},
	} {
		t.Run(tc.session, func(t *testing.T) {
			name := sessionContainerName(tc.provider, tc.session)
			assert.True(t, valid.MatchString(name), name)
			assert.Equal(t, tc.want, name, "the same name on every gateway")
		})
	}
	pool := poolContainerName("docker", "default/a")
	assert.True(t, valid.MatchString(pool), pool)
	assert.True(t, strings.HasPrefix(pool, "agcluster-docker-pool-default-a-"), pool)
	assert.NotEqual(t, pool, poolContainerName("docker", "default/a"), "pool names are randomised")
}

// TestContainerConfig checks the hardened definition without an engine;
// the integration tests check what the engine makes of it.
func TestContainerConfig(t *testing.T) {
	p, err := New(Options{
		Env:         map[string]string{"ANTHROPIC_BASE_URL": "http://mock:8080", "A": "options"},
		ExtraLabels: map[string]string{"team": "x"},
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	spec := providers.Spec{SessionID: "s1", Owner: "o1", ConfigID: "c1", Conversation: "conv1", Env: map[string]string{"A": "spec"},
		Limits: providers.Limits{Pids: 64}}
	vols := volumes{workspace: "agcluster-ws-1", state: "agcluster-state-1"}
	labels := p.labels(spec, vols)
	cfg, host, netCfg := p.containerConfig(spec, "img", "tok", []byte(`{"id":"c1"}`), vols, labels)

	assert.Equal(t, "img", cfg.Image)
	assert.Empty(t, cfg.User, "the image's non-root user is kept")
	assert.Equal(t, []string{"A=spec", "ANTHROPIC_BASE_URL=http://mock:8080", `AGENT_CONFIG={"id":"c1"}`, "AGENT_TOKEN=tok", "AGENT_STATE_DIR=/state"}, cfg.Env)
	assert.Equal(t, map[string]string{
		LabelManaged: "true", LabelProvider: "docker", LabelSession: "s1", LabelOwner: "o1",
		LabelConfig: "c1", LabelConversation: "conv1", LabelVolume: "agcluster-ws-1", LabelStateVolume: "agcluster-state-1", "team": "x",
	}, cfg.Labels)
	assert.Equal(t, []mount.Mount{
		{Type: mount.TypeVolume, Source: "agcluster-ws-1", Target: "/workspace"},
		{Type: mount.TypeVolume, Source: "agcluster-state-1", Target: "/state"},
	}, host.Mounts)
	assert.Equal(t, []string{"ALL"}, []string(host.CapDrop))
	assert.Equal(t, []string{"no-new-privileges:true"}, host.SecurityOpt)
	assert.True(t, host.ReadonlyRootfs)
	assert.False(t, host.Privileged)
	assert.Nil(t, host.Init)
	assert.Empty(t, host.Binds)
	assert.Equal(t, container.NetworkMode(DefaultIsolatedNetwork), host.NetworkMode, "the isolated network by default")
	assert.Contains(t, netCfg.EndpointsConfig, DefaultIsolatedNetwork)
	assert.Equal(t, nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1", HostPort: ""}}}, host.PortBindings)
	assert.Equal(t, map[string]string{
		"/tmp":        "rw,nosuid,nodev,size=256m",
		"/home/agent": "rw,nosuid,nodev,size=256m,uid=1000,gid=1000,mode=0700",
	}, host.Tmpfs)
	assert.Equal(t, int64(1<<30), host.Memory)
	assert.Equal(t, int64(1e9), host.NanoCPUs)
	require.NotNil(t, host.PidsLimit)
	assert.Equal(t, int64(64), *host.PidsLimit)

	onNet, err := New(Options{Network: "agents", ReachByContainerIP: true}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = onNet.Close() })
	_, host, netCfg = onNet.containerConfig(spec, "img", "tok", []byte(`{}`), vols, nil)
	assert.Equal(t, "agents", string(host.NetworkMode))
	require.NotNil(t, netCfg)
	assert.Contains(t, netCfg.EndpointsConfig, "agents")
	assert.Empty(t, host.PortBindings, "nothing is published when agents are reached by container IP")
}

func TestCreateRefusesBeforeContactingTheEngine(t *testing.T) {
	// The engine address never answers: a refusal must come first.
	p, err := New(Options{Host: "tcp://127.0.0.1:1"}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	for _, tc := range []struct {
		name string
		spec providers.Spec
		want string
	}{
		{"api key", providers.Spec{SessionID: "s", Env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-secret"}}, "ANTHROPIC_API_KEY is refused"},
		{"auth token", providers.Spec{SessionID: "s", Env: map[string]string{"ANTHROPIC_AUTH_TOKEN": "sk-ant-secret"}}, "ANTHROPIC_AUTH_TOKEN is refused"},
		{"reserved", providers.Spec{SessionID: "s", Env: map[string]string{"AGENT_ADDR": ":1"}}, "AGENT_ADDR is set by the provider"},
		{"invalid config", providers.Spec{SessionID: "s", Config: &agent.Config{ID: "Bad ID"}}, "agent config: id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst, err := p.Create(t.Context(), tc.spec)
			require.Error(t, err)
			assert.Nil(t, inst)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "sk-ant-secret")
			assert.NotErrorIs(t, err, providers.ErrUnavailable, "refused before any engine call")
		})
	}
}
