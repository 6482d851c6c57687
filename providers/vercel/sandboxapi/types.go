package sandboxapi

import (
	"encoding/json"
	"time"
)

// Session statuses (Session.Status, and Sandbox.Status for its current
// session), as the SDK's validator lists them.
const (
	// StatusPending: the session is being provisioned.
	StatusPending = "pending"
	// StatusRunning: the session runs and accepts commands.
	StatusRunning = "running"
	// StatusStopping: the session is shutting down (a persistent
	// sandbox's automatic snapshot included); calls answer 422
	// sandbox_stopping.
	StatusStopping = "stopping"
	// StatusStopped: the session ended (stopped, or its timeout passed).
	StatusStopped = "stopped"
	// StatusFailed: the session failed.
	StatusFailed = "failed"
	// StatusAborted: the session was aborted.
	StatusAborted = "aborted"
	// StatusSnapshotting: a snapshot of the session is being taken; it
	// stops afterwards. Calls answer 422 sandbox_snapshotting.
	StatusSnapshotting = "snapshotting"
)

// Snapshot statuses (Snapshot.Status).
const (
	// SnapshotCreated: the snapshot can be used.
	SnapshotCreated = "created"
	// SnapshotDeleted: the snapshot was deleted.
	SnapshotDeleted = "deleted"
	// SnapshotFailed: taking the snapshot failed.
	SnapshotFailed = "failed"
)

// MemoryPerVCPU is the memory Vercel gives a sandbox per vCPU, in MB.
const MemoryPerVCPU = 2048

// Sandbox is a named sandbox: its durable identity, configuration and the
// status of its current session (the SDK's Sandbox validator).
type Sandbox struct {
	// Name identifies the sandbox in its project.
	Name string `json:"name"`
	// Persistent sandboxes keep their file system between sessions.
	Persistent bool `json:"persistent"`
	// Region is where the sandbox runs, e.g. "iad1".
	Region string `json:"region,omitempty"`
	// VCPUs is the number of virtual CPUs.
	VCPUs int `json:"vcpus,omitempty"`
	// Memory is the memory in MB (2048 per vCPU).
	Memory int `json:"memory,omitempty"`
	// Runtime is the legacy runtime (node22, python3.13, ...), if any.
	Runtime string `json:"runtime,omitempty"`
	// Image is the digest-pinned image the sandbox was made from, if any.
	Image string `json:"image,omitempty"`
	// Timeout is a new session's timeout in milliseconds.
	Timeout int64 `json:"timeout,omitempty"`
	// NetworkPolicy is the default network policy, as the API reports it.
	NetworkPolicy json.RawMessage `json:"networkPolicy,omitempty"`
	// CreatedAt is when the sandbox was created (Unix milliseconds).
	CreatedAt int64 `json:"createdAt"`
	// UpdatedAt is when it last changed (Unix milliseconds).
	UpdatedAt int64 `json:"updatedAt"`
	// ExpiresAt is when the current session times out (Unix milliseconds).
	ExpiresAt int64 `json:"expiresAt,omitempty"`
	// CurrentSessionID is the sandbox's latest session.
	CurrentSessionID string `json:"currentSessionId"`
	// CurrentSnapshotID is the snapshot a resumed session boots from.
	CurrentSnapshotID string `json:"currentSnapshotId,omitempty"`
	// Status is the current session's status (Status* constants).
	Status string `json:"status"`
	// StatusUpdatedAt is when Status last changed (Unix milliseconds).
	StatusUpdatedAt int64 `json:"statusUpdatedAt,omitempty"`
	// Cwd is the default working directory, e.g. "/vercel/sandbox".
	Cwd string `json:"cwd,omitempty"`
	// Tags are the sandbox's key-value tags (at most five).
	Tags map[string]string `json:"tags,omitempty"`
	// SnapshotExpiration is the default snapshot expiration (ms).
	SnapshotExpiration int64 `json:"snapshotExpiration,omitempty"`
}

