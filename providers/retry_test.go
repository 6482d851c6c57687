package providers

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		{"capped", "3600", MaxRetryAfter, MaxRetryAfter},
		{"http date", time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat), time.Second, 3 * time.Second},
		{"date in the past", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0, 0},
		{"absent: jittered backoff", "", backoff, backoff + backoff/4},
		{"garbage: jittered backoff", "soon", backoff, backoff + backoff/4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RetryAfter(tc.header, backoff)
			assert.GreaterOrEqual(t, got, tc.min)
			assert.LessOrEqual(t, got, tc.max)
		})
	}
}

// TestRetryTransport: 429s are retried with the body sent again each
// time (from GetBody when the request has one), 5xx answers only as many
// times as asked, and a context that ends stops the waiting.
func TestRetryTransport(t *testing.T) {
	for _, tc := range []struct {
		name         string
		statuses     []int // answered in turn, the last one from then on
		serverErrors int
		streamed     bool // the body comes from GetBody
		wantStatus   int
		wantCalls    int
	}{
		{"429s then success", []int{429, 429, 200}, 0, false, 200, 3},
		{"429s then success, streamed body", []int{429, 200}, 0, true, 200, 2},
		{"5xx not retried by default", []int{503, 200}, 0, false, 503, 1},
		{"5xx retried as asked", []int{502, 503, 200}, 2, false, 200, 3},
		{"5xx retries run out", []int{502, 502, 502, 200}, 2, false, 502, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				calls = append(calls, string(b))
				status := tc.statuses[min(len(calls), len(tc.statuses))-1]
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(status)
			}))
			defer srv.Close()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader("payload"))
			require.NoError(t, err)
			if tc.streamed {
				req.Body = io.NopCloser(strings.NewReader("payload"))
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("payload")), nil }
			} else {
				req.GetBody = nil
			}
			resp, err := (&RetryTransport{ServerErrors: tc.serverErrors, API: "test api"}).RoundTrip(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, tc.wantStatus, resp.StatusCode)
			require.Len(t, calls, tc.wantCalls)
			for i, body := range calls {
				assert.Equal(t, "payload", body, "the body of attempt %d", i+1)
			}
		})
	}

	t.Run("a context that ends stops the wait", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		}))
		defer srv.Close()
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			_, err := (&RetryTransport{API: "test api"}).RoundTrip(req)
			done <- err
		}()
		cancel()
		err = <-done
		assert.ErrorIs(t, err, context.Canceled)
	})
}
