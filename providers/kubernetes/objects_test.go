package kubernetes

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// offline is a provider whose cluster is never contacted: the builders
// only read its options.
func offline(t *testing.T, change func(o *Options)) *Provider {
	t.Helper()
	o := Options{Kubeconfig: kubeconfig(t, "https://127.0.0.1:1"), Image: "agcluster/agent:v1", Env: map[string]string{"ANTHROPIC_BASE_URL": "http://mock:8080"}}
	if change != nil {
		change(&o)
	}
	p, err := New(o, nil)
	require.NoError(t, err)
	return p
}

func testSpec() providers.Spec {
	return providers.Spec{
		SessionID:    "sess_Ab3/xyz+42",
		Owner:        strings.Repeat("ab", 32),
		Conversation: "conv with spaces & symbols: more than sixty-three characters of text, surely",
		ConfigID:     "default@2",
		Config:       &agent.Config{ID: "default"},
		Env:          map[string]string{"EXTRA": "1"},
	}
}

// TestPodSpecSecurity: the built pod runs hardened, as the image's agent
// user, with the token from the Secret and no key anywhere.
func TestPodSpecSecurity(t *testing.T) {
	p := offline(t, nil)
	spec := testSpec()
	name := p.instanceName(spec)
	ps := p.podSpec(spec, name, []byte(`{"id":"default"}`))

	assert.Equal(t, corev1.RestartPolicyNever, ps.RestartPolicy)
	require.NotNil(t, ps.AutomountServiceAccountToken)
	assert.False(t, *ps.AutomountServiceAccountToken, "automountServiceAccountToken")
	require.NotNil(t, ps.EnableServiceLinks)
	assert.False(t, *ps.EnableServiceLinks, "enableServiceLinks")
	require.NotNil(t, ps.TerminationGracePeriodSeconds)
	assert.LessOrEqual(t, *ps.TerminationGracePeriodSeconds, int64(10))

	sc := ps.SecurityContext
	require.NotNil(t, sc)
	assert.True(t, *sc.RunAsNonRoot, "pod runAsNonRoot")
	assert.Equal(t, int64(agentUID), *sc.RunAsUser, "runAsUser: the image's agent user")
	assert.Equal(t, int64(agentUID), *sc.RunAsGroup)
	assert.Equal(t, int64(agentUID), *sc.FSGroup, "fsGroup: the claim is writable by the agent")
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)

	require.Len(t, ps.Containers, 1)
	c := ps.Containers[0]
	assert.Equal(t, "agcluster/agent:v1", c.Image)
	csc := c.SecurityContext
	require.NotNil(t, csc)
	assert.False(t, *csc.AllowPrivilegeEscalation, "allowPrivilegeEscalation")
	assert.False(t, *csc.Privileged, "privileged")
	assert.True(t, *csc.ReadOnlyRootFilesystem, "readOnlyRootFilesystem")
	assert.True(t, *csc.RunAsNonRoot)
	assert.Equal(t, []corev1.Capability{"ALL"}, csc.Capabilities.Drop)
	assert.Empty(t, csc.Capabilities.Add)

	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.ReadinessProbe.HTTPGet)
	assert.True(t, strings.HasPrefix(c.ReadinessProbe.HTTPGet.Path, "/health"), c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, int32(agentPort), c.ReadinessProbe.HTTPGet.Port.IntVal)
	assert.Greater(t, c.ReadinessProbe.TimeoutSeconds, int32(4), "the probe outlasts the agent's ?wait=4s")

	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	assert.Equal(t, corev1.VolumeMount{Name: claimVolume, MountPath: "/workspace", SubPath: "workspace"}, mounts["/workspace"])
	assert.Equal(t, corev1.VolumeMount{Name: claimVolume, MountPath: "/state", SubPath: "state"}, mounts["/state"])
	for _, dir := range []string{"/tmp", "/home/agent"} {
		m, ok := mounts[dir]
		require.True(t, ok, "%s is mounted (the root file system is read-only)", dir)
		assert.NotNil(t, volume(ps, m.Name).EmptyDir, "%s is an emptyDir", dir)
		assert.NotNil(t, volume(ps, m.Name).EmptyDir.SizeLimit, "%s is bounded", dir)
	}
	assert.Equal(t, name, volume(ps, claimVolume).PersistentVolumeClaim.ClaimName)

	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	token := env[agent.EnvToken]
	assert.Empty(t, token.Value, "the token is no literal in the pod spec")
	require.NotNil(t, token.ValueFrom)
	require.NotNil(t, token.ValueFrom.SecretKeyRef)
	assert.Equal(t, name, token.ValueFrom.SecretKeyRef.Name)
	assert.Equal(t, tokenKey, token.ValueFrom.SecretKeyRef.Key)
	assert.Equal(t, "/state", env[agent.EnvStateDir].Value)
	assert.Equal(t, `{"id":"default"}`, env[agent.EnvConfig].Value)
	assert.Equal(t, "http://mock:8080", env["ANTHROPIC_BASE_URL"].Value, "the operator's env")
	assert.Equal(t, "1", env["EXTRA"].Value, "the spec's env")
	for _, e := range c.Env {
		assert.NotContains(t, providers.ForbiddenEnv, e.Name)
	}

	assert.Equal(t, "1", q(c.Resources.Limits, corev1.ResourceCPU))
	assert.Equal(t, "250m", q(c.Resources.Requests, corev1.ResourceCPU), "a quarter of the CPU is requested")
	assert.Equal(t, "1Gi", q(c.Resources.Limits, corev1.ResourceMemory))
	assert.Equal(t, "1Gi", q(c.Resources.Requests, corev1.ResourceMemory), "all of the memory is requested")
	assert.Nil(t, ps.RuntimeClassName)
}

