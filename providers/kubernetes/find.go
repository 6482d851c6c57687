package kubernetes

import (
	"context"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/agcluster/caddy-agcluster/providers"
)

// Find returns the agent of session sessionID, running (its pod serves)
// or not (asleep: its pod deleted, its claim and Secret kept), read by
// the deterministic name the session's objects share (instanceName). A
// warm-pool agent, made under a random name, is found by its claim's
// session-hash label once a Sleep has recorded its session there. An
// error wraps providers.ErrGone when the session has no agent (no claim,
// or one being deleted).
func (p *Provider) Find(ctx context.Context, sessionID string) (*providers.Instance, error) {
	name := p.instanceName(providers.Spec{SessionID: sessionID})
	o, err := p.getOwn(ctx, "find", name)
	if errors.Is(err, providers.ErrGone) && o.claim == nil {
		if name, err = p.findByLabel(ctx, sessionID); err == nil {
			o, err = p.getOwn(ctx, "find", name)
		}
	}
	if err != nil {
		return nil, err
	}
	inst := p.instance(o.claim, string(o.secret.Data[tokenKey]))
	if p.serving(o.pod) {
		url, err := p.agentURL(o.pod)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: find session %q: %w", sessionID, err)
		}
		inst.State, inst.URL = providers.StateRunning, url
	}
	return inst, nil
}

// findByLabel returns the name of this provider's claim recorded for
// session sessionID (by its session-hash label and session annotation);
// an error wrapping providers.ErrGone when there is none.
func (p *Provider) findByLabel(ctx context.Context, sessionID string) (string, error) {
	sel := p.selectorLabels()
	sel[LabelSessionHash] = sessionHash(sessionID)
	claims, err := p.cs.CoreV1().PersistentVolumeClaims(p.opts.Namespace).List(ctx,
		metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
	if err != nil {
		return "", p.apiError("find: list claims", "", err)
	}
	for _, c := range claims.Items {
		if c.DeletionTimestamp == nil && p.owns(c.Labels) && c.Annotations[AnnotationSession] == sessionID {
			return c.Name, nil
		}
	}
	return "", fmt.Errorf("kubernetes: find session %q: no agent (%w)", sessionID, providers.ErrGone)
}

// Interface guard.
var _ providers.Finder = (*Provider)(nil)
