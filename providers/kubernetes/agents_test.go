package kubernetes_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	k8s "github.com/agcluster/caddy-agcluster/providers/kubernetes"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
)

// TestPodSecurityOnCluster: the objects as the API server keeps them
// carry the hardening, the token only in the Secret, the identity in
// annotations and selector-safe labels, and the claim is writable by the
// agent (fsGroup) under a read-only root file system.
func TestPodSecurityOnCluster(t *testing.T) {
	c := newCluster(t)
	p := newProvider(t, c.options(k8s.ReachPodIP))
	spec := newSpec()
	inst := create(t, p, spec)
	ctx := providertest.Context(t, time.Minute)
	pod, err := c.admin.CoreV1().Pods(c.ns).Get(ctx, inst.ID, metav1.GetOptions{})
	require.NoError(t, err)
	claim, err := c.admin.CoreV1().PersistentVolumeClaims(c.ns).Get(ctx, inst.ID, metav1.GetOptions{})
	require.NoError(t, err)
	secret, err := c.admin.CoreV1().Secrets(c.ns).Get(ctx, inst.ID, metav1.GetOptions{})
	require.NoError(t, err)

	ps := pod.Spec
	assert.Equal(t, corev1.RestartPolicyNever, ps.RestartPolicy)
	assert.False(t, *ps.AutomountServiceAccountToken)
	assert.LessOrEqual(t, *ps.TerminationGracePeriodSeconds, int64(10))
	assert.True(t, *ps.SecurityContext.RunAsNonRoot)
	assert.Equal(t, int64(1000), *ps.SecurityContext.RunAsUser)
	assert.Equal(t, int64(1000), *ps.SecurityContext.FSGroup)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, ps.SecurityContext.SeccompProfile.Type)
	for _, v := range ps.Volumes {
		assert.Nil(t, v.Projected, "no service account token volume (%s)", v.Name)
	}
	ctr := ps.Containers[0]
	sc := ctr.SecurityContext
	assert.False(t, *sc.AllowPrivilegeEscalation)
	assert.True(t, *sc.ReadOnlyRootFilesystem)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	assert.False(t, ctr.Resources.Limits.Cpu().IsZero(), "CPU limit")
	assert.False(t, ctr.Resources.Limits.Memory().IsZero(), "memory limit")
	assert.False(t, ctr.Resources.Requests.Memory().IsZero(), "memory request")
	require.NotNil(t, ctr.ReadinessProbe)
	assert.True(t, strings.HasPrefix(ctr.ReadinessProbe.HTTPGet.Path, "/health"))
	for _, e := range ctr.Env {
		assert.NotEqual(t, inst.Token, e.Value, "the token is no literal in the pod spec (%s)", e.Name)
		if e.Name == agent.EnvToken {
			require.NotNil(t, e.ValueFrom)
			assert.Equal(t, inst.ID, e.ValueFrom.SecretKeyRef.Name)
		}
	}
	assert.Equal(t, inst.Token, string(secret.Data["token"]))
	for _, o := range []metav1.Object{pod, secret} {
		refs := o.GetOwnerReferences()
		require.Len(t, refs, 1)
		assert.Equal(t, claim.UID, refs[0].UID, "%s belongs to the claim", o.GetName())
	}
	assert.Equal(t, corev1.ClaimBound, claim.Status.Phase)
	for _, o := range []metav1.Object{pod, secret, claim} {
		assert.Equal(t, spec.SessionID, o.GetAnnotations()[k8s.AnnotationSession])
		assert.Equal(t, spec.Owner, o.GetAnnotations()[k8s.AnnotationOwner])
		assert.Equal(t, spec.Conversation, o.GetAnnotations()[k8s.AnnotationConversation])
		assert.Equal(t, "true", o.GetLabels()[k8s.LabelManaged])
		assert.NotContains(t, o.GetLabels(), k8s.AnnotationSession, "the raw session id is no label")
	}

	// The agent writes to the claim (fsGroup) and to nothing else.
	resp, err := inst.Client().Forward(ctx, http.MethodPut, "/files/written.txt", nil, strings.NewReader("on the claim"), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusCreated, resp.StatusCode, "PUT /files: %s", body)
	st, err := inst.Client().Stats(ctx)
	require.NoError(t, err)
	assert.NotZero(t, st.Claude.PID, "the CLI runs under the read-only root file system")
}

