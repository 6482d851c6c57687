package providers

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/agcluster/caddy-agcluster/agent/agentclient"
)

// WaitReady waits until the agent's /health answers 200, or ctx ends.
// While the agent does not answer yet it retries with a tight, growing
// backoff (1 ms doubling to 20 ms); once it answers, each request asks the
// agent to hold its answer until the CLI is ready (?wait=), so readiness is
// seen the moment it happens. The error wraps ErrNotReady and says what the
// agent last reported.
func WaitReady(ctx context.Context, c *agentclient.Client) error {
	const hold = 2 * time.Second
	wait := time.Millisecond
	var last string
	for {
		attempt, cancel := context.WithTimeout(ctx, hold+2*time.Second)
		h, status, err := c.HealthWait(attempt, hold)
		cancel()
		switch {
		case err == nil && status == http.StatusOK:
			return nil
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("status %q", h.Status)
			if h.Error != "" {
				last += ": " + h.Error
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s): %w", ErrNotReady, last, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 20*time.Millisecond)
	}
}
