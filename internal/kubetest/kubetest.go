// Package kubetest gives tests a real one-node Kubernetes cluster on this
// machine, started by scripts/kube-up.sh: etcd, the API server, the
// controller-manager, the scheduler, a private containerd and a kubelet, with
// pods on a bridge of its own (HostAddr is the host's address there) and
// images imported from Docker (pods use imagePullPolicy: Never).
//
// Like testenv, tests are skipped under `go test -short`; otherwise a cluster
// that cannot be had FAILS the test with the script's output: CI (which runs
// `make kube` before the tests) never turns a missing cluster into a skip.
package kubetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// PauseImage is the sandbox image kube-up.sh builds and imports: a static
// binary that sleeps until SIGTERM, the smallest pod there is.
const PauseImage = "agcluster.local/pause:1"

// HostAddr is the host's address on the cluster's bridge ($KUBE_BRIDGE_ADDR
// or 10.88.77.1, as in scripts/kube-env.sh). A server that pods must reach,
// such as the mock Anthropic API, listens there; pods have no other route.
func HostAddr() string {
	if v := os.Getenv("KUBE_BRIDGE_ADDR"); v != "" {
		return v
	}
	return "10.88.77.1"
}

var (
	upOnce   sync.Once
	upPath   string
	upOutput string
	upErr    error
)

// Cluster makes sure the cluster is up (running scripts/kube-up.sh once per
// test binary; with the cluster up that is a quick check, on a fresh machine
// it first builds the binaries for ~7 minutes) and returns the path of its
// admin kubeconfig. It fails the test, with the script's output, when the
// cluster cannot be started.
func Cluster(t testing.TB) string {
	t.Helper()
	testenv.Integration(t)
	upOnce.Do(func() { upPath, upOutput, upErr = kubeUp() })
	if upErr != nil {
		t.Fatalf("the Kubernetes cluster is not available (%v); scripts/kube-up.sh said:\n%s", upErr, upOutput)
	}
	return upPath
}

// kubeUp runs scripts/kube-up.sh and returns the last line of its stdout.
func kubeUp() (path, output string, err error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "scripts", "kube-up.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	output = stderr.String() + stdout.String()
	if err != nil {
		return "", output, fmt.Errorf("scripts/kube-up.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	path = strings.TrimSpace(lines[len(lines)-1])
	if _, err := os.Stat(path); err != nil {
		return "", output, fmt.Errorf("scripts/kube-up.sh printed no kubeconfig path: %w", err)
	}
	return path, output, nil
}

// Client returns a clientset for the cluster (see [Cluster]).
func Client(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", Cluster(t))
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubernetes client: %v", err)
	}
	return cs
}

// Namespace creates a namespace for the test. At cleanup it is deleted and
// the test waits until it is gone, so no pod of the test outlives it.
func Namespace(t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kubetest-", Labels: map[string]string{"agcluster.test": "true"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { deleteNamespace(t, cs, ns.Name) })
	return ns.Name
}

// deleteNamespace deletes a namespace and waits (at most 2 minutes) until
// the namespace controller has removed it and its pods.
func deleteNamespace(t testing.TB, cs kubernetes.Interface, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("delete namespace %s: %v", name, err)
		return
	}
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return cs.CoreV1().Namespaces().List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return cs.CoreV1().Namespaces().Watch(ctx, o)
		},
	}
	_, err = watchtools.UntilWithSync(ctx, lw, &corev1.Namespace{}, func(store cache.Store) (bool, error) {
		return len(store.List()) == 0, nil
	}, func(e watch.Event) (bool, error) { return e.Type == watch.Deleted, nil })
	if err != nil {
		t.Errorf("namespace %s still there 2 minutes after its deletion: %v", name, err)
	}
}

// WaitPodReady watches a pod until it is Ready and returns it. It fails
// the test when the pod fails or timeout passes, with the pod's status and
// the namespace's events.
func WaitPodReady(t testing.TB, cs kubernetes.Interface, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	return WaitPod(t, cs, ns, name, timeout, "Ready", func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended (%s) before it was ready", p.Status.Phase)
		}
		return podReady(p), nil
	})
}

// WaitPod watches a pod until cond holds and returns it; what names the
// condition in the failure message. cond returning an error ends the wait
// and fails the test.
func WaitPod(t testing.TB, cs kubernetes.Interface, ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) (bool, error)) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return cs.CoreV1().Pods(ns).List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return cs.CoreV1().Pods(ns).Watch(ctx, o)
		},
	}
	var last *corev1.Pod
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(e watch.Event) (bool, error) {
		p, ok := e.Object.(*corev1.Pod)
		if !ok || e.Type == watch.Deleted {
			return false, nil
		}
		last = p
		return cond(p)
	})
	if err != nil {
		t.Fatalf("pod %s/%s not %s: %v\nstatus: %s\nevents:\n%s", ns, name, what, err, podStatus(last), Events(cs, ns))
	}
	return last
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podStatus summarizes a pod's phase and container states for a failure message.
func podStatus(p *corev1.Pod) string {
	if p == nil {
		return "(never seen)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s, ip %q", p.Status.Phase, p.Status.PodIP)
	for _, c := range p.Status.ContainerStatuses {
		fmt.Fprintf(&b, "; container %s ready=%t restarts=%d state=%+v", c.Name, c.Ready, c.RestartCount, c.State)
	}
	return b.String()
}

// Events lists a namespace's events, oldest first, one a line.
func Events(cs kubernetes.Interface, ns string) string {
	list, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return "(events: " + err.Error() + ")"
	}
	var b strings.Builder
	for _, e := range list.Items {
		fmt.Fprintf(&b, "%s %s/%s %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
	return b.String()
}

// Logs returns a container's log (for failure messages).
func Logs(cs kubernetes.Interface, ns, pod, container string) string {
	b, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if err != nil {
		return "(logs: " + err.Error() + ")"
	}
	return string(b)
}