// TestSecondCreateFails: a second create of the same conversation fails
// on the API server's name uniqueness, with a clear error, and leaves the
// first agent alone.
func TestSecondCreateFails(t *testing.T) {
	c := newCluster(t)
	p := newProvider(t, c.options(k8s.ReachPodIP))
	spec := newSpec()
	first := create(t, p, spec)
	ctx := providertest.Context(t, 3*time.Minute)
	again, err := p.Create(ctx, spec)
	assert.Nil(t, again)
	require.Error(t, err)
	assert.True(t, apierrors.IsAlreadyExists(err), "%v", err)
	assert.ErrorIs(t, err, providers.ErrExists)
	assert.Contains(t, err.Error(), "this conversation has an agent already")
	_, err = first.Client().Stats(ctx)
	assert.NoError(t, err, "the first agent still runs")
	list, err := p.List(ctx)
	require.NoError(t, err)
	n := 0
	for _, i := range list {
		if i.SessionID == spec.SessionID {
			n++
			assert.Equal(t, first.Token, i.Token)
		}
	}
	assert.Equal(t, 1, n)
}

// TestCreateAfterDestroyWaitsForTheClaim: a conversation destroyed and
// created again at once (its claim still being deleted, held here by a
// finalizer) is created once the old claim is gone, not refused as
// ErrExists; and Find sees no agent while the old claim goes.
func TestCreateAfterDestroyWaitsForTheClaim(t *testing.T) {
	c := newCluster(t)
	waiting := make(chan struct{})
	var once sync.Once
	core := zapcore.RegisterHooks(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core(), func(e zapcore.Entry) error {
		if e.Message == "waiting for a destroyed agent's claim to be deleted" {
			once.Do(func() { close(waiting) })
		}
		return nil
	})
	p := providertest.NewProvider(t, k8s.New, c.options(k8s.ReachPodIP), zap.New(core))
	spec := newSpec()
	first := create(t, p, spec)
	ctx := providertest.Context(t, 3*time.Minute)
	claims := c.admin.CoreV1().PersistentVolumeClaims(c.ns)
	const hold = "agcluster.dev/test-hold"
	setHold := func(on bool) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			claim, err := claims.Get(ctx, first.ID, metav1.GetOptions{})
			if err != nil {
				return err
			}
			claim.Finalizers = slices.DeleteFunc(claim.Finalizers, func(f string) bool { return f == hold })
			if on {
				claim.Finalizers = append(claim.Finalizers, hold)
			}
			_, err = claims.Update(ctx, claim, metav1.UpdateOptions{})
			return err
		})
		require.NoError(t, err)
	}
	setHold(true)
	require.NoError(t, p.Destroy(ctx, first.ID))

	_, err := p.Find(ctx, spec.SessionID)
	require.ErrorIs(t, err, providers.ErrGone, "a claim being deleted is no agent")
	done := make(chan error, 1)
	var again *providers.Instance
	go func() {
		var err error
		again, err = p.Create(ctx, spec)
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the create ended before it waited for the old claim: %v", err)
	}
	setHold(false)
	require.NoError(t, <-done)
	t.Cleanup(func() { _ = p.Destroy(context.Background(), again.ID) })
	assert.Equal(t, first.ID, again.ID, "the same deterministic name")
	assert.NotEqual(t, first.Token, again.Token)
	got, err := p.Find(ctx, spec.SessionID)
	require.NoError(t, err)
	assert.Equal(t, again.Token, got.Token)
}

