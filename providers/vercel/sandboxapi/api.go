package sandboxapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// sessionPath is the path of a session, or of one of its calls.
func sessionPath(id string, parts ...string) string {
	p := "/v2/sandboxes/sessions/" + url.PathEscape(id)
	for _, s := range parts {
		p += "/" + s
	}
	return p
}

// sandboxPath is the path of a named sandbox.
func sandboxPath(name string) string { return "/v2/sandboxes/" + url.PathEscape(name) }

// CreateSandbox creates a sandbox and its first session: POST /v3/sandboxes
// (POST /v2/sandboxes when r.Runtime is set, as the SDK chooses). The
// answer's session may still be pending.
func (c *Client) CreateSandbox(ctx context.Context, r CreateSandboxRequest) (*SandboxAndSession, error) {
	path := "/v3/sandboxes"
	if r.Runtime != "" {
		path = "/v2/sandboxes"
	}
	if r.Ports == nil {
		r.Ports = []int{}
	}
	var out SandboxAndSession
	return &out, c.do(ctx, call{method: http.MethodPost, path: path, body: r}, &out)
}

// GetSandbox returns the named sandbox with its current session and
// routes: GET /v2/sandboxes/{name}?projectId=. With resume, a sandbox
// whose session is not running gets a new one (Resumed is then true).
func (c *Client) GetSandbox(ctx context.Context, projectID, name string, resume bool) (*SandboxAndSession, error) {
	q := url.Values{"projectId": {projectID}}
	if resume {
		q.Set("resume", "true")
	}
	var out SandboxAndSession
	return &out, c.do(ctx, call{method: http.MethodGet, path: sandboxPath(name), query: q}, &out)
}

// ListSandboxesRequest selects sandboxes for ListSandboxes.
type ListSandboxesRequest struct {
	// ProjectID is the project (sent as ?project=).
	ProjectID string
	// TagKey and TagValue, when set, keep the sandboxes with that tag
	// (?tags=key:value; the SDK allows one tag per list).
	TagKey, TagValue string
	// NamePrefix keeps names starting with it.
	NamePrefix string
	// Limit is the page size (0: the API's default).
	Limit int
	// Cursor is the page to read (Pagination.Next of the previous one).
	Cursor string
}

// ListSandboxes returns one page of a project's sandboxes: GET
// /v2/sandboxes?project=&tags=key:value&namePrefix=&limit=&cursor=.
func (c *Client) ListSandboxes(ctx context.Context, r ListSandboxesRequest) (*SandboxList, error) {
	q := url.Values{"project": {r.ProjectID}, "namePrefix": {r.NamePrefix}, "limit": {itoa(r.Limit)}, "cursor": {r.Cursor}}
	if r.TagKey != "" {
		q.Set("tags", r.TagKey+":"+r.TagValue)
	}
	var out SandboxList
	return &out, c.do(ctx, call{method: http.MethodGet, path: "/v2/sandboxes", query: q}, &out)
}

// AllSandboxes returns every sandbox r selects, reading page after page.
func (c *Client) AllSandboxes(ctx context.Context, r ListSandboxesRequest) ([]Sandbox, error) {
	var all []Sandbox
	for {
		page, err := c.ListSandboxes(ctx, r)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Sandboxes...)
		if page.Pagination.Next == nil || *page.Pagination.Next == "" {
			return all, nil
		}
		r.Cursor = *page.Pagination.Next
	}
}

// UpdateSandbox changes a sandbox: PATCH /v2/sandboxes/{name}?projectId=.
func (c *Client) UpdateSandbox(ctx context.Context, projectID, name string, r UpdateSandboxRequest) (*UpdateSandboxResponse, error) {
	var out UpdateSandboxResponse
	return &out, c.do(ctx, call{method: http.MethodPatch, path: sandboxPath(name),
		query: url.Values{"projectId": {projectID}}, body: r}, &out)
}

// DeleteSandbox deletes a sandbox, stopping its session: DELETE
// /v2/sandboxes/{name}?projectId=. Its snapshots are kept until they
// expire.
func (c *Client) DeleteSandbox(ctx context.Context, projectID, name string) error {
	return c.do(ctx, call{method: http.MethodDelete, path: sandboxPath(name),
		query: url.Values{"projectId": {projectID}}}, nil)
}

// GetSession returns a session and its sandbox's routes: GET
// /v2/sandboxes/sessions/{id}.
func (c *Client) GetSession(ctx context.Context, id string) (*SessionAndRoutes, error) {
	var out SessionAndRoutes
	return &out, c.do(ctx, call{method: http.MethodGet, path: sessionPath(id)}, &out)
}

