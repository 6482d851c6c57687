package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/kubetest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// kubeEnv is the e2e environment with a namespace on the local cluster
// (scripts/kube-up.sh): the gateway runs as the ServiceAccount of the
// shipped RBAC, claims are served by local volumes, and the mock API
// (a container on loopback) is relayed onto the cluster's bridge, the only
// host address pods reach.
type kubeEnv struct {
	*env
	kube       *kubetest.Env
	kubeconfig string // the gateway's (the shipped Role)
	mockURL    string // the mock API as pods reach it
}

// setupKube prepares the namespace; when the test ends (after its gateways
// have shut down) nothing of the provider's may be left in it.
func setupKube(t testing.TB) *kubeEnv {
	t.Helper()
	return prepareKube(t, setup(t))
}

// prepareKube prepares a namespace beside e; see setupKube.
func prepareKube(t testing.TB, e *env) *kubeEnv {
	t.Helper()
	k := &kubeEnv{env: e, kube: kubetest.Prepare(t)}
	k.kubeconfig = k.kube.GatewayKubeconfig(t, "agcluster-caddy", "")
	target := strings.TrimPrefix(e.mock.BaseURL, "http://")
	k.mockURL = "http://" + testenv.Forward(t, kubetest.HostAddr()+":0", target)
	t.Cleanup(func() {
		// Deleted objects go once the kubelet has stopped their pod (a claim
		// in use keeps its protection finalizer until then).
		testenv.Eventually(t, time.Minute, func() bool { return len(k.objects(t)) == 0 },
			"objects left in the namespace after the gateways shut down: %v", k.objects(t))
	})
	return k
}

// gateway starts Caddy with the kubernetes provider block, Caddy
// outside the cluster: agents reached through the API server's
// port-forward, or at their pod IPs (the host routes to the bridge).
func (k *kubeEnv) gateway(t testing.TB, reach string, o gatewayOptions) *gateway {
	t.Helper()
	o.provider = fmt.Sprintf(`provider kubernetes {
			kubeconfig %s
			namespace %s
			image %s
			image_pull_policy Never
			storage_class %s
			workspace_size 64Mi
			reach %s
			cpus 1
			memory 1Gi
			env ANTHROPIC_BASE_URL %s
		}`, k.kubeconfig, k.kube.Namespace, testenv.AgentImage(), k.kube.StorageClass, reach, k.mockURL)
	return k.startGatewayWith(t, o)
}

