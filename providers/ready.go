package providers

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/agcluster/caddy-agcluster/agent/agentclient"
)

// WaitReady polls the agent's /health with a tight, growing backoff (1 ms
// doubling to 100 ms) until it answers 200, or ctx ends. The error wraps
// ErrNotReady and says what the agent last reported.
func WaitReady(ctx context.Context, c *agentclient.Client) error {
	wait := time.Millisecond
	var last string
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, status, err := c.Health(attempt)
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
		wait = min(wait*2, 100*time.Millisecond)
	}
}
