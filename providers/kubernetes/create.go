package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Create makes the conversation's claim, Secret and pod and returns once
// the pod is Ready and the agent's /health answers ready. The names
// derive from the session id: a second Create of the same session fails
// with the API server's AlreadyExists, wrapped with providers.ErrExists,
// and leaves the first agent alone (see createClaim).
// On any other failure what this call made is deleted; an image the
// nodes cannot pull fails at once with an error wrapping
// providers.ErrImageMissing rather than at the ready timeout.
func (p *Provider) Create(ctx context.Context, spec providers.Spec) (_ *providers.Instance, err error) {
	what := fmt.Sprintf("kubernetes: create agent for session %q", spec.SessionID)
	cfgJSON, err := providers.CheckCreate(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := p.ensureNetworkPolicy(ctx); err != nil {
		return nil, err
	}

	name := p.instanceName(spec)
	m := p.metaFor(name, spec.Identity(p.Name()))
	token := randhex.String(32)
	podSpec := p.podSpec(spec, name, cfgJSON)
	began := time.Now()
	p.creating.Mark(name)
	defer p.creating.Forget(name)

	var made made
	defer func() {
		if err != nil {
			p.cleanup(ctx, name, made)
		}
	}()
	// The create calls are quick and are not abandoned half-way when ctx
	// ends (the API server would finish them anyway): so the cleanup
	// knows exactly what exists.
	mkCtx, cancelMk := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancelMk()
	claim, err := p.createClaim(mkCtx, name, m)
	if err != nil {
		return nil, err
	}
	made.claim = true
	secret, err := p.secretFor(claim, m, token, podSpec)
	if err != nil {
		return nil, err
	}
	if _, err := p.cs.CoreV1().Secrets(p.opts.Namespace).Create(mkCtx, secret, metav1.CreateOptions{}); err != nil {
		return nil, p.apiError("create secret", name, err)
	}
	made.secret = true
	pod, err := p.cs.CoreV1().Pods(p.opts.Namespace).Create(mkCtx, p.podFor(claim, m, podSpec), metav1.CreateOptions{})
	if err != nil {
		return nil, p.apiError("create pod", name, err)
	}
	made.pod = pod.UID
	createdAt := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}

	pod, url, err := p.start(ctx, pod, token)
	if err != nil {
		return nil, fmt.Errorf("%s: pod %s: %w", what, name, err)
	}
	inst := p.instance(claim, token)
	inst.State, inst.URL = providers.StateRunning, url
	p.logger.Info("agent pod created",
		zap.String("instance_id", name),
		zap.String("session_id", spec.SessionID),
		zap.String("node", pod.Spec.NodeName),
		zap.String("image", podSpec.Containers[0].Image),
		zap.String("url", url),
		zap.Duration("create_duration", createdAt.Sub(began)),
		zap.Duration("ready_duration", time.Since(createdAt)),
		zap.Duration("ready_after", time.Since(began)),
	)
	return inst, nil
}

// createClaim creates the conversation's claim, its anchor. Its name is
// the session's and the API server's names are unique in a namespace, so
// when it exists the session has an agent already (made by another
// gateway sharing the namespace, or by an earlier attempt): the error
// wraps providers.ErrExists (and the API server's AlreadyExists), and the
// caller has made nothing to undo. The claim of a destroyed agent, still
// being deleted (its pod is going), is no agent: it is waited for and the
// create tried again, once.
func (p *Provider) createClaim(ctx context.Context, name string, m instanceMeta) (*corev1.PersistentVolumeClaim, error) {
	claims := p.cs.CoreV1().PersistentVolumeClaims(p.opts.Namespace)
	for attempt := 0; ; attempt++ {
		claim, err := claims.Create(ctx, p.claimFor(name, m), metav1.CreateOptions{})
		if err == nil {
			return claim, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, p.apiError("create claim", name, err)
		}
		old, gerr := claims.Get(ctx, name, metav1.GetOptions{})
		switch {
		case attempt > 0:
		case apierrors.IsNotFound(gerr):
			continue // deleted since
		case gerr == nil && old.DeletionTimestamp != nil:
			p.logger.Info("waiting for a destroyed agent's claim to be deleted", zap.String("instance_id", name))
			if err := p.waitClaimDeleted(ctx, name, old.UID); err != nil {
				return nil, fmt.Errorf("kubernetes: create claim %s: the destroyed agent's claim is still being deleted: %w", name, err)
			}
			continue
		}
		return nil, fmt.Errorf("kubernetes: create claim %s: it exists in namespace %q: this conversation has an agent already (%w): %w",
			name, p.opts.Namespace, providers.ErrExists, err)
	}
}

// made is what a Create has made so far.
type made struct {
	claim, secret bool
	pod           types.UID // empty until the pod exists
}

