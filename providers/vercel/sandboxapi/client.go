// Package sandboxapi is a small, typed Go client for the Vercel Sandbox
// REST API: the calls, paths, query parameters, bodies and answers of the
// official TypeScript SDK @vercel/sandbox 3.5.0 (its dist/api-client,
// read from the npm package; Vercel publishes no Go SDK). Each method
// names the API version its path uses: sandboxes are created through /v3
// (/v2 with a legacy runtime), everything else is /v2.
//
// Every request carries "Authorization: Bearer <token>" and, when a team
// is set, ?teamId=<team>. Errors are answered as {"error": {"code",
// "message"}}; they become an *[APIError]. The client's transport retries
// 429 answers as long as the request's context allows, honouring
// Retry-After (the SDK gives up after two retries, or at once when
// Retry-After exceeds 20 s), and 5xx answers twice, as the SDK does.
package sandboxapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
)

// DefaultBaseURL is the SDK's fixed API base URL.
const DefaultBaseURL = "https://vercel.com/api"

// Version is the SDK release whose API this client speaks.
const Version = "3.5.0"

// Options configure a [Client].
type Options struct {
	// BaseURL is the API's base URL (default DefaultBaseURL).
	BaseURL string
	// Token is the Vercel access token (required).
	Token string
	// TeamID is sent as ?teamId= with every request when set.
	TeamID string
	// Transport sends the requests after the client's retries (nil: a
	// clone of http.DefaultTransport).
	Transport http.RoundTripper
	// Logger receives a debug line per retried request; nil discards.
	Logger *zap.Logger
	// UserAgent is sent as User-Agent (default "caddy-agcluster").
	UserAgent string
}

// Client calls the Sandbox API. It is safe for concurrent use.
type Client struct {
	base      string
	token     string
	team      string
	userAgent string
	http      *http.Client
}

// New returns a client. It does not contact the API.
func New(o Options) (*Client, error) {
	if strings.TrimSpace(o.Token) == "" {
		return nil, errors.New("sandboxapi: a token is required")
	}
	base := strings.TrimRight(o.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("sandboxapi: base url %q: want an http(s) URL", o.BaseURL)
	}
	next := o.Transport
	if next == nil {
		next = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &Client{
		base:      base,
		token:     o.Token,
		team:      o.TeamID,
		userAgent: cmpOr(o.UserAgent, "caddy-agcluster"),
		http: &http.Client{Transport: &providers.RetryTransport{
			Next: next, Logger: o.Logger, API: "vercel sandbox api", ServerErrors: 2,
		}},
	}, nil
}

// BaseURL is the API base URL in use.
func (c *Client) BaseURL() string { return c.base }

// CloseIdleConnections closes the client's idle connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// APIError is an error answer of the API.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code is the error's code ({"error": {"code"}}), e.g.
	// "sandbox_stopped"; empty when the body had none.
	Code string
	// Message is the error's message, or the start of the body.
	Message string
	// Method and Path are the request's.
	Method, Path string
	// Body is the answer's body (at most 8 KiB).
	Body string
}

// Error implements error.
func (e *APIError) Error() string {
	msg := e.Message
	if e.Code != "" {
		msg = e.Code + ": " + msg
	}
	return fmt.Sprintf("vercel sandbox api %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, msg)
}

// Error codes the SDK acts on.
const (
	// CodeSandboxStopped (410): the session is stopped; resume it.
	CodeSandboxStopped = "sandbox_stopped"
	// CodeSandboxStopping (422): the session is shutting down.
	CodeSandboxStopping = "sandbox_stopping"
	// CodeSandboxSnapshotting (422): the session is being snapshotted.
	CodeSandboxSnapshotting = "sandbox_snapshotting"
	// CodeSnapshotNotFound (410): the snapshot a sandbox needs is gone.
	CodeSnapshotNotFound = "snapshot_not_found"
	// CodeNotFound (404): no such sandbox, session, snapshot or project.
	CodeNotFound = "not_found"
)

// StatusOf is the HTTP status of an *APIError in err's chain (0 if none).
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// CodeOf is the code of an *APIError in err's chain ("" if none).
func CodeOf(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// IsNotFound reports a 404 answer.
func IsNotFound(err error) bool { return StatusOf(err) == http.StatusNotFound }

// IsConflict reports a 409 answer: a create named a sandbox that exists
// (names are unique in a project).
func IsConflict(err error) bool { return StatusOf(err) == http.StatusConflict }

// IsStopped reports a 410 answer: the session is stopped (or the
// snapshot it needs is gone: see CodeOf).
func IsStopped(err error) bool { return StatusOf(err) == http.StatusGone }

// IsTransient reports a 422 answer for a session on its way to stopped
// (sandbox_stopping, sandbox_snapshotting): asked again a little later,
// the call succeeds or answers 410.
func IsTransient(err error) bool {
	code := CodeOf(err)
	return StatusOf(err) == http.StatusUnprocessableEntity &&
		(code == CodeSandboxStopping || code == CodeSandboxSnapshotting)
}

// call is one request: method, path (under the base URL), query, body.
type call struct {
	method, path string
	query        url.Values
	body         any                           // JSON-encoded when set
	raw          func() (io.ReadCloser, error) // a raw body made anew for every attempt
	header       http.Header
}

// do sends cl and decodes a 2xx JSON answer into out (when not nil); any
// other answer is an *APIError.
func (c *Client) do(ctx context.Context, cl call, out any) error {
	resp, err := c.send(ctx, cl)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("vercel sandbox api %s %s: decode answer: %w", cl.method, cl.path, err)
	}
	return nil
}

// send sends cl and returns a 2xx response (its body to be closed); any
// other answer is an *APIError.
func (c *Client) send(ctx context.Context, cl call) (*http.Response, error) {
	req, err := c.request(ctx, cl)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("vercel sandbox api %s %s: %w", cl.method, cl.path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp, cl)
}

// request builds the HTTP request of cl.
func (c *Client) request(ctx context.Context, cl call) (*http.Request, error) {
	q := url.Values{}
	if c.team != "" {
		q.Set("teamId", c.team)
	}
	for k, vs := range cl.query {
		for _, v := range vs {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	u := c.base + cl.path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	var getBody func() (io.ReadCloser, error)
	switch {
	case cl.raw != nil:
		getBody = cl.raw
	case cl.body != nil:
		b, err := json.Marshal(cl.body)
		if err != nil {
			return nil, fmt.Errorf("vercel sandbox api %s %s: encode body: %w", cl.method, cl.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("vercel sandbox api %s %s: %w", cl.method, cl.path, err)
	}
	if getBody != nil {
		// The transport (providers.RetryTransport) makes the body from
		// GetBody for every attempt.
		req.Body, req.GetBody, req.ContentLength = http.NoBody, getBody, -1
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range cl.header {
		req.Header[k] = vs
	}
	return req, nil
}

// decodeError reads an error answer.
func decodeError(resp *http.Response, cl call) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	e := &APIError{Status: resp.StatusCode, Method: cl.method, Path: cl.path, Body: string(b)}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	} else {
		e.Message = strings.TrimSpace(truncate(string(b), 200))
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// ms is d in whole milliseconds.
func ms(d time.Duration) int64 { return d.Milliseconds() }

// readNDJSON calls fn for each JSON line of r until r ends or fn fails.
func readNDJSON(r io.Reader, fn func(json.RawMessage) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(append(json.RawMessage(nil), line...)); err != nil {
			return err
		}
	}
	return sc.Err()
}

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

// itoa formats n for a query.
func itoa(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}
