package anthropictest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// controlPrefix is the path prefix of the control API.
const controlPrefix = "/_mock/"

// Control API paths.
const (
	pathScript   = controlPrefix + "script"
	pathRequests = controlPrefix + "requests"
	pathReset    = controlPrefix + "reset"
	pathHealth   = controlPrefix + "health"
)

// maxScriptBytes caps the size of a script sent to the control API.
const maxScriptBytes = 16 << 20

// serveControl answers the control API. Control requests are not recorded.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case pathScript:
		if !allowMethod(w, r, http.MethodPut, http.MethodPost) {
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxScriptBytes))
		if err != nil {
			controlError(w, http.StatusBadRequest, fmt.Sprintf("mock: read script: %v", err))
			return
		}
		script, err := ParseScript(data)
		if err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.SetScript(script)
		w.WriteHeader(http.StatusNoContent)
	case pathRequests:
		if !allowMethod(w, r, http.MethodGet) {
			return
		}
		controlJSON(w, http.StatusOK, s.Requests())
	case pathReset:
		if !allowMethod(w, r, http.MethodPost) {
			return
		}
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	case pathHealth:
		if !allowMethod(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		controlJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	default:
		controlError(w, http.StatusNotFound, fmt.Sprintf("mock: no such control endpoint %s %s", r.Method, r.URL.Path))
	}
}

// allowMethod answers 405 and returns false unless r uses one of methods.
func allowMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	controlError(w, http.StatusMethodNotAllowed, fmt.Sprintf("mock: %s not allowed on %s", r.Method, r.URL.Path))
	return false
}

// controlJSON writes v as a JSON response.
func controlJSON(w http.ResponseWriter, status int, v any) {
	data, err := marshal(v)
	if err != nil {
		controlError(w, http.StatusInternalServerError, fmt.Sprintf("mock: encode response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// controlError writes an Anthropic-shaped error response.
func controlError(w http.ResponseWriter, status int, msg string) {
	data, _ := marshal(errorBody(errorType(status), msg, ""))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// pollInterval is how often [Remote] polls the mock while waiting.
const pollInterval = 25 * time.Millisecond

// Remote drives a mock running elsewhere, such as cmd/mock-anthropic in a
// container, through its control API. It works just as well against an
// in-process [Server] (BaseURL: srv.URL()).
type Remote struct {
	// BaseURL is the mock's base URL, such as "http://127.0.0.1:8080".
	BaseURL string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// SetScript replaces the mock's script.
func (rm *Remote) SetScript(ctx context.Context, script Script) error {
	data, err := json.Marshal(script)
	if err != nil {
		return fmt.Errorf("anthropictest: encode script: %w", err)
	}
	if _, err := rm.do(ctx, http.MethodPut, pathScript, data); err != nil {
		return fmt.Errorf("anthropictest: set script: %w", err)
	}
	return nil
}

// Requests returns the requests the mock recorded, in order.
func (rm *Remote) Requests(ctx context.Context) ([]RecordedRequest, error) {
	data, err := rm.do(ctx, http.MethodGet, pathRequests, nil)
	if err != nil {
		return nil, fmt.Errorf("anthropictest: get requests: %w", err)
	}
	var reqs []RecordedRequest
	if err := json.Unmarshal(data, &reqs); err != nil {
		return nil, fmt.Errorf("anthropictest: decode requests: %w", err)
	}
	return reqs, nil
}

// Bodies returns the bodies of the requests the mock recorded, as text,
// in order.
func (rm *Remote) Bodies(ctx context.Context) ([]string, error) {
	reqs, err := rm.Requests(ctx)
	return Bodies(reqs), err
}

// Reset makes the mock forget its recorded requests and restore every
// step's uses.
func (rm *Remote) Reset(ctx context.Context) error {
	if _, err := rm.do(ctx, http.MethodPost, pathReset, nil); err != nil {
		return fmt.Errorf("anthropictest: reset: %w", err)
	}
	return nil
}

// WaitHealthy polls the mock's health endpoint until it answers 200 or ctx
// is done.
func (rm *Remote) WaitHealthy(ctx context.Context) error {
	for {
		_, err := rm.do(ctx, http.MethodGet, pathHealth, nil)
		if err == nil {
			return nil
		}
		if werr := wait(ctx); werr != nil {
			return fmt.Errorf("anthropictest: wait for %s to be healthy: %w (last error: %v)", rm.BaseURL, werr, err)
		}
	}
}

// WaitForRequests polls the mock until it has recorded at least n requests
// or ctx is done.
func (rm *Remote) WaitForRequests(ctx context.Context, n int) error {
	for {
		reqs, err := rm.Requests(ctx)
		if err == nil && len(reqs) >= n {
			return nil
		}
		if werr := wait(ctx); werr != nil {
			if err == nil {
				err = fmt.Errorf("have %d", len(reqs))
			}
			return fmt.Errorf("anthropictest: wait for %d requests: %w (last: %v)", n, werr, err)
		}
	}
}

// wait sleeps for one poll interval unless ctx is done first.
func wait(ctx context.Context) error {
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do sends one control request and returns the body of a 2xx answer.
func (rm *Remote) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(rm.BaseURL, "/")+path, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := rm.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s %s response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(data)}
	}
	return data, nil
}

// StatusError is returned by [Remote] methods when the mock answers with a
// status other than 2xx.
type StatusError struct {
	// Method is the HTTP method of the control request.
	Method string
	// Path is the control API path, such as "/_mock/script".
	Path string
	// Status is the HTTP status of the answer.
	Status int
	// Body is the body of the answer.
	Body string
}

// Error describes the failed control request.
func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}
