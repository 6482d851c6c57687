package kubernetes

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/agcluster/caddy-agcluster/providers"
)

// listOptions select this provider's objects.
func (p *Provider) listOptions() metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: labels.SelectorFromSet(p.selectorLabels()).String()}
}

// owns reports whether an object with these labels is one of this
// provider's (the same selection as listOptions).
func (p *Provider) owns(l map[string]string) bool {
	return identityKeys.Owns(l, p.Name())
}

// objects are an instance's claim, Secret and pod, each nil when absent.
type objects struct {
	claim  *corev1.PersistentVolumeClaim
	secret *corev1.Secret
	pod    *corev1.Pod
}

// lookup reads instance name's objects for op. One that exists but is not
// this provider's is refused.
func (p *Provider) lookup(ctx context.Context, op, name string) (objects, error) {
	var o objects
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		return o, nil // no object can have this name
	}
	ns := p.opts.Namespace
	var err error
	if o.claim, err = getOrNil(p.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})); err != nil {
		return o, p.apiError(op+": read claim", name, err)
	}
	if o.secret, err = getOrNil(p.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})); err != nil {
		return o, p.apiError(op+": read secret", name, err)
	}
	if o.pod, err = getOrNil(p.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})); err != nil {
		return o, p.apiError(op+": read pod", name, err)
	}
	for _, l := range o.labelSets() {
		if !p.owns(l) {
			return objects{}, fmt.Errorf("kubernetes: %s %s: not an agent of provider %q", op, name, p.Name())
		}
	}
	return o, nil
}

// getOrNil turns a Get's NotFound into a nil object.
func getOrNil[T any](obj *T, err error) (*T, error) {
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// labelSets are the labels of the objects that exist.
func (o objects) labelSets() []map[string]string {
	var out []map[string]string
	if o.claim != nil {
		out = append(out, o.claim.Labels)
	}
	if o.secret != nil {
		out = append(out, o.secret.Labels)
	}
	if o.pod != nil {
		out = append(out, o.pod.Labels)
	}
	return out
}

// getOwn reads a conversation's objects for op: its claim and Secret must
// exist (else an error wrapping providers.ErrGone), its pod may not.
func (p *Provider) getOwn(ctx context.Context, op, name string) (objects, error) {
	o, err := p.lookup(ctx, op, name)
	switch {
	case err != nil:
		return o, err
	case o.claim == nil:
		return o, fmt.Errorf("kubernetes: %s %s: no such agent (%w)", op, name, providers.ErrGone)
	case o.claim.DeletionTimestamp != nil:
		return o, fmt.Errorf("kubernetes: %s %s: being destroyed (%w)", op, name, providers.ErrGone)
	case o.secret == nil:
		return o, fmt.Errorf("kubernetes: %s %s: its secret is gone (%w)", op, name, providers.ErrGone)
	}
	return o, nil
}

// serving reports whether a pod runs an agent the control plane can
// reach: running, not being deleted, with an address.
func (p *Provider) serving(pod *corev1.Pod) bool {
	return pod != nil && pod.DeletionTimestamp == nil && pod.Status.Phase == corev1.PodRunning &&
		(p.opts.Reach == ReachPortForward || pod.Status.PodIP != "")
}

// List returns every conversation of this provider: its claim is the
// instance (ID: the claim's name, which its pod and Secret share), with
// its token from the Secret. One whose pod runs is StateRunning with its
// URL; one without a running pod (asleep, killed, evicted, or starting)
// is StateStopped, so a restarted gateway finds sleeping conversations
// too. Instances this Provider is still creating, and claims being
// deleted, are left out.
func (p *Provider) List(ctx context.Context) ([]*providers.Instance, error) {
	opts := p.listOptions()
	ns := p.opts.Namespace
	claims, err := p.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, opts)
	if err != nil {
		return nil, p.apiError("list claims", "", err)
	}
	secrets, err := p.cs.CoreV1().Secrets(ns).List(ctx, opts)
	if err != nil {
		return nil, p.apiError("list secrets", "", err)
	}
	pods, err := p.cs.CoreV1().Pods(ns).List(ctx, opts)
	if err != nil {
		return nil, p.apiError("list pods", "", err)
	}
	tokens := make(map[string]string, len(secrets.Items))
	for _, s := range secrets.Items {
		tokens[s.Name] = string(s.Data[tokenKey])
	}
	running := make(map[string]*corev1.Pod, len(pods.Items))
	for i := range pods.Items {
		if pod := &pods.Items[i]; p.serving(pod) {
			running[pod.Name] = pod
		}
	}
	out := make([]*providers.Instance, 0, len(claims.Items))
	for i := range claims.Items {
		claim := &claims.Items[i]
		if claim.DeletionTimestamp != nil || p.creating.Has(claim.Name) || !p.owns(claim.Labels) {
			continue
		}
		token := tokens[claim.Name]
		if token == "" {
			p.logger.Warn("skipping agent claim without a token secret", zap.String("instance_id", claim.Name))
			continue
		}
		inst := p.instance(claim, token)
		if pod := running[claim.Name]; pod != nil {
			url, err := p.agentURL(pod)
			if err != nil {
				p.logger.Warn("running agent pod unreachable", zap.String("instance_id", claim.Name), zap.Error(err))
			} else {
				inst.State, inst.URL = providers.StateRunning, url
			}
		}
		out = append(out, inst)
	}
	return out, nil
}