// objects names the pods, claims and Secrets in the namespace (the
// ServiceAccount's token-less setup is not the provider's).
func (k *kubeEnv) objects(t testing.TB) []string {
	t.Helper()
	ctx := context.Background()
	core := k.kube.Admin.CoreV1()
	var out []string
	pods, err := core.Pods(k.kube.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, p := range pods.Items {
		out = append(out, "pod/"+p.Name)
	}
	claims, err := core.PersistentVolumeClaims(k.kube.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, c := range claims.Items {
		out = append(out, "claim/"+c.Name)
	}
	secrets, err := core.Secrets(k.kube.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, s := range secrets.Items {
		out = append(out, "secret/"+s.Name)
	}
	return out
}

// pod is the agent's pod, or nil when it has none (asleep).
func (k *kubeEnv) pod(t testing.TB, name string) *corev1.Pod {
	t.Helper()
	p, err := k.kube.Admin.CoreV1().Pods(k.kube.Namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return p
}

// pods counts the namespace's pods that are not being deleted.
func (k *kubeEnv) pods(t testing.TB) int {
	t.Helper()
	list, err := k.kube.Admin.CoreV1().Pods(k.kube.Namespace).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	n := 0
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			n++
		}
	}
	return n
}

// stored is everything the cluster keeps about the namespace's agents:
// pod specs, Secrets' data, every label and annotation.
func (k *kubeEnv) stored(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	core := k.kube.Admin.CoreV1()
	var b strings.Builder
	pods, err := core.Pods(k.kube.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "%v %v %+v\n", p.Labels, p.Annotations, p.Spec)
	}
	secrets, err := core.Secrets(k.kube.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, s := range secrets.Items {
		fmt.Fprintf(&b, "%v %v\n", s.Labels, s.Annotations)
		for name, v := range s.Data {
			fmt.Fprintf(&b, "%s=%s\n", name, v)
		}
	}
	claims, err := core.PersistentVolumeClaims(k.kube.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, c := range claims.Items {
		fmt.Fprintf(&b, "%v %v\n", c.Labels, c.Annotations)
	}
	return b.String()
}

// TestKubernetes runs conversations through Caddy on the local cluster,
// Caddy outside it (port_forward): streamed and whole answers, a Bash turn
// in the pod, a follow-up in the same pod, another key in another pod, a
// pod deleted behind the gateway's back, the pod's security settings as
// the API server has them, and no API key in anything the cluster stores.
func TestKubernetes(t *testing.T) {
	k := setupKube(t)
	g := k.gateway(t, "port_forward", gatewayOptions{})
	alice := &conversation{t: t, key: "sk-ant-test-kube-alice", id: "c-kube"}
	keys := []string{alice.key}

	t.Run("answers streamed and whole", func(t *testing.T) {
		assertAnswers(t, k.env, g, alice.key, "Kubernetes")
		assert.Equal(t, 2, k.pods(t), "one pod per conversation")
	})

	t.Run("a Bash turn runs in the pod", func(t *testing.T) {
		content := bashTurn(t, k.env, g, alice, "echo in-$(hostname)")
		pod := alice.session(g).AgentID
		assert.Contains(t, content, "1 2 3 in-"+pod, "the command ran in the conversation's pod")
	})

	t.Run("a follow-up goes to the same pod", func(t *testing.T) {
		before := k.pods(t)
		pod := k.pod(t, alice.session(g).AgentID)
		require.NotNil(t, pod)
		k.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Still here."}})
		assert.Equal(t, "Still here.", alice.say(g, "Are you there?"))
		after := k.pod(t, alice.session(g).AgentID)
		require.NotNil(t, after)
		assert.Equal(t, pod.UID, after.UID, "the same pod")
		assert.Equal(t, before, k.pods(t))
		assert.Contains(t, k.lastCLIRequest(t).AllText(), "Please count to three.", "the CLI's own session carries the earlier turn")
	})

	t.Run("another key gets another pod", func(t *testing.T) {
		before := k.pods(t)
		bob := &conversation{t: t, key: "sk-ant-test-kube-bob", id: alice.id}
		keys = append(keys, bob.key)
		k.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hello Bob."}})
		assert.Equal(t, "Hello Bob.", bob.say(g, "Hi, I am Bob."))
		assert.NotEqual(t, alice.session(g).AgentID, bob.session(g).AgentID)
		assert.Equal(t, before+1, k.pods(t))
	})

	t.Run("a pod deleted behind the gateway's back", func(t *testing.T) {
		carol := &conversation{t: t, key: "sk-ant-test-kube-carol", id: "c-kube-lost"}
		keys = append(keys, carol.key)
		k.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
		first := carol.say(g, "Remember the number 4711.")
		put := api{t, g, carol.key}.do(http.MethodPut, "/api/agents/sessions/"+carol.sessionID+"/files/n.txt", strings.NewReader("4711"), "text/plain")
		require.Equal(t, http.StatusCreated, put.status, string(put.body))
		name := carol.session(g).AgentID
		lost := k.pod(t, name)
		require.NotNil(t, lost)
		require.NoError(t, k.kube.Admin.CoreV1().Pods(k.kube.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{}))
		// The kubelet stops a deleted pod gracefully (it answers until then):
		// the next message is sent once it is gone.
		testenv.Eventually(t, time.Minute, func() bool { return k.pod(t, name) == nil }, "the deleted pod did not go")

		content := carol.send(g, chatRequest([]openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("Remember the number 4711."),
			openai.AssistantMessage(first),
			openai.UserMessage("Which number?"),
		}))
		assert.Contains(t, k.lastCLIRequest(t).AllText(), "Remember the number 4711.", "the context reached the model")
		now := k.pod(t, carol.session(g).AgentID)
		require.NotNil(t, now)
		assert.NotEqual(t, lost.UID, now.UID, "a new pod")
		read := api{t, g, carol.key}.do(http.MethodGet, "/api/agents/sessions/"+carol.sessionID+"/files/n.txt", nil, "")
		require.Equal(t, http.StatusOK, read.status, "the claim kept the workspace")
		assert.Equal(t, "4711", string(read.body))
		assert.NotContains(t, content, "replaced", "nothing was lost: the new pod resumed from the claim")
	})

	t.Run("the pods are hardened as the API server has them", func(t *testing.T) {
		pod := k.pod(t, alice.session(g).AgentID)
		require.NotNil(t, pod)
		spec := pod.Spec
		require.NotNil(t, spec.AutomountServiceAccountToken)
		assert.False(t, *spec.AutomountServiceAccountToken)
		assert.Equal(t, corev1.RestartPolicyNever, spec.RestartPolicy)
		require.NotNil(t, spec.SecurityContext)
		require.NotNil(t, spec.SecurityContext.RunAsNonRoot)
		assert.True(t, *spec.SecurityContext.RunAsNonRoot)
		require.Len(t, spec.Containers, 1)
		c := spec.Containers[0]
		sc := c.SecurityContext
		require.NotNil(t, sc)
		assert.False(t, *sc.AllowPrivilegeEscalation)
		assert.True(t, *sc.ReadOnlyRootFilesystem)
		assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = spec.SecurityContext.SeccompProfile
		}
		require.NotNil(t, seccomp)
		assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, seccomp.Type)
		assert.False(t, c.Resources.Limits.Memory().IsZero(), "a memory limit")
		assert.False(t, c.Resources.Requests.Cpu().IsZero(), "a CPU request")
		require.NotNil(t, c.ReadinessProbe)
		assert.Contains(t, c.ReadinessProbe.HTTPGet.Path, "/health")
		for _, env := range c.Env {
			if env.Name == "AGENT_TOKEN" {
				assert.Empty(t, env.Value, "the token is not a literal in the pod spec")
				require.NotNil(t, env.ValueFrom)
				assert.NotNil(t, env.ValueFrom.SecretKeyRef)
			}
		}
	})

	t.Run("no API key in any pod spec, Secret, label or annotation", func(t *testing.T) {
		stored := k.stored(t)
		require.NotEmpty(t, stored)
		for _, key := range keys {
			assert.NotContains(t, stored, key)
		}
		assert.NotContains(t, stored, "sk-ant-")
	})
}

