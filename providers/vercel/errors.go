package vercel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// apiError turns a Sandbox API error of op (on sandbox name, when set)
// into a clear error wrapping the providers sentinel that fits: a refused
// token (403) or an unknown project (404) is [providers.ErrUnavailable]
// (nothing can be created until the configuration is fixed), a sandbox
// that is not there is [providers.ErrGone], a snapshot that is gone
// [providers.ErrImageMissing], 5xx and rate limits that outlasted the
// call [providers.ErrUnavailable]. The API's full answer (status, code,
// body) is logged, not returned: the error can reach a client.
func (p *Provider) apiError(op, name string, err error) error {
	what := "vercel: " + op
	if name != "" {
		what += " sandbox " + name
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var ae *sandboxapi.APIError
	if !errors.As(err, &ae) {
		var ne net.Error
		if errors.As(err, &ne) {
			return fmt.Errorf("%s: the sandbox api is unreachable at %s (%w): %w", what, p.opts.APIURL, providers.ErrUnavailable, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	p.logger.Warn("vercel sandbox api error",
		zap.String("op", op),
		zap.String("project_id", p.opts.ProjectID),
		zap.String("sandbox", name),
		zap.Int("status", ae.Status),
		zap.String("code", ae.Code),
		zap.String("request", ae.Method+" "+ae.Path),
		zap.String("body", truncate(ae.Body, 2048)))
	switch {
	case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
		return fmt.Errorf("%s: the Vercel API refused the token for project %q (HTTP %d): check the provider's token and team_id (%w)",
			what, p.opts.ProjectID, ae.Status, providers.ErrUnavailable)
	case ae.Status == http.StatusNotFound && (name == "" || projectMissing(err)):
		return fmt.Errorf("%s: Vercel project %q not found (is it in team %q?): check the provider's project_id and team_id (%w)",
			what, p.opts.ProjectID, p.opts.TeamID, providers.ErrUnavailable)
	case ae.Status == http.StatusNotFound:
		return fmt.Errorf("%s: no such sandbox (%w)", what, providers.ErrGone)
	case ae.Code == sandboxapi.CodeSnapshotNotFound:
		return fmt.Errorf("%s: the agent snapshot is gone: set the provider's snapshot to one that exists, or leave it out to prepare one (%w)",
			what, providers.ErrImageMissing)
	case ae.Status == http.StatusGone:
		return fmt.Errorf("%s: the sandbox is stopped", what)
	case sandboxapi.IsTransient(err):
		return fmt.Errorf("%s: the sandbox is on its way down (%s)", what, ae.Code)
	case ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusPaymentRequired || ae.Status >= 500:
		return fmt.Errorf("%s: the sandbox api answered HTTP %d (%w)", what, ae.Status, providers.ErrUnavailable)
	}
	return fmt.Errorf("%s: the sandbox api answered HTTP %d: %s", what, ae.Status, truncate(ae.Message, 200))
}

// truncate shortens s to at most n bytes for logs and messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func splitLines(s string) []string {
	return strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
}
