package providers

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Backoff of [RetryTransport]: a platform's rate limit (429) is waited
// out, never surfaced.
const (
	// FirstBackoff is the first wait when an answer names none.
	FirstBackoff = 250 * time.Millisecond
	// MaxBackoff caps the growing wait.
	MaxBackoff = 5 * time.Second
	// MaxRetryAfter caps a Retry-After the API asks for.
	MaxRetryAfter = 30 * time.Second
)

// RetryTransport is a platform API client's round tripper that retries
// 429 answers until the request's context ends, waiting what Retry-After
// says or a growing, jittered backoff, and (when ServerErrors is set) a
// few 5xx answers the same way. A request body is sent again from
// GetBody when the request has one (a streamed upload makes a new
// stream), else from a copy read into memory.
type RetryTransport struct {
	// Next sends the requests (nil: http.DefaultTransport).
	Next http.RoundTripper
	// Logger receives a debug line per retry; nil discards them.
	Logger *zap.Logger
	// API names the platform API in logs and errors, e.g. "machines api".
	API string
	// ServerErrors is how many times a 5xx answer is retried (0: none).
	ServerErrors int
}

// RoundTrip implements http.RoundTripper.
func (t *RetryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	getBody, err := replayable(req)
	if err != nil {
		return nil, err
	}
	next := t.Next
	if next == nil {
		next = http.DefaultTransport
	}
	wait := FirstBackoff
	serverErrors := 0
	for attempt := 1; ; attempt++ {
		out := req
		if attempt > 1 || getBody != nil {
			if out, err = withBody(req, getBody); err != nil {
				return nil, err
			}
		}
		resp, err := next.RoundTrip(out)
		if err != nil || !t.retry(resp, &serverErrors) {
			return resp, err
		}
		delay := RetryAfter(resp.Header.Get("Retry-After"), wait)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if t.Logger != nil {
			t.Logger.Debug("platform api answered a retryable status; retrying", zap.String("api", t.API),
				zap.String("method", req.Method), zap.String("path", req.URL.Path), zap.Int("status", resp.StatusCode),
				zap.Int("attempt", attempt), zap.Duration("delay", delay))
		}
		timer := time.NewTimer(delay)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, fmt.Errorf("%s answered HTTP %d, then: %w", t.API, resp.StatusCode, req.Context().Err())
		case <-timer.C:
		}
		wait = min(wait*2, MaxBackoff)
	}
}

// retry tells whether resp is answered again: a 429 always, a 5xx while
// fewer than ServerErrors were.
func (t *RetryTransport) retry(resp *http.Response, serverErrors *int) bool {
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return true
	case resp.StatusCode >= 500 && *serverErrors < t.ServerErrors:
		*serverErrors++
		return true
	}
	return false
}

// replayable returns how to make req's body for every attempt: its
// GetBody (then its Body is not read: it may be http.NoBody), or a copy
// of the body read into memory. Nil when req has no body.
func replayable(req *http.Request) (func() (io.ReadCloser, error), error) {
	if req.GetBody != nil {
		if req.Body != nil {
			_ = req.Body.Close() // the first attempt asks GetBody too
		}
		return req.GetBody, nil
	}
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, nil
}

// withBody returns a copy of req with a fresh body from getBody (none
// when getBody is nil).
func withBody(req *http.Request, getBody func() (io.ReadCloser, error)) (*http.Request, error) {
	out := req.Clone(req.Context())
	if getBody == nil {
		return out, nil
	}
	body, err := getBody()
	if err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	out.Body, out.GetBody = body, getBody
	return out, nil
}

// RetryAfter is the delay a 429 asks for: its Retry-After (seconds or an
// HTTP date, capped at MaxRetryAfter), else backoff with up to 25% jitter.
func RetryAfter(header string, backoff time.Duration) time.Duration {
	if header != "" {
		if s, err := strconv.Atoi(strings.TrimSpace(header)); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, MaxRetryAfter)
		}
		if at, err := http.ParseTime(header); err == nil {
			return min(max(time.Until(at), 0), MaxRetryAfter)
		}
	}
	return backoff + rand.N(backoff/4+1)
}