// Destroy deletes the agent's pod (with a 1 s grace period), its Secret
// and its claim, and returns once the pod is gone (the claim follows as
// soon as no pod uses it). An instance that no longer exists is not an
// error; one that is not this provider's is refused.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	o, err := p.lookup(ctx, "destroy", id)
	if err != nil {
		return err
	}
	if o.claim == nil && o.secret == nil && o.pod == nil {
		return nil
	}
	ns := p.opts.Namespace
	p.closePodForwards(id, "")
	if o.pod != nil {
		p.markEnded(o.pod.UID, endDestroyed)
		grace := int64(destroyGrace)
		err := p.cs.CoreV1().Pods(ns).Delete(ctx, id, metav1.DeleteOptions{
			GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &o.pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return p.apiError("destroy: delete pod", id, err)
		}
	}
	if o.secret != nil {
		if err := p.cs.CoreV1().Secrets(ns).Delete(ctx, id, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return p.apiError("destroy: delete secret", id, err)
		}
	}
	if o.claim != nil && o.claim.DeletionTimestamp == nil {
		if err := p.cs.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, id, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return p.apiError("destroy: delete claim", id, err)
		}
	}
	if o.pod != nil {
		if err := p.waitPodDeleted(ctx, id, o.pod.UID); err != nil {
			return err
		}
	}
	session := ""
	if o.claim != nil {
		session = o.claim.Annotations[AnnotationSession]
	}
	p.logger.Info("agent destroyed", zap.String("instance_id", id), zap.String("session_id", session))
	return nil
}

// Ping checks that the API server answers, the credentials and
// permissions hold, and the namespace exists: it lists the provider's
// pods (one at most) and makes a server-side dry run of a Secret's
// create, which stores nothing. Its error wraps
// [providers.ErrUnavailable] unless ctx ended.
func (p *Provider) Ping(ctx context.Context) error {
	opts := p.listOptions()
	opts.Limit = 1
	_, err := p.cs.CoreV1().Pods(p.opts.Namespace).List(ctx, opts)
	if err == nil {
		probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "agcluster-ping-", Labels: p.selectorLabels()}}
		_, err = p.cs.CoreV1().Secrets(p.opts.Namespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	}
	if err == nil {
		return nil
	}
	err = p.apiError("ping", "", err)
	if ctx.Err() == nil && !errors.Is(err, providers.ErrUnavailable) {
		err = fmt.Errorf("%w (%w)", err, providers.ErrUnavailable)
	}
	return err
}