// Session is one run of a sandbox: a microVM (the SDK's Session
// validator). Optional numbers are left out when zero: the SDK accepts a
// missing number, not null.
type Session struct {
	// ID identifies the session.
	ID string `json:"id"`
	// Memory is the session's memory in MB.
	Memory int `json:"memory"`
	// VCPUs is its number of virtual CPUs.
	VCPUs int `json:"vcpus"`
	// Region is where it runs.
	Region string `json:"region"`
	// Runtime is the legacy runtime, if any.
	Runtime string `json:"runtime,omitempty"`
	// Timeout is how long the session may run, in milliseconds from
	// StartedAt (extend-timeout adds to it).
	Timeout int64 `json:"timeout"`
	// Status is the session's status (Status* constants).
	Status string `json:"status"`
	// RequestedAt is when the session was asked for (Unix ms).
	RequestedAt int64 `json:"requestedAt"`
	// StartedAt is when it started (Unix ms).
	StartedAt int64 `json:"startedAt,omitempty"`
	// RequestedStopAt is when a stop was asked for through the API (Unix
	// ms); absent when the session stopped on its own (its timeout).
	RequestedStopAt int64 `json:"requestedStopAt,omitempty"`
	// StoppedAt is when it stopped (Unix ms).
	StoppedAt int64 `json:"stoppedAt,omitempty"`
	// AbortedAt is when it was aborted (Unix ms).
	AbortedAt int64 `json:"abortedAt,omitempty"`
	// Duration is how long it ran (ms), once stopped.
	Duration int64 `json:"duration,omitempty"`
	// SourceSnapshotID is the snapshot it booted from, if any.
	SourceSnapshotID string `json:"sourceSnapshotId,omitempty"`
	// SnapshottedAt is when a snapshot of it was taken (Unix ms).
	SnapshottedAt int64 `json:"snapshottedAt,omitempty"`
	// CreatedAt is when the session was created (Unix ms).
	CreatedAt int64 `json:"createdAt"`
	// Cwd is its default working directory.
	Cwd string `json:"cwd"`
	// UpdatedAt is when it last changed (Unix ms).
	UpdatedAt int64 `json:"updatedAt"`
	// InteractivePort is the port of its interactive shell, if any.
	InteractivePort int `json:"interactivePort,omitempty"`
	// NetworkPolicy is its network policy, as the API reports it.
	NetworkPolicy json.RawMessage `json:"networkPolicy,omitempty"`
	// ActiveCPUDurationMs is the CPU time it used (reported once stopped).
	ActiveCPUDurationMs int64 `json:"activeCpuDurationMs,omitempty"`
	// NetworkTransfer is the data it moved (reported once stopped).
	NetworkTransfer *NetworkTransfer `json:"networkTransfer,omitempty"`
}

// ExpiresAt is when the session times out (zero before it started).
func (s *Session) ExpiresAt() time.Time {
	start := s.StartedAt
	if start == 0 {
		start = s.CreatedAt
	}
	if start == 0 {
		return time.Time{}
	}
	return time.UnixMilli(start + s.Timeout)
}

// NetworkTransfer counts a session's network bytes.
type NetworkTransfer struct {
	// Ingress is the bytes received.
	Ingress int64 `json:"ingress"`
	// Egress is the bytes sent.
	Egress int64 `json:"egress"`
}

// Route is the public address of one of a sandbox's ports.
type Route struct {
	// URL is the port's base URL, https://<subdomain>.vercel.run.
	URL string `json:"url"`
	// Subdomain is the route's subdomain of vercel.run.
	Subdomain string `json:"subdomain"`
	// Port is the sandbox port it reaches.
	Port int `json:"port"`
}

// Snapshot is a saved file system a sandbox can start from.
type Snapshot struct {
	// ID identifies the snapshot.
	ID string `json:"id"`
	// SourceSessionID is the session it was taken from.
	SourceSessionID string `json:"sourceSessionId"`
	// Region is where it is stored.
	Region string `json:"region"`
	// Status is SnapshotCreated, SnapshotDeleted or SnapshotFailed.
	Status string `json:"status"`
	// SizeBytes is its size.
	SizeBytes int64 `json:"sizeBytes"`
	// ExpiresAt is when it expires (Unix ms; absent: never).
	ExpiresAt int64 `json:"expiresAt,omitempty"`
	// CreatedAt is when it was taken (Unix ms).
	CreatedAt int64 `json:"createdAt"`
	// UpdatedAt is when it last changed (Unix ms).
	UpdatedAt int64 `json:"updatedAt"`
	// ParentID is the snapshot the source session booted from, if any.
	ParentID string `json:"parentId,omitempty"`
}

