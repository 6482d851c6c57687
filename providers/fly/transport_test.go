package fly

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestRetryAfter(t *testing.T) {
	backoff := time.Second
	for _, tc := range []struct {
		name     string
		header   string
		min, max time.Duration
	}{
		{"seconds", "2", 2 * time.Second, 2 * time.Second},
		{"zero seconds", "0", 0, 0},
		{"capped", "3600", maxRetryAfter, maxRetryAfter},
		{"http date", time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat), time.Second, 3 * time.Second},
		{"date in the past", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0, 0},
		{"absent: jittered backoff", "", backoff, backoff + backoff/4},
		{"garbage: jittered backoff", "soon", backoff, backoff + backoff/4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := retryAfter(tc.header, backoff)
			assert.GreaterOrEqual(t, got, tc.min)
			assert.LessOrEqual(t, got, tc.max)
		})
	}
}