// TestKubernetesSleepWakeAndRestart: runSleepWakeAndRestart on the
// cluster (reach pod_ip): asleep is no pod and the claim kept; the wake is
// a new pod of the same name on the claim; the restart with the pod
// running keeps that very pod.
func TestKubernetesSleepWakeAndRestart(t *testing.T) {
	k := setupKube(t)
	runSleepWakeAndRestart(t, k.env, sleepScenario{
		start: func(t *testing.T, o gatewayOptions) *gateway { return k.gateway(t, "pod_ip", o) },
		asleep: func(t *testing.T, name string) bool {
			return k.pod(t, name) == nil && slices.Contains(k.objects(t), "claim/"+name)
		},
		awake: func(t *testing.T, name string) bool { return k.pod(t, name) != nil },
		incarnation: func(t *testing.T, name string) string {
			if p := k.pod(t, name); p != nil {
				return string(p.UID)
			}
			return ""
		},
	}, &conversation{t: t, key: "sk-ant-test-kube-sleep", id: "c-kube-sleep"})
}

// TestKubernetesFleet: two gateways with the same kubernetes provider
// block share the namespace's agents: a conversation continued through the
// other gateway is served by its pod (found by the session's names), and
// the same new conversation sent to both at once makes one pod (the API
// server refuses the second claim).
func TestKubernetesFleet(t *testing.T) {
	k := setupKube(t)
	gs := [2]*gateway{k.gateway(t, "pod_ip", gatewayOptions{}), k.gateway(t, "pod_ip", gatewayOptions{})}
	fleetSteps(t, k.env, gs, true, func() int { return k.pods(t) })
}