// Command is a command started in a session.
type Command struct {
	// ID identifies the command.
	ID string `json:"id"`
	// Name is the executable.
	Name string `json:"name"`
	// Args are its arguments (never null on the wire).
	Args []string `json:"args"`
	// Cwd is its working directory.
	Cwd string `json:"cwd"`
	// SessionID is the session it runs in.
	SessionID string `json:"sessionId"`
	// ExitCode is its exit code; null while it runs.
	ExitCode *int `json:"exitCode"`
	// DurationMs is how long it ran, once finished.
	DurationMs int64 `json:"durationMs,omitempty"`
	// StartedAt is when it started (Unix ms).
	StartedAt int64 `json:"startedAt"`
}

// Pagination is a list's cursor.
type Pagination struct {
	// Count is the number of items in this page.
	Count int `json:"count"`
	// Next is the cursor of the next page; null on the last.
	Next *string `json:"next"`
}

// SandboxAndSession is the answer of create, fork and get: the sandbox,
// its current session and its port routes.
type SandboxAndSession struct {
	// Sandbox is the sandbox.
	Sandbox Sandbox `json:"sandbox"`
	// Session is its current session.
	Session Session `json:"session"`
	// Routes are the public addresses of its ports (never null).
	Routes []Route `json:"routes"`
	// Resumed tells that the get started a new session (resume=true).
	Resumed bool `json:"resumed,omitempty"`
}

// SessionAndRoutes is the answer of GET /v2/sandboxes/sessions/{id}.
type SessionAndRoutes struct {
	// Session is the session.
	Session Session `json:"session"`
	// Routes are its sandbox's port routes (never null).
	Routes []Route `json:"routes"`
}

// SessionResponse is the answer of extend-timeout and network-policy.
type SessionResponse struct {
	// Session is the session as it now is.
	Session Session `json:"session"`
}

// StopSessionResponse is the answer of POST .../stop.
type StopSessionResponse struct {
	// Session is the session as it now is (stopping or stopped).
	Session Session `json:"session"`
	// Sandbox is its sandbox, when the API reports it.
	Sandbox *Sandbox `json:"sandbox,omitempty"`
	// Snapshot is the automatic snapshot of a persistent sandbox, when
	// the API reports one.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
}

// SandboxList is a page of GET /v2/sandboxes.
type SandboxList struct {
	// Sandboxes are the page's sandboxes (never null).
	Sandboxes []Sandbox `json:"sandboxes"`
	// Pagination is the cursor.
	Pagination Pagination `json:"pagination"`
}

// UpdateSandboxResponse is the answer of PATCH and DELETE
// /v2/sandboxes/{name}.
type UpdateSandboxResponse struct {
	// Sandbox is the sandbox as it now is.
	Sandbox Sandbox `json:"sandbox"`
	// Routes are its routes, when its ports changed.
	Routes []Route `json:"routes,omitempty"`
}

// CommandResponse is the answer of starting, getting or killing a command.
type CommandResponse struct {
	// Command is the command.
	Command Command `json:"command"`
}

// CreateSnapshotResponse is the answer of POST .../snapshot.
type CreateSnapshotResponse struct {
	// Snapshot is the new snapshot.
	Snapshot Snapshot `json:"snapshot"`
	// Session is the session, now snapshotting or stopped.
	Session Session `json:"session"`
}

// SnapshotResponse is the answer of GET and DELETE of a snapshot.
type SnapshotResponse struct {
	// Snapshot is the snapshot.
	Snapshot Snapshot `json:"snapshot"`
}

// SnapshotList is a page of GET /v2/sandboxes/snapshots.
type SnapshotList struct {
	// Snapshots are the page's snapshots (never null).
	Snapshots []Snapshot `json:"snapshots"`
	// Pagination is the cursor.
	Pagination Pagination `json:"pagination"`
}

// SnapshotSource makes a sandbox start from a snapshot
// (CreateSandboxRequest.Source).
type SnapshotSource struct {
	// Type is "snapshot".
	Type string `json:"type"`
	// SnapshotID is the snapshot.
	SnapshotID string `json:"snapshotId"`
}

// FromSnapshot is the source of a sandbox made from snapshot id.
func FromSnapshot(id string) *SnapshotSource {
	return &SnapshotSource{Type: "snapshot", SnapshotID: id}
}

