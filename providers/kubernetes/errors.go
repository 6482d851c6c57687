package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/agcluster/caddy-agcluster/providers"
)

// apiError turns a client-go error of op (on instance name, when set)
// into a clear error that wraps both the API error (so apierrors.IsXxx
// still answer) and the providers sentinel that fits: a refusal of the
// credentials or of a permission, and a missing namespace, are
// [providers.ErrUnavailable] (nothing can be created until the
// configuration is fixed), as is an API server that cannot be reached; an
// object that is not there is [providers.ErrGone].
func (p *Provider) apiError(op, name string, err error) error {
	what := "kubernetes: " + op
	if name != "" {
		what += " " + name
	}
	ns := p.opts.Namespace
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: the API server at %s refused the credentials (check the kubeconfig or the service account token) (%w): %w",
			what, p.cfg.Host, providers.ErrUnavailable, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s: forbidden in namespace %q: the gateway's identity lacks a permission; apply the Role in providers/kubernetes/deploy/rbac.yaml (%w): %w",
			what, ns, providers.ErrUnavailable, err)
	case namespaceMissing(err):
		return fmt.Errorf("%s: namespace %q does not exist: create it (kubectl create namespace %s) (%w): %w",
			what, ns, ns, providers.ErrUnavailable, err)
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%s: already exists in namespace %q: this conversation has an agent already: %w", what, ns, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: not found (%w): %w", what, providers.ErrGone, err)
	case unreachable(err):
		return fmt.Errorf("%s: API server at %s unavailable (%w): %w", what, p.cfg.Host, providers.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// namespaceMissing reports whether err says the namespace does not exist
// (a create in a missing namespace is a NotFound about the namespace).
func namespaceMissing(err error) bool {
	var se apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d != nil && d.Kind == "namespaces"
}

// unreachable reports whether err means the API server did not answer
// usefully: a network error, or its own overload and timeout answers.
func unreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err)
}
