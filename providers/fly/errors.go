package fly

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/superfly/fly-go/flaps"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// apiStatus returns the HTTP status of a Machines API error (0 when err
// is not an API answer).
func apiStatus(err error) int {
	var fe *flaps.FlapsError
	if errors.As(err, &fe) {
		return fe.ResponseStatusCode
	}
	return 0
}

// isNotFound reports whether err is a 404 from the Machines API.
func isNotFound(err error) bool { return apiStatus(err) == http.StatusNotFound }

// apiMessage is the API's own error text ({"error": "..."}), lowercased.
func apiMessage(err error) string {
	var fe *flaps.FlapsError
	if errors.As(err, &fe) && fe.OriginalError != nil {
		return strings.ToLower(fe.OriginalError.Error())
	}
	return ""
}

// apiError turns a flaps error of op (on Machine id, when set) into a
// clear error wrapping the providers sentinel that fits: a refused token
// or an unknown app is [providers.ErrUnavailable] (nothing can be created
// until the configuration is fixed), an image Fly cannot pull is
// [providers.ErrImageMissing], a Machine that is not there is
// [providers.ErrGone]. The API's full answer (status, body, request id) is
// logged, not returned: the error can reach a client.
func (p *Provider) apiError(op, id string, err error) error {
	what := "fly: " + op
	if id != "" {
		what += " machine " + id
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var fe *flaps.FlapsError
	if !errors.As(err, &fe) {
		var ne net.Error
		var oe *net.OpError
		if errors.As(err, &ne) || errors.As(err, &oe) {
			return fmt.Errorf("%s: machines api unreachable at %s (%w): %w", what, p.opts.APIURL, providers.ErrUnavailable, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	p.logger.Warn("machines api error",
		zap.String("op", op),
		zap.String("app", p.opts.App),
		zap.String("machine_id", id),
		zap.Int("status", fe.ResponseStatusCode),
		zap.String("fly_request_id", fe.FlyRequestId),
		zap.String("body", truncate(fe.ResponseBodyString(), 2048)))
	status, msg := fe.ResponseStatusCode, apiMessage(err)
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fmt.Errorf("%s: the Machines API refused the token for app %q (HTTP %d): check the provider's token (%w)",
			what, p.opts.App, status, providers.ErrUnavailable)
	case looksLikeImage(status, msg):
		return fmt.Errorf("%s: Fly cannot pull image %q: push it to a registry Fly can read, e.g. registry.fly.io/%s (%w)",
			what, p.opts.Image, p.opts.App, providers.ErrImageMissing)
	case status == http.StatusNotFound && (id == "" || strings.Contains(msg, "app")):
		return fmt.Errorf("%s: Fly app %q not found: create it with fly apps create %s (%w)",
			what, p.opts.App, p.opts.App, providers.ErrUnavailable)
	case status == http.StatusNotFound:
		return fmt.Errorf("%s: no such machine (%w)", what, providers.ErrGone)
	case status >= 500:
		return fmt.Errorf("%s: machines api failed (HTTP %d) (%w)", what, status, providers.ErrUnavailable)
	}
	return fmt.Errorf("%s: machines api answered HTTP %d: %s", what, status, truncate(msg, 200))
}

// looksLikeImage reports whether a create refusal is about the image (Fly
// answers 4xx with a message naming the image, its manifest or the pull).
func looksLikeImage(status int, msg string) bool {
	if status < 400 || status >= 500 || status == http.StatusTooManyRequests || status == http.StatusUnauthorized || status == http.StatusForbidden {
		return false
	}
	for _, w := range []string{"image", "manifest", "pull", "repository"} {
		if strings.Contains(msg, w) {
			return true
		}
	}
	return false
}

// truncate shortens s to at most n bytes for logs and messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