// Resources are a sandbox's resources.
type Resources struct {
	// VCPUs is the number of virtual CPUs (memory is 2048 MB per vCPU).
	VCPUs int `json:"vcpus"`
	// Memory is the memory in MB; the SDK sends it on update only.
	Memory int `json:"memory,omitempty"`
}

// CreateSandboxRequest is the body of POST /v3/sandboxes (POST
// /v2/sandboxes when Runtime is set), as the SDK's createSandbox sends it.
type CreateSandboxRequest struct {
	// ProjectID is the project the sandbox belongs to (required).
	ProjectID string `json:"projectId"`
	// Name names the sandbox; empty lets Vercel pick one.
	Name string `json:"name,omitempty"`
	// Ports are the ports to route publicly (at most 15).
	Ports []int `json:"ports"`
	// Source is what the file system starts from: a snapshot here (the
	// SDK also knows git and tarball sources).
	Source *SnapshotSource `json:"source,omitempty"`
	// Timeout is the session's timeout in milliseconds (Vercel's default
	// 5 minutes when zero).
	Timeout int64 `json:"timeout,omitempty"`
	// Resources are the sandbox's resources.
	Resources *Resources `json:"resources,omitempty"`
	// Runtime is a legacy runtime (node22, ...); it selects /v2.
	Runtime string `json:"runtime,omitempty"`
	// Image is a Vercel Container Registry image.
	Image string `json:"image,omitempty"`
	// Persistent keeps the file system between sessions (Vercel's default
	// when absent).
	Persistent *bool `json:"persistent,omitempty"`
	// Env is the default environment of every command.
	Env map[string]string `json:"env,omitempty"`
	// Tags are up to five key-value tags.
	Tags map[string]string `json:"tags,omitempty"`
	// SnapshotExpiration is the default expiration of the sandbox's
	// snapshots in milliseconds (0: never).
	SnapshotExpiration *int64 `json:"snapshotExpiration,omitempty"`
}

// UpdateSandboxRequest is the body of PATCH /v2/sandboxes/{name}; nil
// fields are left as they are.
type UpdateSandboxRequest struct {
	// Persistent turns persistence on or off.
	Persistent *bool `json:"persistent,omitempty"`
	// Resources changes the resources of the next session.
	Resources *Resources `json:"resources,omitempty"`
	// Timeout changes the default session timeout (ms).
	Timeout *int64 `json:"timeout,omitempty"`
	// Tags replaces the tags.
	Tags map[string]string `json:"tags,omitempty"`
	// Ports replaces the routed ports.
	Ports []int `json:"ports,omitempty"`
}

// CommandRequest is the body of POST /v2/sandboxes/sessions/{id}/cmd.
type CommandRequest struct {
	// Command is the executable (run directly, not by a shell).
	Command string `json:"command"`
	// Args are its arguments (never null on the wire).
	Args []string `json:"args"`
	// Cwd is its working directory (the session's default when empty).
	Cwd string `json:"cwd,omitempty"`
	// Env is added to the sandbox's environment for this command.
	Env map[string]string `json:"env"`
	// Sudo runs the command as root.
	Sudo bool `json:"sudo"`
	// Wait makes the answer an NDJSON stream that ends with the
	// finished command.
	Wait bool `json:"wait,omitempty"`
	// Logs adds the command's output to the Wait stream.
	Logs bool `json:"logs,omitempty"`
	// Timeout bounds the command in milliseconds.
	Timeout int64 `json:"timeout,omitempty"`
}

// PathRequest is the body of fs/read and fs/mkdir.
type PathRequest struct {
	// Path is the file or directory; a relative one is under Cwd.
	Path string `json:"path"`
	// Cwd is what a relative Path is relative to (default: the
	// session's working directory).
	Cwd string `json:"cwd,omitempty"`
}

// LogLine is one line of a command's NDJSON output: stream "stdout" or
// "stderr" with text in Data, or "error" with an error object.
type LogLine struct {
	// Stream is "stdout", "stderr" or "error".
	Stream string `json:"stream"`
	// Data is the text (stdout, stderr) or {code, message} (error).
	Data json.RawMessage `json:"data"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	// Error describes it.
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is an error's code and message.
type ErrorDetail struct {
	// Code classifies it, e.g. "sandbox_stopped" or "not_found".
	Code string `json:"code"`
	// Message explains it.
	Message string `json:"message"`
}