// instance is the Instance a claim (its identity and creation time) and
// token describe, not running.
func (p *Provider) instance(claim *corev1.PersistentVolumeClaim, token string) *providers.Instance {
	inst := &providers.Instance{
		ID:        claim.Name,
		State:     providers.StateStopped,
		Token:     token,
		CreatedAt: claim.CreationTimestamp.Time,
	}
	identityKeys.Identity(claim.Annotations).Apply(inst)
	return inst
}

// start waits until pod is Ready, reaches its agent and waits for its
// /health to answer ready, within the ready timeout. It returns the pod
// as it is then and the agent's URL.
func (p *Provider) start(ctx context.Context, pod *corev1.Pod, token string) (*corev1.Pod, string, error) {
	timeout := time.Duration(p.opts.ReadyTimeout)
	readyCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pod, err := p.waitPodReady(readyCtx, pod)
	if err != nil {
		return nil, "", err
	}
	url, err := p.agentURL(pod)
	if err != nil {
		return nil, "", err
	}
	if p.opts.Reach == ReachPortForward {
		if err := p.dialForward(pod.UID); err != nil {
			return nil, "", err
		}
	}
	if err := providers.WaitReady(readyCtx, &agentclient.Client{BaseURL: url, Token: token}); err != nil {
		if ferr := p.forwardError(pod.UID); ferr != nil {
			return nil, "", fmt.Errorf("the pod is Ready but its agent at %s is not after %s: %w (%w)", url, timeout, err, ferr)
		}
		return nil, "", fmt.Errorf("the pod is Ready but its agent at %s is not after %s: %w", url, timeout, err)
	}
	return pod, url, nil
}

// agentURL is where the control plane reaches the agent of a running
// pod: its pod IP, or a local port forwarded to it.
func (p *Provider) agentURL(pod *corev1.Pod) (string, error) {
	if p.opts.Reach == ReachPortForward {
		return p.forwardURL(pod)
	}
	if pod.Status.PodIP == "" {
		return "", fmt.Errorf("kubernetes: pod %s has no IP yet", pod.Name)
	}
	return "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(agentPort)), nil
}

// cleanup deletes what a failed Create made and waits (within the cleanup
// budget) until the claim is gone, so the same conversation can be
// created again. It runs even when ctx is cancelled.
func (p *Provider) cleanup(ctx context.Context, name string, m made) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancel()
	if m.pod != "" {
		p.markEnded(m.pod, endDestroyed)
		closeForward(p.forwardKey(m.pod))
		// The agent never served anyone: nothing to shut down gracefully.
		zero := int64(0)
		p.logDelete("pod", name, p.cs.CoreV1().Pods(p.opts.Namespace).Delete(ctx, name,
			metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &m.pod}}))
	}
	if m.secret {
		p.logDelete("secret", name, p.cs.CoreV1().Secrets(p.opts.Namespace).Delete(ctx, name, metav1.DeleteOptions{}))
	}
	if !m.claim {
		return
	}
	claims := p.cs.CoreV1().PersistentVolumeClaims(p.opts.Namespace)
	claim, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		p.logDelete("claim", name, err)
		return
	}
	p.logDelete("claim", name, claims.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &claim.UID}}))
	if err := p.waitClaimDeleted(ctx, name, claim.UID); err != nil {
		p.logger.Warn("claim not yet deleted after a failed create", zap.String("instance_id", name), zap.Error(err))
	}
}

// logDelete logs a failed delete (or read) of a failed Create's object,
// unless it is already gone: the cleanup goes on.
func (p *Provider) logDelete(kind, name string, err error) {
	if err != nil && !apierrors.IsNotFound(err) {
		p.logger.Warn("could not delete an object after a failed create",
			zap.String("instance_id", name), zap.String("kind", kind), zap.Error(err))
	}
}

// ensureNetworkPolicy creates (or brings up to date), once per provider
// value, the NetworkPolicy that admits ingress to agents only from the
// gateway, when the options ask for one.
func (p *Provider) ensureNetworkPolicy(ctx context.Context) error {
	if p.opts.NetworkPolicy == nil {
		return nil
	}
	p.mu.Lock()
	ok := p.policyOK
	p.mu.Unlock()
	if ok {
		return nil
	}
	want := p.networkPolicy()
	api := p.cs.NetworkingV1().NetworkPolicies(p.opts.Namespace)
	have, err := api.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return p.apiError("create network policy", want.Name, err)
		}
		p.logger.Info("agent network policy created", zap.String("network_policy", want.Name))
	case err != nil:
		return p.apiError("read network policy", want.Name, err)
	case !equality.Semantic.DeepEqual(have.Spec, want.Spec):
		have.Spec = want.Spec
		if _, err := api.Update(ctx, have, metav1.UpdateOptions{}); err != nil {
			return p.apiError("update network policy", want.Name, err)
		}
		p.logger.Info("agent network policy updated", zap.String("network_policy", want.Name))
	}
	p.mu.Lock()
	p.policyOK = true
	p.mu.Unlock()
	return nil
}

// errNoPodSpec marks a Secret without the pod spec a wake needs.
var errNoPodSpec = errors.New("its secret holds no " + podSpecKey)
