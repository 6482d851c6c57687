// Package agentclient is the control plane's client for the agent server
// API: queries with their event streams, interrupts, health and stats.
package agentclient

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Client talks to one agent server.
type Client struct {
	// BaseURL is the agent's address, e.g. "http://127.0.0.1:32768".
	BaseURL string
	// Token is the agent's bearer token.
	Token string
	// Header is sent with every request, e.g. a platform's routing header
	// that picks one machine behind a shared address.
	Header http.Header
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
}

// APIError is a non-2xx answer from the agent server.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the agent's error code ("busy", "unauthorized", ...).
	Code string
	// Message is the agent's explanation.
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("agent: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// ErrBusy matches an [APIError] with status 409 from /query.
var ErrBusy = errors.New("agent is busy with another turn")

// Is lets errors.Is(err, ErrBusy) match a 409.
func (e *APIError) Is(target error) bool {
	return target == ErrBusy && e.Status == http.StatusConflict
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return nil, fmt.Errorf("agent request %s %s: %w", method, path, err)
	}
	for k, vs := range c.Header {
		req.Header[k] = vs
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// ErrNotReached matches the error of a request answered by something in
// front of the agent (a proxy that cannot route to it, a platform router)
// rather than by the agent server: the agent was not reached, as with a
// refused connection, and the error is not an *APIError.
var ErrNotReached = errors.New("the agent was not reached")

// Do sends a request to the agent and returns the response when its status
// is 2xx; otherwise the body is decoded into an *APIError, or, when the
// answer is not the agent server's own (it lacks [agent.HeaderServer]),
// an error matching [ErrNotReached].
func (c *Client) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent %s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	if resp.Header.Get(agent.HeaderServer) == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("agent %s %s: HTTP %d from %s: %s: %w", req.Method, req.URL.Path, resp.StatusCode,
			cmp.Or(resp.Header.Get("Server"), "a proxy"), strings.TrimSpace(string(b)), ErrNotReached)
	}
	return nil, decodeError(resp)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb agent.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Message == "" {
		return &APIError{Status: resp.StatusCode, Code: "http_error", Message: strings.TrimSpace(string(b))}
	}
	return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
}

// Query starts a turn with a text prompt. The returned stream must be
// closed; closing it before the end interrupts the turn.
func (c *Client) Query(ctx context.Context, prompt, apiKey string) (*Stream, error) {
	return c.Turn(ctx, agent.QueryRequest{Prompt: prompt, APIKey: apiKey})
}

// Turn starts a turn (POST /query). The returned stream must be closed;
// closing it before the end interrupts the turn, unless the stream ended
// with client tool calls: the turn then waits for [Client.ToolResults].
func (c *Client) Turn(ctx context.Context, q agent.QueryRequest) (*Stream, error) {
	return c.postStream(ctx, "/query", q)
}

// ToolResults answers the client tool calls a turn waits for (POST
// /tool_results) and returns the rest of the turn's stream.
func (c *Client) ToolResults(ctx context.Context, tr agent.ToolResultsRequest) (*Stream, error) {
	return c.postStream(ctx, "/tool_results", tr)
}

// postStream posts v as JSON to path and returns the event stream that
// answers it.
func (c *Client) postStream(ctx context.Context, path string, v any) (*Stream, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s body: %w", path, err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	return NewStream(resp.Body), nil
}

// Health fetches /health. A 503 (not ready) is not an error: its body is
// returned with the status.
func (c *Client) Health(ctx context.Context) (agent.Health, int, error) {
	return c.HealthWait(ctx, 0)
}

// HealthWait fetches /health, letting the agent hold the answer for up to
// wait until its CLI is ready (0 = answer at once).
func (c *Client) HealthWait(ctx context.Context, wait time.Duration) (agent.Health, int, error) {
	var h agent.Health
	path := "/health"
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String())
	}
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return h, 0, err
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return h, 0, fmt.Errorf("agent health: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil {
		return h, resp.StatusCode, fmt.Errorf("agent health: decode: %w", err)
	}
	return h, resp.StatusCode, nil
}

// Interrupt asks the running turn to stop; it reports whether one ran.
func (c *Client) Interrupt(ctx context.Context) (bool, error) {
	var out struct {
		Interrupted bool `json:"interrupted"`
	}
	err := c.sendJSON(ctx, http.MethodPost, "/interrupt", nil, &out)
	return out.Interrupted, err
}

// Stats fetches /stats.
func (c *Client) Stats(ctx context.Context) (agent.Stats, error) {
	var st agent.Stats
	err := c.sendJSON(ctx, http.MethodGet, "/stats", nil, &st)
	return st, err
}

// Bind hands the agent to a session (PUT /binding). An agent already
// bound to another session answers 409, an *APIError.
func (c *Client) Bind(ctx context.Context, b agent.Binding) error {
	return c.sendJSON(ctx, http.MethodPut, "/binding", b, nil)
}