// TestImageMissingFailsFast: an image the node cannot have fails the
// create at once (not at the ready timeout) as ErrImageMissing, and
// nothing is left behind.
func TestImageMissingFailsFast(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct{ name, policy, reason string }{
		{"not on the node, never pulled", "Never", "ErrImageNeverPull"},
		{"registry unreachable", "IfNotPresent", "ErrImagePull"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := c.options(k8s.ReachPodIP)
			opts.Image, opts.ImagePullPolicy = "agcluster.invalid/no-such-agent:missing", tc.policy
			p := newProvider(t, opts)
			began := time.Now()
			inst, err := p.Create(providertest.Context(t, 3*time.Minute), newSpec())
			assert.Nil(t, inst)
			require.Error(t, err)
			assert.ErrorIs(t, err, providers.ErrImageMissing)
			assert.Contains(t, err.Error(), tc.reason)
			assert.Less(t, time.Since(began), time.Minute, "failed before the 2m ready timeout")
			t.Logf("failed after %s: %v", time.Since(began), err)
		})
	}
	c.assertNothingLeft(t)
}

// TestUnschedulable: a pod no node can take fails at the ready timeout
// with where it is stuck.
func TestUnschedulable(t *testing.T) {
	c := newCluster(t)
	opts := c.options(k8s.ReachPodIP)
	opts.NodeSelector = map[string]string{"agcluster.dev/no-such-node": "true"}
	opts.ReadyTimeout = caddy.Duration(5 * time.Second)
	p := newProvider(t, opts)
	inst, err := p.Create(providertest.Context(t, time.Minute), newSpec())
	assert.Nil(t, inst)
	require.Error(t, err)
	assert.ErrorIs(t, err, providers.ErrNotReady)
	assert.Contains(t, err.Error(), "pod not scheduled (Unschedulable")
	c.assertNothingLeft(t)
}

