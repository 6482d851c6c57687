package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Sleep deletes the agent's pod gracefully (SIGTERM; the agent exits at
// once) and returns once it is gone, keeping the claim (workspace and CLI
// session) and the Secret (token and pod spec), so [Provider.Wake] can
// start a new pod on the same claim. The ID does not change.
//
// When the claim's session, owner or conversation differ from inst's (a
// warm-pool agent bound to a session after it was made), its annotations,
// the Secret's and the session-hash label are set to inst's and the pool
// annotation dropped first: the claim and the Secret outlive the pod, so
// a restarted gateway finds the conversation by its session. Sleeping an
// agent that is asleep is not an error. One that no longer exists is an
// error wrapping providers.ErrGone.
func (p *Provider) Sleep(ctx context.Context, inst *providers.Instance) (*providers.Instance, error) {
	began := time.Now()
	o, err := p.getOwn(ctx, "sleep", inst.ID)
	if err != nil {
		return nil, err
	}
	rebound := identityKeys.Rebinds(o.claim.Annotations, inst)
	if rebound {
		if o.claim, err = p.rebind(ctx, inst); err != nil {
			return nil, err
		}
	}
	if o.pod != nil {
		p.markEnded(o.pod.UID, endSlept)
		if err := p.stopPod(ctx, o.pod, nil); err != nil {
			return nil, fmt.Errorf("kubernetes: sleep %s: %w", inst.ID, err)
		}
	}
	out := p.instance(o.claim, string(o.secret.Data[tokenKey]))
	p.logger.Info("agent asleep",
		zap.String("instance_id", inst.ID),
		zap.String("session_id", out.SessionID),
		zap.Bool("rebound", rebound),
		zap.Bool("had_pod", o.pod != nil),
		zap.Duration("sleep_duration", time.Since(began)))
	return out, nil
}

// rebind records inst's session, owner and conversation on the claim and
// the Secret (annotations, and the session-hash label) and drops their
// pool annotation; it returns the claim as updated.
func (p *Provider) rebind(ctx context.Context, inst *providers.Instance) (*corev1.PersistentVolumeClaim, error) {
	annotations := map[string]any{AnnotationPool: nil}
	for k, v := range identityKeys.Binding(inst) {
		annotations[k] = v
	}
	var hash any
	if h := sessionHash(inst.SessionID); h != "" {
		hash = h
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": annotations,
		"labels":      map[string]any{LabelSessionHash: hash},
	}})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: sleep %s: encode the binding patch: %w", inst.ID, err)
	}
	ns := p.opts.Namespace
	if _, err := p.cs.CoreV1().Secrets(ns).Patch(ctx, inst.ID, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return nil, p.apiError("sleep: record the session on secret", inst.ID, err)
	}
	claim, err := p.cs.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, inst.ID, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, p.apiError("sleep: record the session on claim", inst.ID, err)
	}
	return claim, nil
}

// stopPod deletes pod (gracefully, or with grace when set) unless it is
// being deleted already, closes its port forward, and waits until it is
// gone.
func (p *Provider) stopPod(ctx context.Context, pod *corev1.Pod, grace *int64) error {
	closeForward(p.forwardKey(pod.UID))
	if pod.DeletionTimestamp == nil {
		err := p.cs.CoreV1().Pods(p.opts.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: grace, Preconditions: &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil // gone, or replaced by another pod of the name
		}
		if err != nil {
			return p.apiError("delete pod", pod.Name, err)
		}
	}
	return p.waitPodDeleted(ctx, pod.Name, pod.UID)
}

// Wake starts a sleeping (or killed, or evicted) agent: a new pod of the
// same name from the spec kept in its Secret, on the same claim, where
// the agent resumes its CLI session from /state. It returns once the pod
// is Ready and the agent answers ready. A dead pod still there (failed,
// evicted, being deleted) is removed first; a pod that runs or is
// starting is waited for and returned as it is. An agent whose claim or
// Secret no longer exists is an error wrapping providers.ErrGone.
func (p *Provider) Wake(ctx context.Context, id string) (*providers.Instance, error) {
	began := time.Now()
	o, err := p.getOwn(ctx, "wake", id)
	if err != nil {
		return nil, err
	}
	token := string(o.secret.Data[tokenKey])
	pod := o.pod
	wasRunning := pod != nil && pod.DeletionTimestamp == nil && (pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == corev1.PodPending)
	if !wasRunning {
		if pod, err = p.recreate(ctx, o); err != nil {
			return nil, err
		}
	}
	createdAt := time.Now()
	pod, url, err := p.start(ctx, pod, token)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: wake %s: %w", id, err)
	}
	inst := p.instance(o.claim, token)
	inst.State, inst.URL = providers.StateRunning, url
	p.logger.Info("agent awake",
		zap.String("instance_id", id),
		zap.String("session_id", inst.SessionID),
		zap.Bool("was_running", wasRunning),
		zap.String("node", pod.Spec.NodeName),
		zap.String("url", url),
		zap.Duration("create_duration", createdAt.Sub(began)),
		zap.Duration("wake_duration", time.Since(began)))
	return inst, nil
}

// recreate removes the instance's dead pod, if any, and creates a new one
// from the spec in its Secret with the claim's labels and annotations. A
// pod created meanwhile by another wake is returned instead.
func (p *Provider) recreate(ctx context.Context, o objects) (*corev1.Pod, error) {
	name := o.claim.Name
	if o.pod != nil {
		p.markEnded(o.pod.UID, endDestroyed)
		zero := int64(0) // dead already: nothing to shut down
		if err := p.stopPod(ctx, o.pod, &zero); err != nil {
			return nil, fmt.Errorf("kubernetes: wake %s: remove the dead pod: %w", name, err)
		}
	}
	var spec corev1.PodSpec
	raw := o.secret.Data[podSpecKey]
	if len(raw) == 0 {
		return nil, fmt.Errorf("kubernetes: wake %s: %w", name, errNoPodSpec)
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("kubernetes: wake %s: decode the pod spec in its secret: %w", name, err)
	}
	m := instanceMeta{labels: o.claim.Labels, annotations: o.claim.Annotations}
	pods := p.cs.CoreV1().Pods(p.opts.Namespace)
	pod, err := pods.Create(ctx, p.podFor(o.claim, m, spec), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		pod, err = pods.Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, p.apiError("wake: create pod", name, err)
	}
	p.closePodForwards(name, pod.UID)
	return pod, nil
}
