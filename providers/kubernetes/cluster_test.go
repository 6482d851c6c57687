package kubernetes_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/agcluster/caddy-agcluster/agent"
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
	admin      kubernetes.Interface
	adminPath  string
	ns         string
	storage    string
	kubeconfig string // the agcluster-caddy ServiceAccount's, bound by the shipped Role
	mock       *anthropictest.Server
}

// newCluster prepares a namespace on the local cluster for one test.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	path := kubetest.Cluster(t)
	admin := kubetest.Client(t)
	ns := kubetest.Namespace(t, admin)
	waitDefaultServiceAccount(t, admin, ns)
	c := &cluster{admin: admin, adminPath: path, ns: ns}
	c.storage = localStorage(t, admin, ns)
	c.kubeconfig = c.gatewayIdentity(t, "agcluster-caddy", "")
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
	t.Helper()
	p, err := k8s.New(opts, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSpec() providers.Spec {
	owner := sha256.Sum256([]byte("owner-" + testenv.RandomHex(4)))
	return providers.Spec{
		SessionID:    "sess_" + testenv.RandomHex(8),
		Owner:        hex.EncodeToString(owner[:]),
		ConfigID:     "default",
		Conversation: "conv-" + testenv.RandomHex(4),
		Config:       &agent.Config{ID: "default", AllowedTools: []string{"Read"}},
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// create makes an instance destroyed when the test ends.
func create(t testing.TB, p *k8s.Provider, spec providers.Spec) *providers.Instance {
	t.Helper()
	inst, err := p.Create(ctxT(t, 3*time.Minute), spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := p.Destroy(context.Background(), inst.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return inst
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
				ModelRequests: c.modelRequests,
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

func (c *cluster) modelRequests(context.Context) ([]string, error) {
	reqs := c.mock.Requests()
	bodies := make([]string, len(reqs))
	for i, r := range reqs {
		bodies[i] = string(r.Body)
	}
	return bodies, nil
}

// assertNothingLeft waits until no pod, claim or Secret of agcluster is
// left in the namespace (claims go once their pod has), and no volume of
// the test's storage class is bound.
func (c *cluster) assertNothingLeft(t *testing.T) {
	t.Helper()
	sel := metav1.ListOptions{LabelSelector: k8s.LabelManaged + "=true"}
	var left []string
	testenv.Eventually(t, time.Minute, func() bool {
		ctx := ctxT(t, 30*time.Second)
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

// waitDefaultServiceAccount waits until the controller-manager has made
// the namespace's default ServiceAccount (pods are refused before).
func waitDefaultServiceAccount(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	lw := cache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), "serviceaccounts", ns, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", "default").String()
	})
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.ServiceAccount{}, func(s cache.Store) (bool, error) {
		return len(s.List()) > 0, nil
	}, func(ev watch.Event) (bool, error) { return ev.Type != watch.Deleted, nil })
	require.NoError(t, err, "the default ServiceAccount of %s", ns)
}

// gatewayIdentity applies deploy/rbac.yaml's ServiceAccount, Role and
// RoleBinding to the test's namespace (all named sa), and returns the
// path of a kubeconfig with a token of that ServiceAccount: the provider
// then runs with exactly the shipped permissions, less the rule for the
// resource drop when it is set.
func (c *cluster) gatewayIdentity(t *testing.T, sa, drop string) string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	rbac := c.admin.RbacV1()
	for _, o := range manifests(t, "rbac.yaml") {
		var err error
		switch v := o.(type) {
		case *corev1.ServiceAccount:
			v.Namespace, v.Name = c.ns, sa
			_, err = c.admin.CoreV1().ServiceAccounts(c.ns).Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.Role:
			v.Namespace, v.Name = c.ns, sa
			v.Rules = slices.DeleteFunc(v.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, drop) })
			_, err = rbac.Roles(c.ns).Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			v.Namespace, v.Name, v.RoleRef.Name = c.ns, sa, sa
			for i := range v.Subjects {
				v.Subjects[i].Namespace, v.Subjects[i].Name = c.ns, sa
			}
			_, err = rbac.RoleBindings(c.ns).Create(ctx, v, metav1.CreateOptions{})
		}
		require.NoError(t, err)
	}
	return c.tokenKubeconfig(t, sa)
}

// tokenKubeconfig writes a kubeconfig for the admin's cluster with a
// token of ServiceAccount sa.
func (c *cluster) tokenKubeconfig(t *testing.T, sa string) string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	hour := int64(3600)
	tr, err := c.admin.CoreV1().ServiceAccounts(c.ns).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	require.NoError(t, err)
	admin, err := clientcmd.LoadFromFile(c.adminPath)
	require.NoError(t, err)
	cluster := admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = cluster
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["gateway"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa, Namespace: c.ns}
	cfg.CurrentContext = "gateway"
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

// localStorage makes a StorageClass for the test and serves its claims
// the way a local-volume provisioner would (the local cluster has none):
// each claim of the namespace gets a directory on the node (this host) as
// a local PersistentVolume bound to it, removed with the claim. The
// kubelet mounts it and gives it to the pod's fsGroup, as with any local
// volume.
func localStorage(t *testing.T, cs kubernetes.Interface, ns string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, nodes.Items)
	node := nodes.Items[0].Labels[corev1.LabelHostname]
	class := "agcluster-test-" + ns
	immediate := storagev1.VolumeBindingImmediate
	_, err = cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: class},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: &immediate,
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	root, err := os.MkdirTemp("", "agcluster-volumes-")
	require.NoError(t, err)

	lw := cache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), "persistentvolumeclaims", ns, func(*metav1.ListOptions) {})
	inf := cache.NewSharedIndexInformer(lw, &corev1.PersistentVolumeClaim{}, 0, cache.Indexers{})
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			claim := obj.(*corev1.PersistentVolumeClaim)
			if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != class || claim.Spec.VolumeName != "" {
				return
			}
			dir := filepath.Join(root, string(claim.UID))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Errorf("local volume for %s: %v", claim.Name, err)
				return
			}
			if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, localVolume(claim, class, dir, node), metav1.CreateOptions{}); err != nil && ctx.Err() == nil {
				t.Errorf("local volume for %s: %v", claim.Name, err)
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			claim := obj.(*corev1.PersistentVolumeClaim)
			_ = cs.CoreV1().PersistentVolumes().Delete(context.Background(), volumeName(claim), metav1.DeleteOptions{})
			_ = os.RemoveAll(filepath.Join(root, string(claim.UID)))
		},
	})
	require.NoError(t, err)
	go inf.RunWithContext(ctx)
	require.True(t, cache.WaitForCacheSync(ctx.Done(), inf.HasSynced))
	t.Cleanup(func() {
		cancel()
		bg := context.Background()
		pvs, err := cs.CoreV1().PersistentVolumes().List(bg, metav1.ListOptions{})
		if err == nil {
			for _, pv := range pvs.Items {
				if pv.Spec.StorageClassName == class {
					_ = cs.CoreV1().PersistentVolumes().Delete(bg, pv.Name, metav1.DeleteOptions{})
				}
			}
		}
		_ = cs.StorageV1().StorageClasses().Delete(bg, class, metav1.DeleteOptions{})
		_ = os.RemoveAll(root)
	})
	return class
}

// volumeName names the local volume of a claim.
func volumeName(claim *corev1.PersistentVolumeClaim) string {
	return "agcluster-test-" + string(claim.UID)
}

// localVolume is a local PersistentVolume at dir on node, bound to claim.
func localVolume(claim *corev1.PersistentVolumeClaim, class, dir, node string) *corev1.PersistentVolume {
	fs := corev1.PersistentVolumeFilesystem
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: volumeName(claim)},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			VolumeMode:                    &fs,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
		},
	}
}
