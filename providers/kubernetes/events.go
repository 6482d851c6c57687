package kubernetes

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/agcluster/caddy-agcluster/providers"
)

// killedExitCode is reported for a pod deleted behind the gateway's back
// before its container reported an exit: like a kill.
const killedExitCode = 137

// watchFailed is why an event stream ended on its own.
type watchFailed struct{ err error }

func (w *watchFailed) Error() string { return w.err.Error() }

// Events reports what happens to this provider's agent pods, from an
// informer on their labels: a pod that fails, is evicted, or is deleted
// (or starts being deleted) by anyone but this Provider is
// providers.ReasonDied, with its container's exit code (137 when it had
// none); an agent container killed for lack of memory is
// providers.ReasonOOM followed by ReasonDied; a pod this Provider put to
// sleep is providers.ReasonSlept; one it destroyed is no event. The
// subscription is in place (the informer synced) when Events returns.
// The informer re-lists and re-watches by itself after a broken watch
// (pods that ended meanwhile are reported then); a refusal of the
// credentials or permissions, or a missing namespace, ends the stream
// with one error wrapping providers.ErrUnavailable. Both channels are
// closed then, or when ctx ends.
func (p *Provider) Events(ctx context.Context) (<-chan providers.Event, <-chan error) {
	out := make(chan providers.Event)
	outErr := make(chan error, 1)
	ctx, cancel := context.WithCancelCause(ctx)
	queue := make(chan providers.Event, 64)
	send := func(evs []providers.Event) {
		for _, ev := range evs {
			select {
			case queue <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
	sel := labels.SelectorFromSet(p.selectorLabels()).String()
	lw := cache.NewFilteredListWatchFromClient(p.cs.CoreV1().RESTClient(), "pods", p.opts.Namespace,
		func(o *metav1.ListOptions) { o.LabelSelector = sel })
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || namespaceMissing(err) {
			cancel(&watchFailed{p.apiError("watch pods", "", err)})
			return
		}
		p.logger.Debug("pod watch interrupted; resuming", zap.Error(err))
	})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) { send(p.eventsFor(podOf(old), podOf(cur))) },
		DeleteFunc: func(obj any) { send(p.eventsFor(podOf(obj), nil)) },
	})
	go inf.RunWithContext(ctx)
	synced := cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)

	go func() {
		defer close(out)
		defer close(outErr)
		defer cancel(nil) // stops the informer
		if synced {
			relay(ctx, queue, out)
		}
		var wf *watchFailed
		if errors.As(context.Cause(ctx), &wf) {
			outErr <- wf.err
		}
	}()
	return out, outErr
}

// relay passes events from queue to out until ctx ends.
func relay(ctx context.Context, queue <-chan providers.Event, out chan<- providers.Event) {
	for {
		select {
		case ev := <-queue:
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// podOf returns the pod an informer handed over (unwrapping the tombstone
// of a deletion it missed), or nil.
func podOf(obj any) *corev1.Pod {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, _ := obj.(*corev1.Pod)
	return pod
}

// eventsFor returns what a pod's change from old to cur (nil: deleted)
// means: nothing while it lives on (or when it had ended already),
// ReasonSlept or nothing for a pod this Provider deleted, and otherwise
// a death (an OOM kill first when the container was killed for memory).
// Pods this Provider is creating are left to Create.
func (p *Provider) eventsFor(old, cur *corev1.Pod) []providers.Event {
	if old == nil || podEnded(old) || (cur != nil && !podEnded(cur)) || p.creating.Has(old.Name) {
		return nil
	}
	last := old
	if cur != nil {
		last = cur
	}
	ev := providers.Event{InstanceID: old.Name, SessionID: old.Annotations[AnnotationSession], Time: time.Now()}
	switch p.endedBy(old.UID) {
	case endDestroyed:
		return nil
	case endSlept:
		ev.Reason = providers.ReasonSlept
		return []providers.Event{ev}
	}
	ev.Reason = providers.ReasonDied
	code, oom := exitOf(last)
	ev.ExitCode = code
	if !oom {
		return []providers.Event{ev}
	}
	killed := ev
	killed.Reason = providers.ReasonOOM
	return []providers.Event{killed, ev}
}

// podEnded reports whether a pod's agent is over or going: a terminal
// phase, or being deleted.
func podEnded(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}

// exitOf returns the agent container's exit code (137 when it reported
// none: the pod was deleted or its node lost) and whether it was killed
// for lack of memory.
func exitOf(pod *corev1.Pod) (int, bool) {
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && cs.Name == containerName {
			return int(t.ExitCode), t.Reason == "OOMKilled"
		}
	}
	return killedExitCode, false
}