func volume(ps corev1.PodSpec, name string) corev1.VolumeSource {
	for _, v := range ps.Volumes {
		if v.Name == name {
			return v.VolumeSource
		}
	}
	return corev1.VolumeSource{}
}

func q(l corev1.ResourceList, name corev1.ResourceName) string {
	v := l[name]
	return v.String()
}

// TestPodSpecOptions: the operator's settings and a spec's limits reach
// the pod.
func TestPodSpecOptions(t *testing.T) {
	p := offline(t, func(o *Options) {
		o.ImagePullPolicy, o.RuntimeClass, o.CPUs, o.Memory = "Never", "gvisor", "2", "3Gi"
		o.NodeSelector = map[string]string{"pool": "agents"}
		o.ImagePullSecrets = []string{"regcred"}
	})
	spec := testSpec()
	ps := p.podSpec(spec, p.instanceName(spec), []byte("{}"))
	c := ps.Containers[0]
	assert.Equal(t, corev1.PullNever, c.ImagePullPolicy)
	assert.Equal(t, "gvisor", *ps.RuntimeClassName)
	assert.Equal(t, map[string]string{"pool": "agents"}, ps.NodeSelector)
	assert.Equal(t, []corev1.LocalObjectReference{{Name: "regcred"}}, ps.ImagePullSecrets)
	assert.Equal(t, "2", q(c.Resources.Limits, corev1.ResourceCPU))
	assert.Equal(t, "500m", q(c.Resources.Requests, corev1.ResourceCPU))
	assert.Equal(t, "3Gi", q(c.Resources.Limits, corev1.ResourceMemory))

	spec.Limits = providers.Limits{NanoCPUs: 1_500_000_000, MemoryBytes: 512 << 20, Pids: 100}
	spec.Image = "agcluster/agent:v2"
	c = p.podSpec(spec, "x", []byte("{}")).Containers[0]
	assert.Equal(t, "agcluster/agent:v2", c.Image, "the spec's image")
	assert.Equal(t, "1500m", q(c.Resources.Limits, corev1.ResourceCPU))
	assert.Equal(t, "375m", q(c.Resources.Requests, corev1.ResourceCPU))
	assert.Equal(t, "512Mi", q(c.Resources.Limits, corev1.ResourceMemory))
}

// TestInstanceNames: names are deterministic per provider and session,
// valid DNS labels, distinct for distinct sessions and providers, and
// random for warm-pool agents.
func TestInstanceNames(t *testing.T) {
	p := offline(t, nil)
	other := offline(t, func(o *Options) { o.Name = "other" })
	ids := []string{"sess_abc", "sess_ABC", "sess-abc", "", "////", strings.Repeat("x", 300), "sess_Ab3/xyz+42"}
	seen := map[string]string{}
	for _, id := range ids {
		if id == "" {
			continue
		}
		spec := providers.Spec{SessionID: id}
		name := p.instanceName(spec)
		assert.Empty(t, validation.IsDNS1123Label(name), "%q -> %q", id, name)
		assert.Equal(t, name, p.instanceName(spec), "deterministic")
		assert.NotEqual(t, name, other.instanceName(spec), "another provider's name differs")
		prev, dup := seen[name]
		assert.False(t, dup, "%q and %q share %q", prev, id, name)
		seen[name] = id
	}
	assert.Equal(t, "agent-sess-abc-", p.instanceName(providers.Spec{SessionID: "sess_abc"})[:15], "readable")

	pool := providers.Spec{Pool: "default@x"}
	a, b := p.instanceName(pool), p.instanceName(pool)
	assert.NotEqual(t, a, b, "pool agents get random names")
	assert.Empty(t, validation.IsDNS1123Label(a))
}