// StopSession stops a session: POST /v2/sandboxes/sessions/{id}/stop. The
// answer may say stopping: GetSession tells when it is stopped. A
// persistent sandbox keeps its file system.
func (c *Client) StopSession(ctx context.Context, id string) (*StopSessionResponse, error) {
	var out StopSessionResponse
	return &out, c.do(ctx, call{method: http.MethodPost, path: sessionPath(id, "stop")}, &out)
}

// ExtendTimeout adds d (at least a second) to a running session's
// timeout, up to the plan's maximum: POST
// /v2/sandboxes/sessions/{id}/extend-timeout {"duration": ms}.
func (c *Client) ExtendTimeout(ctx context.Context, id string, d time.Duration) (*Session, error) {
	var out SessionResponse
	err := c.do(ctx, call{method: http.MethodPost, path: sessionPath(id, "extend-timeout"),
		body: map[string]int64{"duration": ms(d)}}, &out)
	return &out.Session, err
}

// CreateSnapshot snapshots a session's file system; the session stops:
// POST /v2/sandboxes/sessions/{id}/snapshot, with {"expiration": ms} when
// expiration is not nil (0: never expires; nil: Vercel's default).
func (c *Client) CreateSnapshot(ctx context.Context, id string, expiration *time.Duration) (*CreateSnapshotResponse, error) {
	cl := call{method: http.MethodPost, path: sessionPath(id, "snapshot")}
	if expiration != nil {
		cl.body = map[string]int64{"expiration": ms(*expiration)}
	}
	var out CreateSnapshotResponse
	return &out, c.do(ctx, cl, &out)
}

// ListSnapshots returns one page of a project's snapshots, those of the
// sandbox named name when set: GET
// /v2/sandboxes/snapshots?project=&name=&cursor=.
func (c *Client) ListSnapshots(ctx context.Context, projectID, name, cursor string) (*SnapshotList, error) {
	var out SnapshotList
	return &out, c.do(ctx, call{method: http.MethodGet, path: "/v2/sandboxes/snapshots",
		query: url.Values{"project": {projectID}, "name": {name}, "cursor": {cursor}}}, &out)
}

// GetSnapshot returns a snapshot: GET /v2/sandboxes/snapshots/{id}.
func (c *Client) GetSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	var out SnapshotResponse
	err := c.do(ctx, call{method: http.MethodGet, path: "/v2/sandboxes/snapshots/" + url.PathEscape(id)}, &out)
	return &out.Snapshot, err
}

// DeleteSnapshot deletes a snapshot: DELETE /v2/sandboxes/snapshots/{id}.
func (c *Client) DeleteSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	var out SnapshotResponse
	err := c.do(ctx, call{method: http.MethodDelete, path: "/v2/sandboxes/snapshots/" + url.PathEscape(id)}, &out)
	return &out.Snapshot, err
}

// RunCommand starts a command in a running session and returns at once
// (detached): POST /v2/sandboxes/sessions/{id}/cmd without wait. A
// stopped session answers 410 sandbox_stopped.
func (c *Client) RunCommand(ctx context.Context, sessionID string, r CommandRequest) (*Command, error) {
	r.Wait, r.Logs = false, false
	normalizeCommand(&r)
	var out CommandResponse
	err := c.do(ctx, call{method: http.MethodPost, path: sessionPath(sessionID, "cmd"), body: r}, &out)
	return &out.Command, err
}

// CommandResult is a finished command with its output.
type CommandResult struct {
	// Command is the finished command (ExitCode set).
	Command Command
	// Stdout and Stderr are its output.
	Stdout, Stderr string
}

