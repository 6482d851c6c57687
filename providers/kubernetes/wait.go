package kubernetes

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Container waiting reasons (the kubelet's) that end a start at once.
var (
	// imageReasons: the image cannot be pulled (or, with policy Never, is
	// not on the node).
	imageReasons = []string{"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
	// configReasons: the container cannot be made from its spec (a
	// missing Secret key, a refused setting).
	configReasons = []string{"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)

// oneByName lists and watches the namespace's objects of resource with
// this name (a field selector), for an informer.
func (p *Provider) oneByName(resource, name string) cache.ListerWatcher {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return cache.NewFilteredListWatchFromClient(p.cs.CoreV1().RESTClient(), resource, p.opts.Namespace,
		func(o *metav1.ListOptions) { o.FieldSelector = sel })
}

// waitPodReady watches pod until it is Ready and returns it as it is
// then. A pod that fails, is deleted, or whose image cannot be pulled or
// container cannot be made ends the wait with an error (wrapping
// providers.ErrImageMissing for an image, providers.ErrNotReady
// otherwise); when ctx ends first the error says where the pod was stuck
// (unschedulable, claim pending, image pulling...).
func (p *Provider) waitPodReady(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	last := pod
	_, err := watchtools.UntilWithSync(ctx, p.oneByName("pods", pod.Name), &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		cur, ok := ev.Object.(*corev1.Pod)
		if !ok || cur.UID != pod.UID {
			return false, nil // an older pod of the same name going away
		}
		last = cur
		if ev.Type == watch.Deleted {
			return false, fmt.Errorf("pod deleted while starting (%w)", providers.ErrNotReady)
		}
		return podStarted(cur, p.opts.Image)
	})
	if err == nil {
		return last, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("not ready after %s: %s (%w): %w",
			time.Duration(p.opts.ReadyTimeout), p.diagnosis(last), providers.ErrNotReady, ctx.Err())
	}
	return nil, err
}

// podStarted reports whether pod is Ready, or why it never will be: an
// error wrapping providers.ErrImageMissing when its image cannot be
// pulled, providers.ErrNotReady when it is deleted, failed, or its
// container cannot be made. defaultImage names the image in advice when
// the pod does not say.
func podStarted(pod *corev1.Pod, defaultImage string) (bool, error) {
	if pod.DeletionTimestamp != nil {
		return false, fmt.Errorf("pod is being deleted (%w)", providers.ErrNotReady)
	}
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return false, fmt.Errorf("pod %s%s (%w)", strings.ToLower(string(pod.Status.Phase)), exitDetail(pod), providers.ErrNotReady)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch {
			case slices.Contains(imageReasons, w.Reason):
				return false, fmt.Errorf("image %q cannot be pulled (%s: %s): push it to a registry the nodes can pull from, or check image_pull_policy and image_pull_secrets (%w)",
					cmp.Or(cs.Image, defaultImage), w.Reason, w.Message, providers.ErrImageMissing)
			case slices.Contains(configReasons, w.Reason):
				return false, fmt.Errorf("container cannot start (%s: %s) (%w)", w.Reason, w.Message, providers.ErrNotReady)
			}
		}
		if cs.State.Terminated != nil {
			return false, fmt.Errorf("container exited%s (%w)", exitDetail(pod), providers.ErrNotReady)
		}
	}
	return podReady(pod), nil
}

// podReady reports whether pod's Ready condition is true.
func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// exitDetail describes how the agent container ended: its exit code,
// reason and message (with the termination message policy, its last log
// lines), or "" when it has not.
func exitDetail(pod *corev1.Pod) string {
	var b strings.Builder
	if pod.Status.Reason != "" {
		fmt.Fprintf(&b, " (%s: %s)", pod.Status.Reason, pod.Status.Message)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			fmt.Fprintf(&b, ": exit code %d", t.ExitCode)
			if t.Reason != "" {
				fmt.Fprintf(&b, " (%s)", t.Reason)
			}
			if msg := strings.TrimSpace(t.Message); msg != "" {
				fmt.Fprintf(&b, "\nlast log lines:\n%s", msg)
			}
		}
	}
	return b.String()
}

// diagnosis says where a pod that is not Ready is stuck: unscheduled (and
// why, e.g. no node fits or its claim is unbound), its claim pending, its
// container waiting (and why), or running but not ready.
func (p *Provider) diagnosis(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			return fmt.Sprintf("pod not scheduled (%s: %s)%s", c.Reason, c.Message, p.claimDiagnosis(pod.Name))
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			return fmt.Sprintf("container waiting (%s: %s)", w.Reason, w.Message)
		}
		if cs.State.Running != nil {
			return "container running, readiness probe on /health not passing"
		}
	}
	return fmt.Sprintf("pod %s", strings.ToLower(string(pod.Status.Phase)))
}

// claimDiagnosis adds a pending claim's state to a diagnosis: an unbound
// claim is the usual reason a pod is not scheduled (no default
// StorageClass, or no provisioner).
func (p *Provider) claimDiagnosis(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.cs.CoreV1().PersistentVolumeClaims(p.opts.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || c.Status.Phase == corev1.ClaimBound {
		return ""
	}
	class := "the cluster's default StorageClass"
	if c.Spec.StorageClassName != nil {
		class = fmt.Sprintf("StorageClass %q", *c.Spec.StorageClassName)
	}
	return fmt.Sprintf("; claim %s is %s: check that %s exists and provisions volumes (storage_class)", name, c.Status.Phase, class)
}

// waitPodDeleted waits until the pod with this name and UID is gone.
func (p *Provider) waitPodDeleted(ctx context.Context, name string, uid types.UID) error {
	return p.waitDeleted(ctx, p.oneByName("pods", name), &corev1.Pod{}, name, uid)
}

// waitClaimDeleted waits until the claim with this name and UID is gone.
func (p *Provider) waitClaimDeleted(ctx context.Context, name string, uid types.UID) error {
	return p.waitDeleted(ctx, p.oneByName("persistentvolumeclaims", name), &corev1.PersistentVolumeClaim{}, name, uid)
}

// waitDeleted waits, through an informer on lw, until the object of this
// name and UID no longer exists (another object of the same name does not
// count).
func (p *Provider) waitDeleted(ctx context.Context, lw cache.ListerWatcher, obj runtime.Object, name string, uid types.UID) error {
	key := p.opts.Namespace + "/" + name
	gone := func(store cache.Store) (bool, error) {
		o, exists, err := store.GetByKey(key)
		if err != nil || !exists {
			return err == nil, err
		}
		m, err := meta.Accessor(o)
		return err == nil && m.GetUID() != uid, err
	}
	_, err := watchtools.UntilWithSync(ctx, lw, obj, gone, func(ev watch.Event) (bool, error) {
		m, err := meta.Accessor(ev.Object)
		return err == nil && ev.Type == watch.Deleted && m.GetUID() == uid, nil
	})
	if err != nil {
		return fmt.Errorf("kubernetes: wait for %s to be deleted: %w", name, err)
	}
	return nil
}