// TestMetadata: labels carry only selector-safe values (however long or
// odd the identity), annotations the whole identity and nothing secret.
func TestMetadata(t *testing.T) {
	p := offline(t, nil)
	spec := testSpec()
	name := p.instanceName(spec)
	m := p.metaFor(name, spec.Identity(p.Name()))
	for k, v := range m.labels {
		assert.Empty(t, validation.IsQualifiedName(k), "label key %q", k)
		assert.Empty(t, validation.IsValidLabelValue(v), "label %s=%q", k, v)
	}
	assert.Equal(t, map[string]string{
		LabelManaged: "true", LabelProvider: "kubernetes", LabelInstance: name,
		LabelSessionHash: sessionHash(spec.SessionID), LabelAppName: "agcluster-agent",
	}, m.labels)
	assert.Equal(t, spec.Identity("kubernetes"), identityKeys.Identity(m.annotations), "the annotations read back as the identity")
	assert.True(t, p.owns(m.labels))

	pool := providers.Spec{ConfigID: "default", Pool: "default@x"}
	pm := p.metaFor("agent-pool-1", pool.Identity(p.Name()))
	assert.NotContains(t, pm.labels, LabelSessionHash, "an unbound agent has no session hash")
	assert.Equal(t, "default@x", pm.annotations[AnnotationPool])
}

// TestSecretAndClaim: the Secret holds the token and the pod spec, both
// belong to the claim; the claim asks for the workspace size.
func TestSecretAndClaim(t *testing.T) {
	p := offline(t, func(o *Options) { o.StorageClass, o.WorkspaceSize = "fast", "5Gi" })
	spec := testSpec()
	name := p.instanceName(spec)
	m := p.metaFor(name, spec.Identity(p.Name()))
	claim := p.claimFor(name, m)
	assert.Equal(t, "fast", *claim.Spec.StorageClassName)
	assert.Equal(t, resource.MustParse("5Gi"), claim.Spec.Resources.Requests[corev1.ResourceStorage])
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, claim.Spec.AccessModes)
	claim.UID = "claim-uid"

	ps := p.podSpec(spec, name, []byte("{}"))
	secret, err := p.secretFor(claim, m, "tok", ps)
	require.NoError(t, err)
	assert.Equal(t, "tok", string(secret.Data[tokenKey]))
	var back corev1.PodSpec
	require.NoError(t, json.Unmarshal(secret.Data[podSpecKey], &back))
	assert.Equal(t, ps.Containers[0].Env, back.Containers[0].Env, "the pod spec round-trips")
	pod := p.podFor(claim, m, ps)
	for _, om := range []struct {
		what string
		refs []string
	}{{"secret", []string{secret.OwnerReferences[0].Name, string(secret.OwnerReferences[0].UID)}}, {"pod", []string{pod.OwnerReferences[0].Name, string(pod.OwnerReferences[0].UID)}}} {
		assert.Equal(t, []string{name, "claim-uid"}, om.refs, "the %s belongs to the claim", om.what)
	}
	assert.Equal(t, "PersistentVolumeClaim", pod.OwnerReferences[0].Kind)
}

// TestNetworkPolicyObject: the policy selects this provider's agents and
// admits the agent port from the gateway only.
func TestNetworkPolicyObject(t *testing.T) {
	p := offline(t, func(o *Options) {
		o.NetworkPolicy = &NetworkPolicy{FromPods: map[string]string{"app": "caddy"}, FromNamespace: "edge", FromCIDRs: []string{"10.0.0.0/24"}}
	})
	np := p.networkPolicy()
	assert.Equal(t, "agcluster-agents-kubernetes", np.Name)
	assert.Equal(t, p.selectorLabels(), np.Spec.PodSelector.MatchLabels)
	assert.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, np.Spec.PolicyTypes)
	require.Len(t, np.Spec.Ingress, 1)
	in := np.Spec.Ingress[0]
	require.Len(t, in.Ports, 1)
	assert.Equal(t, int32(agentPort), in.Ports[0].Port.IntVal)
	require.Len(t, in.From, 2)
	assert.Equal(t, map[string]string{"app": "caddy"}, in.From[0].PodSelector.MatchLabels)
	assert.Equal(t, map[string]string{"kubernetes.io/metadata.name": "edge"}, in.From[0].NamespaceSelector.MatchLabels)
	assert.Equal(t, "10.0.0.0/24", in.From[1].IPBlock.CIDR)

	odd := offline(t, func(o *Options) {
		o.Name = "GPU_pool"
		o.NetworkPolicy = &NetworkPolicy{FromCIDRs: []string{"10.0.0.0/24"}}
	})
	assert.Empty(t, validation.IsDNS1123Subdomain(odd.networkPolicyName()), odd.networkPolicyName())
}
