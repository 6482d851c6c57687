package kubetest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// Env is one test's namespace on the local cluster, ready for the
// Kubernetes provider: its default ServiceAccount exists and its claims
// are served by local volumes.
type Env struct {
	// Admin is a client with the cluster's admin credential.
	Admin kubernetes.Interface
	// AdminPath is the admin kubeconfig's path.
	AdminPath string
	// Namespace is the test's namespace (deleted when the test ends).
	Namespace string
	// StorageClass is the test's class for claims (see LocalStorage).
	StorageClass string
}

// Prepare makes a namespace for the test with its default ServiceAccount
// and a storage class served by local volumes.
func Prepare(t testing.TB) *Env {
	t.Helper()
	path := Cluster(t)
	admin := Client(t)
	ns := Namespace(t, admin)
	WaitDefaultServiceAccount(t, admin, ns)
	return &Env{Admin: admin, AdminPath: path, Namespace: ns, StorageClass: LocalStorage(t, admin, ns)}
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitDefaultServiceAccount waits until the controller-manager has made
// the namespace's default ServiceAccount (pods are refused before).
func WaitDefaultServiceAccount(t testing.TB, cs kubernetes.Interface, ns string) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	lw := cache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), "serviceaccounts", ns, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", "default").String()
	})
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.ServiceAccount{}, func(s cache.Store) (bool, error) {
		return len(s.List()) > 0, nil
	}, func(ev watch.Event) (bool, error) { return ev.Type != watch.Deleted, nil })
	if err != nil {
		t.Fatalf("the default ServiceAccount of %s: %v", ns, err)
	}
}

// RBACManifest is the provider's shipped RBAC: a ServiceAccount, a Role and
// a RoleBinding for the gateway.
func RBACManifest() string {
	return filepath.Join(testenv.RepoRoot(), "providers", "kubernetes", "deploy", "rbac.yaml")
}

// Manifests decodes every object of a YAML file.
func Manifests(t testing.TB, path string) []runtime.Object {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := yaml.NewYAMLReader(bufio.NewReader(f))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v: %s", path, err, doc)
		}
		objs = append(objs, obj)
	}
}

// GatewayKubeconfig applies the shipped RBAC's ServiceAccount, Role and
// RoleBinding to the namespace (all named sa), and returns the path of a
// kubeconfig with a token of that ServiceAccount: the provider then runs
// with exactly the shipped permissions, less the rule for the resource
// drop when it is set.
func (e *Env) GatewayKubeconfig(t testing.TB, sa, drop string) string {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	rbac := e.Admin.RbacV1()
	var rules []rbacv1.PolicyRule
	for _, o := range Manifests(t, RBACManifest()) {
		var err error
		switch v := o.(type) {
		case *corev1.ServiceAccount:
			v.Namespace, v.Name = e.Namespace, sa
			_, err = e.Admin.CoreV1().ServiceAccounts(e.Namespace).Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.Role:
			v.Namespace, v.Name = e.Namespace, sa
			v.Rules = slices.DeleteFunc(v.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, drop) })
			_, err = rbac.Roles(e.Namespace).Create(ctx, v, metav1.CreateOptions{})
			rules = v.Rules
		case *rbacv1.RoleBinding:
			v.Namespace, v.Name, v.RoleRef.Name = e.Namespace, sa, sa
			for i := range v.Subjects {
				v.Subjects[i].Namespace, v.Subjects[i].Name = e.Namespace, sa
			}
			_, err = rbac.RoleBindings(e.Namespace).Create(ctx, v, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("apply %T: %v", o, err)
		}
	}
	e.awaitGranted(t, sa, rules)
	return e.TokenKubeconfig(t, sa)
}

// awaitGranted waits until the API server's authorizer allows
// ServiceAccount sa every verb of rules: a new Role and RoleBinding reach
// the authorizer through its informers, a moment after they are created
// (a loaded machine made the first requests of a test fail "forbidden").
func (e *Env) awaitGranted(t testing.TB, sa string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	user := "system:serviceaccount:" + e.Namespace + ":" + sa
	for _, r := range rules {
		for _, res := range r.Resources {
			for _, verb := range r.Verbs {
				attrs := &authorizationv1.ResourceAttributes{Namespace: e.Namespace, Verb: verb, Resource: res}
				if len(r.APIGroups) > 0 {
					attrs.Group = r.APIGroups[0]
				}
				if resource, sub, ok := strings.Cut(res, "/"); ok {
					attrs.Resource, attrs.Subresource = resource, sub
				}
				review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: attrs}}
				err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
					got, err := e.Admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
					if err != nil {
						return false, err
					}
					return got.Status.Allowed, nil
				})
				if err != nil {
					t.Fatalf("%s is not granted %s %s: %v", sa, verb, res, err)
				}
			}
		}
	}
}

// TokenKubeconfig writes a kubeconfig for the admin's cluster with a token
// of ServiceAccount sa (valid for an hour).
func (e *Env) TokenKubeconfig(t testing.TB, sa string) string {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	hour := int64(3600)
	tr, err := e.Admin.CoreV1().ServiceAccounts(e.Namespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token of %s: %v", sa, err)
	}
	admin, err := clientcmd.LoadFromFile(e.AdminPath)
	if err != nil {
		t.Fatal(err)
	}
	cluster := admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = cluster
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["gateway"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa, Namespace: e.Namespace}
	cfg.CurrentContext = "gateway"
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// LocalStorage makes a StorageClass for the test and serves its claims
// the way a local-volume provisioner would (the local cluster has none):
// each claim of the namespace gets a directory on the node (this host) as
// a local PersistentVolume bound to it, removed with the claim. The
// kubelet mounts it and gives it to the pod's fsGroup, as with any local
// volume.
func LocalStorage(t testing.TB, cs kubernetes.Interface, ns string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) == 0 {
		t.Fatal("the cluster has no node")
	}
	node := nodes.Items[0].Labels[corev1.LabelHostname]
	class := "agcluster-test-" + ns
	immediate := storagev1.VolumeBindingImmediate
	_, err = cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: class},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: &immediate,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "agcluster-volumes-")
	if err != nil {
		t.Fatal(err)
	}

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
	if err != nil {
		t.Fatal(err)
	}
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("claims informer did not sync")
	}
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
