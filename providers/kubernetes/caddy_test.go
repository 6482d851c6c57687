package kubernetes

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/caddytest"
)

func TestModuleCaddyfile(t *testing.T) {
	caddytest.Unmarshal(t, func() *Module { return new(Module) }, []caddytest.Case{
		{Name: "bare", Input: "kubernetes", WantJSON: `{}`},
		{
			Name: "the issue's block",
			Input: "kubernetes {\n kubeconfig /etc/agcluster/kubeconfig\n context prod\n namespace agents\n image registry.example.com/agent:v1\n" +
				" image_pull_policy IfNotPresent\n image_pull_secret regcred\n image_pull_secret other\n runtime_class gvisor\n storage_class fast\n" +
				" workspace_size 5Gi\n reach port_forward\n cpus 2\n memory 2Gi\n node_selector pool agents\n node_selector zone a\n" +
				" env A b\n env C d\n ready_timeout 3m\n}",
			WantJSON: `{"kubeconfig":"/etc/agcluster/kubeconfig","context":"prod","namespace":"agents","image":"registry.example.com/agent:v1",
				"image_pull_policy":"IfNotPresent","image_pull_secrets":["regcred","other"],"runtime_class":"gvisor","storage_class":"fast",
				"workspace_size":"5Gi","reach":"port_forward","cpus":"2","memory":"2Gi","node_selector":{"pool":"agents","zone":"a"},
				"env":{"A":"b","C":"d"},"ready_timeout":180000000000}`,
		},
		{
			Name:     "network policy by pods",
			Input:    "kubernetes {\n network_policy {\n  from_pods app=caddy tier=edge\n  from_namespace gateway\n }\n}",
			WantJSON: `{"network_policy":{"from_pods":{"app":"caddy","tier":"edge"},"from_namespace":"gateway"}}`,
		},
		{
			Name:     "network policy by addresses",
			Input:    "kubernetes {\n network_policy {\n  from_cidr 10.0.0.0/24 10.1.0.0/24\n  from_cidr 192.168.1.5/32\n }\n}",
			WantJSON: `{"network_policy":{"from_cidrs":["10.0.0.0/24","10.1.0.0/24","192.168.1.5/32"]}}`,
		},
		{Name: "argument on the kind", Input: "kubernetes extra", WantErr: "wrong argument count"},
		{Name: "unknown subdirective", Input: "kubernetes {\n gpus 1\n}", WantErr: `unknown kubernetes provider subdirective "gpus"`},
		{Name: "duplicate option", Input: "kubernetes {\n image a\n image b\n}", WantErr: "image already specified"},
		{Name: "duplicate env", Input: "kubernetes {\n env A 1\n env A 2\n}", WantErr: "env A already specified"},
		{Name: "duplicate node selector", Input: "kubernetes {\n node_selector a 1\n node_selector a 2\n}", WantErr: "node_selector a already specified"},
		{Name: "image without value", Input: "kubernetes {\n image\n}", WantErr: "wrong argument count"},
		{Name: "reach with two values", Input: "kubernetes {\n reach pod_ip port_forward\n}", WantErr: "wrong argument count"},
		{Name: "zero ready timeout", Input: "kubernetes {\n ready_timeout 0s\n}", WantErr: `ready_timeout "0s"`},
		{Name: "network policy with an argument", Input: "kubernetes {\n network_policy on\n}", WantErr: "wrong argument count"},
		{Name: "from_pods without =", Input: "kubernetes {\n network_policy {\n  from_pods caddy\n }\n}", WantErr: `from_pods "caddy": want <key>=<value>`},
		{Name: "from_pods empty", Input: "kubernetes {\n network_policy {\n  from_pods\n }\n}", WantErr: "wrong argument count"},
		{Name: "unknown network policy subdirective", Input: "kubernetes {\n network_policy {\n  egress none\n }\n}", WantErr: `unknown network_policy subdirective "egress"`},
	})
}

// TestModuleLoadsLikeTheApp: the app hands the registered module a
// dispenser positioned at the kind token.
func TestModuleLoadsLikeTheApp(t *testing.T) {
	m := caddytest.LoadModule[*Module](t, "agcluster.providers.kubernetes", "kubernetes {\n image agent:v1\n}")
	assert.Equal(t, "agent:v1", m.Image)
}

// kubeconfig writes a kubeconfig for a cluster at server (never
// contacted) with two contexts, and returns its path.
func kubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "` + server + `"}
- name: other
  cluster: {server: "https://other.example:6443"}
users:
- name: u
  user: {token: "kube-test-token"}
contexts:
- name: main
  context: {cluster: c, user: u}
- name: second
  context: {cluster: other, user: u}