// WriteFile writes data to path in the agent's workspace (PUT /files),
// replacing a file there, and returns the path as the agent cleaned it.
func (c *Client) WriteFile(ctx context.Context, path string, data []byte) (string, error) {
	req, err := c.newRequest(ctx, http.MethodPut, "/files/"+escapePath(path)+"?overwrite=true", bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	req.ContentLength = int64(len(data))
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Path string `json:"path"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", fmt.Errorf("decode file write answer: %w", err)
	}
	return out.Path, nil
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// Binding fetches GET /binding: the session a warm-pool agent was handed
// to, if any.
func (c *Client) Binding(ctx context.Context) (agent.BindingState, error) {
	var st agent.BindingState
	err := c.sendJSON(ctx, http.MethodGet, "/binding", nil, &st)
	return st, err
}

// Stream reads the events of one turn.
type Stream struct {
	body io.ReadCloser
	r    *bufio.Reader
	buf  []byte // the current event's data, reused
	done bool
}

// NewStream reads agent events from an SSE body.
func NewStream(body io.ReadCloser) *Stream {
	return &Stream{body: body, r: bufio.NewReaderSize(body, 32<<10)}
}

// ErrTruncated means the stream ended before its final event.
var ErrTruncated = errors.New("agent stream ended before the turn's result")

// Next returns the next event. After the final event (result, error, or
// client_tool_calls) it returns io.EOF. A stream cut short returns
// ErrTruncated.
func (s *Stream) Next() (agent.Event, error) {
	if s.done {
		return agent.Event{}, io.EOF
	}
	for {
		data, err := AppendData(s.buf[:0], s.r)
		s.buf = data
		if err != nil {
			if errors.Is(err, io.EOF) {
				return agent.Event{}, ErrTruncated
			}
			return agent.Event{}, err
		}
		e, err := decodeEvent(data)
		if err != nil {
			return agent.Event{}, fmt.Errorf("decode agent event: %w", err)
		}
		switch e.Type {
		case agent.EventResult, agent.EventError, agent.EventClientToolCalls:
			// The last event of a stream (client_tool_calls: the turn
			// waits for ToolResults, whose stream goes on with it).
			s.done = true
		}
		return e, nil
	}
}

// Close releases the stream; before the final event this interrupts the
// turn on the agent.
func (s *Stream) Close() error { return s.body.Close() }

// Ready reports whether Next will return without reading from the
// connection: an event (a block with a data line, ended by a blank line)
// is already buffered, or the final event was read. A relay uses it to
// write every event that has arrived before it flushes.
func (s *Stream) Ready() bool {
	if s.done {
		return true
	}
	buf, _ := s.r.Peek(s.r.Buffered())
	data := false
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return false // a line still arriving
		}
		line := bytes.TrimSuffix(buf[:i], []byte("\r"))
		buf = buf[i+1:]
		switch {
		case len(line) == 0:
			if data {
				return true
			}
		case bytes.HasPrefix(line, []byte("data:")):
			data = true
		}
	}
	return false
}

// ReadData returns the data of the next SSE event, skipping comments and
// fields other than data. Multi-line data is joined with "\n".
func ReadData(r *bufio.Reader) ([]byte, error) { return AppendData(nil, r) }

// AppendData is ReadData appending the data to dst, so a reader of many
// events can reuse one buffer (pass buf[:0]).
func AppendData(dst []byte, r *bufio.Reader) ([]byte, error) {
	data := dst
	have := false
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: copy what ReadSlice gave
			// (the next read reuses its buffer), then collect the rest.
			head := append([]byte(nil), line...)
			var rest []byte
			rest, err = r.ReadBytes('\n')
			line = append(head, rest...)
		}
		if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
			if have && errors.Is(err, io.EOF) {
				return data, nil
			}
			return nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if have {
				return data, nil
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			v = bytes.TrimPrefix(v, []byte(" "))
			if have {
				data = append(data, '\n')
			}
			data = append(data, v...)
			have = true
		}
		if err != nil {
			if have {
				return data, nil
			}
			return nil, err
		}
	}
}

// Forward sends a request to the agent as is and returns its response,
// whatever the status, for the control plane to relay (files, archive).
// path is the agent's path (e.g. "/files/a.txt"), already escaped.
func (c *Client) Forward(ctx context.Context, method, path string, query url.Values, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if len(query) > 0 {
		req.URL.RawQuery = query.Encode()
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent %s %s: %w", method, path, err)
	}
	return resp, nil
}

// Transcript reads the gateways' record of the conversation (GET
// /transcript); an agent never given one answers an empty one.
func (c *Client) Transcript(ctx context.Context) (agent.Transcript, error) {
	var t agent.Transcript
	err := c.sendJSON(ctx, http.MethodGet, "/transcript", nil, &t)
	return t, err
}

// PutTranscript keeps t with the agent (PUT /transcript).
func (c *Client) PutTranscript(ctx context.Context, t agent.Transcript) error {
	return c.sendJSON(ctx, http.MethodPut, "/transcript", t, nil)
}

// sendJSON makes a method request to path with in as its JSON body (none
// when in is nil) and decodes the answer into out (discarded when out is
// nil). An answer that is not 2xx is an *APIError (see Do).
func (c *Client) sendJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s body: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("agent %s: decode: %w", path, err)
	}
	return nil
}

// ClaimSleep asks the agent for the right to put it to sleep (POST
// /sleep_claim): granted when no turn runs, it has been idle for at least
// minIdle and no other gateway holds the claim.
func (c *Client) ClaimSleep(ctx context.Context, minIdle time.Duration) (agent.SleepClaim, error) {
	var out agent.SleepClaim
	err := c.sendJSON(ctx, http.MethodPost, "/sleep_claim", agent.SleepClaimRequest{MinIdleSeconds: minIdle.Seconds()}, &out)
	return out, err
}

// ReleaseSleep gives up a granted sleep claim (DELETE /sleep_claim): the
// agent takes turns again.
func (c *Client) ReleaseSleep(ctx context.Context) error {
	return c.sendJSON(ctx, http.MethodDelete, "/sleep_claim", nil, nil)
}