// RunCommandWait runs a command and waits for it: POST
// /v2/sandboxes/sessions/{id}/cmd with wait and logs, whose answer is an
// NDJSON stream (application/x-ndjson): {"command"} first, then log lines
// {"stream": "stdout"|"stderr", "data"}, and {"command"} again with its
// exit code; a line {"stream": "error", "data": {code, message}} (the
// sandbox stopped meanwhile) ends it with an error.
func (c *Client) RunCommandWait(ctx context.Context, sessionID string, r CommandRequest) (*CommandResult, error) {
	r.Wait, r.Logs = true, true
	normalizeCommand(&r)
	path := sessionPath(sessionID, "cmd")
	resp, err := c.send(ctx, call{method: http.MethodPost, path: path, body: r})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
		return nil, fmt.Errorf("vercel sandbox api POST %s: want a stream of command data, got %q", path, ct)
	}
	var res CommandResult
	var out, errOut strings.Builder
	started, finished := false, false
	err = readNDJSON(resp.Body, func(line json.RawMessage) error {
		var probe struct {
			Command *Command `json:"command"`
			LogLine
		}
		if err := json.Unmarshal(line, &probe); err != nil {
			return fmt.Errorf("bad stream line %q: %w", truncate(string(line), 200), err)
		}
		switch {
		case probe.Command != nil && !started:
			started, res.Command = true, *probe.Command
		case probe.Command != nil:
			finished, res.Command = true, *probe.Command
		default:
			return collectLog(probe.LogLine, &out, &errOut)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vercel sandbox api POST %s: %w", path, err)
	}
	if !finished || res.Command.ExitCode == nil {
		return nil, fmt.Errorf("vercel sandbox api POST %s: the stream ended before the command finished", path)
	}
	res.Stdout, res.Stderr = out.String(), errOut.String()
	return &res, nil
}

// StreamError is the error line of a command stream: typically the
// sandbox stopped while the command ran.
type StreamError struct {
	// Code and Message are the line's.
	Code, Message string
}

// Error implements error.
func (e *StreamError) Error() string { return "command stream error " + e.Code + ": " + e.Message }

// collectLog appends a log line to stdout or stderr, or returns the error
// an error line carries.
func collectLog(l LogLine, stdout, stderr *strings.Builder) error {
	if l.Stream == "error" {
		var d ErrorDetail
		_ = json.Unmarshal(l.Data, &d)
		return &StreamError{Code: d.Code, Message: d.Message}
	}
	var text string
	if err := json.Unmarshal(l.Data, &text); err != nil {
		return fmt.Errorf("bad log line: %w", err)
	}
	switch l.Stream {
	case "stdout":
		stdout.WriteString(text)
	case "stderr":
		stderr.WriteString(text)
	default:
		return fmt.Errorf("unknown log stream %q", l.Stream)
	}
	return nil
}

// normalizeCommand fills what the SDK always sends: args and env as
// (possibly empty) array and object.
func normalizeCommand(r *CommandRequest) {
	if r.Args == nil {
		r.Args = []string{}
	}
	if r.Env == nil {
		r.Env = map[string]string{}
	}
}

// GetCommand returns a command: GET
// /v2/sandboxes/sessions/{id}/cmd/{cmdId}; with wait (?wait=true) the
// answer comes once the command has finished.
func (c *Client) GetCommand(ctx context.Context, sessionID, cmdID string, wait bool) (*Command, error) {
	var q url.Values
	if wait {
		q = url.Values{"wait": {"true"}}
	}
	var out CommandResponse
	err := c.do(ctx, call{method: http.MethodGet, path: sessionPath(sessionID, "cmd", url.PathEscape(cmdID)), query: q}, &out)
	return &out.Command, err
}

// KillCommand sends signal (e.g. 15) to a command: POST
// /v2/sandboxes/sessions/{id}/cmd/{cmdId}/kill {"signal"}.
func (c *Client) KillCommand(ctx context.Context, sessionID, cmdID string, signal int) (*Command, error) {
	var out CommandResponse
	err := c.do(ctx, call{method: http.MethodPost, path: sessionPath(sessionID, "cmd", url.PathEscape(cmdID), "kill"),
		body: map[string]int{"signal": signal}}, &out)
	return &out.Command, err
}

// WriteFiles uploads a gzipped tar archive (made anew by body for every
// attempt) and extracts it into dir as the sandbox's default user: POST
// /v2/sandboxes/sessions/{id}/fs/write with Content-Type application/gzip
// and x-cwd: dir (the SDK extracts into "/", entry names relative to it).
func (c *Client) WriteFiles(ctx context.Context, sessionID, dir string, body func() (io.ReadCloser, error)) error {
	h := http.Header{}
	h.Set("Content-Type", "application/gzip")
	h.Set("X-Cwd", dir)
	return c.do(ctx, call{method: http.MethodPost, path: sessionPath(sessionID, "fs", "write"), raw: body, header: h}, nil)
}

// ErrNoFile is ReadFile's error for a file that does not exist.
var ErrNoFile = errors.New("no such file in the sandbox")

// ReadFile returns a file's content (to be closed): POST
// /v2/sandboxes/sessions/{id}/fs/read {"path", "cwd"}, answered as
// application/octet-stream, or 404 (ErrNoFile).
func (c *Client) ReadFile(ctx context.Context, sessionID, path, cwd string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, call{method: http.MethodPost, path: sessionPath(sessionID, "fs", "read"),
		body: PathRequest{Path: path, Cwd: cwd}})
	if IsNotFound(err) {
		return nil, fmt.Errorf("%s: %w", path, ErrNoFile)
	}
	if err != nil {
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "application/octet-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("vercel sandbox api: read %s: unexpected content type %q", path, ct)
	}
	return resp.Body, nil
}

// MkDir makes one directory (not its parents): POST
// /v2/sandboxes/sessions/{id}/fs/mkdir {"path", "cwd"}.
func (c *Client) MkDir(ctx context.Context, sessionID, path, cwd string) error {
	return c.do(ctx, call{method: http.MethodPost, path: sessionPath(sessionID, "fs", "mkdir"),
		body: PathRequest{Path: path, Cwd: cwd}}, nil)
}