current-context: main
`
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

func TestModuleProvisionAndValidate(t *testing.T) {
	path := kubeconfig(t, "https://127.0.0.1:6443")
	t.Setenv("AGCLUSTER_TEST_KUBECONFIG", path)
	t.Setenv("AGCLUSTER_TEST_URL", "http://mock:8080")
	env := map[string]string{"ANTHROPIC_BASE_URL": "{env.AGCLUSTER_TEST_URL}"}
	m := &Module{Options: Options{Kubeconfig: "{env.AGCLUSTER_TEST_KUBECONFIG}", Image: "agent:v1", Env: env}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	require.NoError(t, m.Provision(ctx))
	assert.Equal(t, path, m.Kubeconfig)
	assert.Equal(t, "http://mock:8080", m.Env["ANTHROPIC_BASE_URL"])
	assert.Equal(t, "{env.AGCLUSTER_TEST_URL}", env["ANTHROPIC_BASE_URL"], "the decoded map is not changed in place")
	require.NoError(t, m.Validate())

	for _, tc := range []struct{ name, want string }{{"kubernetes", "kubernetes"}, {"k8s-gpu", "k8s-gpu"}, {"", "kubernetes"}} {
		t.Run("NewProvider "+tc.name, func(t *testing.T) {
			p, err := m.NewProvider(tc.name, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			assert.Equal(t, tc.want, p.Name())
			assert.Equal(t, "kubernetes", p.Kind())
			o := p.(*Provider).Options()
			assert.Equal(t, DefaultNamespace, o.Namespace)
			assert.Equal(t, ReachPortForward, o.Reach, "outside the cluster, reach defaults to port_forward")
			assert.Equal(t, DefaultMemory, o.Memory)
			assert.Equal(t, "https://127.0.0.1:6443", p.(*Provider).cfg.Host)
		})
	}
}

func TestKubeconfigContext(t *testing.T) {
	path := kubeconfig(t, "https://127.0.0.1:6443")
	p, err := New(Options{Kubeconfig: path, Context: "second", Image: "agent:v1", Reach: ReachPodIP}, nil)
	require.NoError(t, err)
	assert.Equal(t, "https://other.example:6443", p.cfg.Host)
	assert.Equal(t, ReachPodIP, p.Options().Reach, "an explicit reach is kept")

	_, err = New(Options{Kubeconfig: path, Context: "missing", Image: "agent:v1"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing")

	_, err = New(Options{Kubeconfig: filepath.Join(t.TempDir(), "none"), Image: "agent:v1"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no client configuration from")
}

func TestOptionsValidate(t *testing.T) {
	valid := Options{Image: "agent:v1"}
	check := func(o Options) error { _, err := o.normalize(); return err }
	newProvider := func(o Options) (*Provider, error) { return New(o, nil) }
	caddytest.Validate(t, valid, check, newProvider, []caddytest.OptionsCase[Options]{
		{Name: "valid", Change: func(*Options) {}},
		{Name: "every option", Change: func(o *Options) {
			*o = Options{Name: "k8s.gpu_1", Namespace: "agents", Image: "agent:v1", ImagePullPolicy: "Never", ImagePullSecrets: []string{"regcred"},
				RuntimeClass: "gvisor", StorageClass: "fast-ssd", WorkspaceSize: "10Gi", Reach: ReachPodIP, CPUs: "500m", Memory: "512Mi",
				NodeSelector: map[string]string{"kubernetes.io/arch": "amd64"}, NetworkPolicy: &NetworkPolicy{FromPods: map[string]string{"app": "caddy"}, FromNamespace: "edge"}}
		}},
		{Name: "nothing set", Change: func(o *Options) { *o = Options{} }, WantErr: []string{"image is required"}},
		{Name: "name not a label value", Change: func(o *Options) { o.Name = "my provider" }, WantErr: []string{`provider name "my provider"`}},
		{Name: "bad namespace", Change: func(o *Options) { o.Namespace = "Agents" }, WantErr: []string{`namespace "Agents"`}},
		{Name: "bad pull policy", Change: func(o *Options) { o.ImagePullPolicy = "Sometimes" }, WantErr: []string{`image_pull_policy "Sometimes"`}},
		{Name: "bad reach", Change: func(o *Options) { o.Reach = "ingress" }, WantErr: []string{`reach "ingress"`}},
		{Name: "bad sizes", Change: func(o *Options) { o.WorkspaceSize, o.CPUs, o.Memory = "lots", "-1", "0" },
			WantErr: []string{`workspace_size "lots"`, `cpus "-1"`, `memory "0"`}},
		{Name: "bad storage class", Change: func(o *Options) { o.StorageClass = "Fast_SSD" }, WantErr: []string{`name "Fast_SSD"`}},
		{Name: "bad node selector", Change: func(o *Options) { o.NodeSelector = map[string]string{"zone": "a b"} }, WantErr: []string{"node_selector zone=a b"}},
		{Name: "api key in env", Change: func(o *Options) { o.Env = map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"} }, WantErr: []string{"ANTHROPIC_API_KEY is refused"}},
		{Name: "reserved env", Change: func(o *Options) { o.Env = map[string]string{"AGENT_STATE_DIR": "/x"} }, WantErr: []string{"AGENT_STATE_DIR is set by the provider"}},
		{Name: "empty network policy", Change: func(o *Options) { o.NetworkPolicy = &NetworkPolicy{} }, WantErr: []string{"name the gateway's pods"}},
		{Name: "network policy namespace without pods", Change: func(o *Options) {
			o.NetworkPolicy = &NetworkPolicy{FromNamespace: "edge", FromCIDRs: []string{"10.0.0.0/8"}}
		},
			WantErr: []string{"from_namespace needs from_pods"}},
		{Name: "bad cidr", Change: func(o *Options) { o.NetworkPolicy = &NetworkPolicy{FromCIDRs: []string{"10.0.0.300/8"}} }, WantErr: []string{`from_cidr "10.0.0.300/8"`}},
		{Name: "negative ready timeout", Change: func(o *Options) { o.ReadyTimeout = -1 }, WantErr: []string{"ready_timeout must not be negative"}},
	})
}