// TestConfigurationErrors: a missing namespace, a gateway identity
// without the Role, and one without pods/portforward (with reach
// port_forward) are clear errors wrapping ErrUnavailable, from Create at
// once and (for the first two) from Ping; nothing is left behind.
func TestConfigurationErrors(t *testing.T) {
	c := newCluster(t)
	ctx := providertest.Context(t, 3*time.Minute)
	_, err := c.admin.CoreV1().ServiceAccounts(c.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		change func(o *k8s.Options)
		ping   bool // Ping tells too
		want   string
	}{
		{"namespace missing", func(o *k8s.Options) {
			o.Kubeconfig, o.Namespace = c.env.AdminPath, "agcluster-missing-"+testenv.RandomHex(4)
		}, true, "does not exist"},
		{"no role", func(o *k8s.Options) { o.Kubeconfig = c.env.TokenKubeconfig(t, "nobody") }, true, "forbidden in namespace"},
		{"no port forward", func(o *k8s.Options) {
			o.Kubeconfig, o.Reach = c.env.GatewayKubeconfig(t, "noforward", "pods/portforward"), k8s.ReachPortForward
		}, false, `cannot create resource "pods/portforward"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := c.options(k8s.ReachPodIP)
			tc.change(&opts)
			p := newProvider(t, opts)
			if err := p.Ping(ctx); tc.ping {
				require.Error(t, err)
				assert.ErrorIs(t, err, providers.ErrUnavailable)
				assert.Contains(t, err.Error(), tc.want)
			} else {
				assert.NoError(t, err)
			}
			began := time.Now()
			inst, err := p.Create(ctx, newSpec())
			assert.Less(t, time.Since(began), time.Minute, "failed before the ready timeout")
			assert.Nil(t, inst)
			assert.ErrorIs(t, err, providers.ErrUnavailable)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	c.assertNothingLeft(t)
}

// TestPortForward: with reach port_forward an agent's URL is a local
// port; a dropped connection to the pod is dialed again behind the same
// URL; sleep closes the port and wake opens another.
func TestPortForward(t *testing.T) {
	c := newCluster(t)
	p := newProvider(t, c.options(k8s.ReachPortForward))
	inst := create(t, p, newSpec())
	ctx := providertest.Context(t, 3*time.Minute)
	assert.True(t, strings.HasPrefix(inst.URL, "http://127.0.0.1:"), inst.URL)
	_, err := inst.Client().Stats(ctx)
	require.NoError(t, err)

	require.True(t, k8s.DropForwardConnection(inst.URL), "a connection to the pod was open")
	_, err = inst.Client().Stats(ctx)
	require.NoError(t, err, "the forward dials the pod again")

	asleep, err := p.Sleep(ctx, inst)
	require.NoError(t, err)
	_, err = inst.Client().Stats(ctx)
	assert.Error(t, err, "the sleeping agent's port is closed")
	woken, err := p.Wake(ctx, asleep.ID)
	require.NoError(t, err)
	_, err = woken.Client().Stats(ctx)
	assert.NoError(t, err)
}

// TestNetworkPolicy: with network_policy the provider applies a policy
// selecting its agents' pods and admitting the gateway's pods to the
// agent port. (The local cluster's bridge CNI does not enforce policies:
// this checks the object, not the enforcement.)
func TestNetworkPolicy(t *testing.T) {
	c := newCluster(t)
	opts := c.options(k8s.ReachPodIP)
	opts.NetworkPolicy = &k8s.NetworkPolicy{FromPods: map[string]string{"app.kubernetes.io/name": "agcluster-caddy"}}
	p := newProvider(t, opts)
	inst := create(t, p, newSpec())
	ctx := providertest.Context(t, time.Minute)
	np, err := c.admin.NetworkingV1().NetworkPolicies(c.ns).Get(ctx, "agcluster-agents-kubernetes", metav1.GetOptions{})
	require.NoError(t, err)
	pod, err := c.admin.CoreV1().Pods(c.ns).Get(ctx, inst.ID, metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, labels.SelectorFromSet(np.Spec.PodSelector.MatchLabels).Matches(labels.Set(pod.Labels)), "the policy selects the agent's pod")
	require.Len(t, np.Spec.Ingress, 1)
	assert.Equal(t, map[string]string{"app.kubernetes.io/name": "agcluster-caddy"}, np.Spec.Ingress[0].From[0].PodSelector.MatchLabels)
	assert.Equal(t, int32(8080), np.Spec.Ingress[0].Ports[0].Port.IntVal)

	// A second provider value with other sources brings it up to date.
	opts.NetworkPolicy = &k8s.NetworkPolicy{FromCIDRs: []string{"10.88.77.1/32"}}
	create(t, newProvider(t, opts), newSpec())
	np, err = c.admin.NetworkingV1().NetworkPolicies(c.ns).Get(ctx, np.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "10.88.77.1/32", np.Spec.Ingress[0].From[0].IPBlock.CIDR)
}

// TestTimings measures create to ready, sleep and wake on the local
// cluster, for both reach modes.
func TestTimings(t *testing.T) {
	c := newCluster(t)
	for _, reach := range []string{k8s.ReachPodIP, k8s.ReachPortForward} {
		t.Run(reach, func(t *testing.T) {
			p := newProvider(t, c.options(reach))
			var creates, sleeps, wakes []time.Duration
			for range 3 {
				began := time.Now()
				inst := create(t, p, newSpec())
				creates = append(creates, time.Since(began))
				began = time.Now()
				asleep, err := p.Sleep(providertest.Context(t, time.Minute), inst)
				require.NoError(t, err)
				sleeps = append(sleeps, time.Since(began))
				began = time.Now()
				woken, err := p.Wake(providertest.Context(t, 3*time.Minute), asleep.ID)
				require.NoError(t, err)
				wakes = append(wakes, time.Since(began))
				_, err = woken.Client().Stats(providertest.Context(t, time.Minute))
				require.NoError(t, err)
			}
			t.Logf("%s: create to ready %.0f ms, sleep %.0f ms, wake to ready %.0f ms (medians of 3; all: %v %v %v)",
				reach, testenv.MedianMS(creates), testenv.MedianMS(sleeps), testenv.MedianMS(wakes), creates, sleeps, wakes)
		})
	}
}
