package fly

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Backoff on 429 answers: Fly limits each action on a Machine to about 1
// request per second (burst 3) and GETs to 5 per second; a 429 is waited
// out, never surfaced.
const (
	firstBackoff = 250 * time.Millisecond
	maxBackoff   = 5 * time.Second
	// maxRetryAfter caps a Retry-After the API asks for.
	maxRetryAfter = 30 * time.Second
)

// apiTransport is the flaps client's innermost round tripper. It sends
// every request to base (flaps itself only reads FLY_FLAPS_BASE_URL, a
// process-wide setting: api_url must work per provider) and retries 429
// answers until the request's context ends, waiting what Retry-After says
// or a growing, jittered backoff.
type apiTransport struct {
	base   *url.URL
	next   http.RoundTripper
	logger *zap.Logger
}

// RoundTrip implements http.RoundTripper.
func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := readBody(req)
	if err != nil {
		return nil, err
	}
	wait := firstBackoff
	for attempt := 1; ; attempt++ {
		out := t.rewrite(req, body)
		resp, err := t.next.RoundTrip(out)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			return resp, err
		}
		delay := retryAfter(resp.Header.Get("Retry-After"), wait)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		t.logger.Debug("machines api rate limited; retrying",
			zap.String("method", req.Method), zap.String("path", req.URL.Path),
			zap.Int("attempt", attempt), zap.Duration("delay", delay))
		timer := time.NewTimer(delay)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, fmt.Errorf("fly: rate limited by the machines api, then: %w", req.Context().Err())
		case <-timer.C:
		}
		wait = min(wait*2, maxBackoff)
	}
}

// rewrite returns a copy of req aimed at t.base, with a fresh body.
func (t *apiTransport) rewrite(req *http.Request, body []byte) *http.Request {
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = t.base.Scheme, t.base.Host
	u.Path = strings.TrimRight(t.base.Path, "/") + req.URL.Path
	u.RawPath = ""
	out.URL, out.Host = &u, ""
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.ContentLength = int64(len(body))
	}
	return out
}

// readBody reads and closes req's body (nil when it has none), so every
// retry can send it again. Machines API bodies are small JSON documents.
func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("fly: read request body: %w", err)
	}
	return b, nil
}

// retryAfter is the delay a 429 asks for: its Retry-After (seconds or an
// HTTP date, capped at maxRetryAfter), else backoff with up to 25% jitter.
func retryAfter(header string, backoff time.Duration) time.Duration {
	if header != "" {
		if s, err := strconv.Atoi(strings.TrimSpace(header)); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, maxRetryAfter)
		}
		if at, err := http.ParseTime(header); err == nil {
			return min(max(time.Until(at), 0), maxRetryAfter)
		}
	}
	return backoff + rand.N(backoff/4+1)
}
