package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/kubetest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	k8s "github.com/agcluster/caddy-agcluster/providers/kubernetes"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
)

// cluster is one test's share of the local cluster: a namespace of its
// own, a storage class with a local volume for every claim, the
// gateway's identity made from deploy/rbac.yaml, and the Anthropic mock
// listening where pods reach the host.
type cluster struct {
	env        *kubetest.Env
	admin      kubernetes.Interface
	ns         string
	storage    string
	kubeconfig string // the agcluster-caddy ServiceAccount's, bound by the shipped Role
	mock       *anthropictest.Server
}

// newCluster prepares a namespace on the local cluster for one test.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	env := kubetest.Prepare(t)
	c := &cluster{env: env, admin: env.Admin, ns: env.Namespace, storage: env.StorageClass}
	c.kubeconfig = env.GatewayKubeconfig(t, "agcluster-caddy", "")
	c.mock = anthropictest.New(anthropictest.Script{})
	require.NoError(t, c.mock.Start(kubetest.HostAddr()+":0"))
	t.Cleanup(c.mock.Close)
	return c
}

// options are provider options for the cluster: the gateway's kubeconfig,
// the namespace, the local image (never pulled) and the mock.
func (c *cluster) options(reach string) k8s.Options {
	return k8s.Options{
		Kubeconfig:      c.kubeconfig,
		Namespace:       c.ns,
		Image:           testenv.AgentImage(),
		ImagePullPolicy: string(corev1.PullNever),
		StorageClass:    c.storage,
		WorkspaceSize:   "64Mi",
		Reach:           reach,
		CPUs:            "1",
		Memory:          "1Gi",
		Env:             map[string]string{"ANTHROPIC_BASE_URL": c.mock.URL()},
	}
}

func newProvider(t testing.TB, opts k8s.Options) *k8s.Provider {
	return providertest.NewProvider(t, k8s.New, opts, nil)
}

func newSpec() providers.Spec {
	spec := providertest.NewSpec()
	spec.SessionID = "sess_" + testenv.RandomHex(8)
	return spec
}

// create makes an instance destroyed when the test ends.
func create(t testing.TB, p *k8s.Provider, spec providers.Spec) *providers.Instance {
	return providertest.CreateWithin(t, p, spec, 3*time.Minute)
}

// TestConformance runs the providers' conformance suite on the local
// cluster with both reach modes, as the gateway's ServiceAccount bound by
// the shipped Role: a reopened provider, a second provider name in the
// namespace, pods deleted behind the provider's back, what the cluster
// stores (pod, Secret, claim: no API key in any of them), the mock
// model's requests. Then nothing of the agents is left in the namespace.
func TestConformance(t *testing.T) {
	for _, reach := range []string{k8s.ReachPodIP, k8s.ReachPortForward} {
		t.Run(reach, func(t *testing.T) {
			c := newCluster(t)
			opts := c.options(reach)
			other := opts
			other.Name = "other"
			providertest.Run(t, newProvider(t, opts), providertest.Options{
				NewSpec:       newSpec,
				Reopen:        func(t *testing.T) providers.Provider { return newProvider(t, opts) },
				Other:         newProvider(t, other),
				Kill:          c.kill,
				Stored:        c.stored,
				ModelRequests: func(context.Context) ([]string, error) { return anthropictest.Bodies(c.mock.Requests()), nil },
			})
			c.assertNothingLeft(t)
		})
	}
}

// kill deletes an agent's pod at once, behind the provider's back (as a
// node failure or an operator's kubectl delete --force would), leaving
// its claim and Secret.
func (c *cluster) kill(ctx context.Context, id string) error {
	zero := int64(0)
	return c.admin.CoreV1().Pods(c.ns).Delete(ctx, id, metav1.DeleteOptions{GracePeriodSeconds: &zero})
}

// stored is everything the cluster keeps about an instance, as text: its
// pod (spec, metadata and status), its Secret's data, labels and
// annotations, and its claim's labels and annotations.
func (c *cluster) stored(ctx context.Context, id string) (string, error) {
	var b strings.Builder
	pod, err := c.admin.CoreV1().Pods(c.ns).Get(ctx, id, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return "", err
	}
	if err == nil {
		raw, _ := json.Marshal(pod)
		fmt.Fprintf(&b, "pod: %s\n", raw)
	}
	secret, err := c.admin.CoreV1().Secrets(c.ns).Get(ctx, id, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	for k, v := range secret.Data {
		fmt.Fprintf(&b, "secret %s: %s\n", k, v)
	}
	fmt.Fprintf(&b, "secret labels: %v\nsecret annotations: %v\n", secret.Labels, secret.Annotations)
	claim, err := c.admin.CoreV1().PersistentVolumeClaims(c.ns).Get(ctx, id, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "claim labels: %v\nclaim annotations: %v\n", claim.Labels, claim.Annotations)
	return b.String(), nil
}

// assertNothingLeft waits until no pod, claim or Secret of agcluster is
// left in the namespace (claims go once their pod has), and no volume of
// the test's storage class is bound.
func (c *cluster) assertNothingLeft(t *testing.T) {
	t.Helper()
	sel := metav1.ListOptions{LabelSelector: k8s.LabelManaged + "=true"}
	var left []string
	testenv.Eventually(t, time.Minute, func() bool {
		ctx := providertest.Context(t, 30*time.Second)
		left = nil
		pods, err := c.admin.CoreV1().Pods(c.ns).List(ctx, sel)
		require.NoError(t, err)
		for _, p := range pods.Items {
			left = append(left, "pod "+p.Name)
		}
		claims, err := c.admin.CoreV1().PersistentVolumeClaims(c.ns).List(ctx, sel)
		require.NoError(t, err)
		for _, p := range claims.Items {
			left = append(left, "claim "+p.Name)
		}
		secrets, err := c.admin.CoreV1().Secrets(c.ns).List(ctx, sel)
		require.NoError(t, err)
		for _, p := range secrets.Items {
			left = append(left, "secret "+p.Name)
		}
		return len(left) == 0
	}, "objects left in namespace %s: %v", c.ns, &left)
}
