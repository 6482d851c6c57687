package vercelemu

import (
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// sandbox is one named sandbox. Its fields are guarded by Emulator.mu;
// ops serializes the Docker work of its transitions.
type sandbox struct {
	project, name string
	persistent    bool
	vcpus         int
	timeout       int64 // a new session's timeout (ms)
	env           map[string]string
	tags          map[string]string
	ports         []int
	subdomains    map[int]string // per port
	createdAt     int64
	updatedAt     int64
	statusAt      int64
	source        string // the snapshot it was made from ("" = the base image)
	currentSnap   string // the latest snapshot of it
	session       *session
	container     string // the container holding its file system ("" = none yet, or discarded)
	ip            string // the container's address while it runs
	ops           sync.Mutex
}

// session is one run of a sandbox: its container running.
type session struct {
	id              string
	sb              *sandbox
	status          string
	timeout         int64 // ms from startedAt
	requestedAt     int64
	startedAt       int64
	requestedStopAt int64
	stoppedAt       int64
	abortedAt       int64
	snapshottedAt   int64
	createdAt       int64
	updatedAt       int64
	sourceSnapshot  string
	timer           *time.Timer // stops the session when its timeout passes
}

// snapshot is a saved file system: a Docker image committed from a
// sandbox's container.
type snapshot struct {
	id, project, sandboxName, sourceSession string
	image                                   string
	status                                  string
	sizeBytes                               int64
	createdAt, updatedAt, expiresAt         int64
	parent                                  string
}

// running reports whether a status is a session that runs.
func running(status string) bool {
	return status == sandboxapi.StatusRunning || status == sandboxapi.StatusPending
}

// setStatus moves s to status and wakes the waiters. Callers hold e.mu.
func (e *Emulator) setStatus(s *session, status string) {
	t := now()
	s.status, s.updatedAt, s.sb.statusAt = status, t, t
	switch status {
	case sandboxapi.StatusStopped, sandboxapi.StatusFailed, sandboxapi.StatusAborted:
		if s.stoppedAt == 0 {
			s.stoppedAt = t
		}
		if status == sandboxapi.StatusAborted {
			s.abortedAt = t
		}
		if s.timer != nil {
			s.timer.Stop()
		}
	}
	close(e.changed)
	e.changed = make(chan struct{})
	e.log.Debug("session_status", zap.String("sandbox", s.sb.name), zap.String("session", s.id), zap.String("status", status))
}

// key is a sandbox's map key.
func key(project, name string) string { return project + "/" + name }

// sandboxView is sb as the API reports it. Callers hold e.mu.
func (e *Emulator) sandboxView(sb *sandbox) sandboxapi.Sandbox {
	s := sb.session
	out := sandboxapi.Sandbox{
		Name: sb.name, Persistent: sb.persistent, Region: Region, VCPUs: sb.vcpus,
		Memory: sb.vcpus * sandboxapi.MemoryPerVCPU, Timeout: sb.timeout,
		CreatedAt: sb.createdAt, UpdatedAt: sb.updatedAt, CurrentSessionID: s.id,
		CurrentSnapshotID: sb.currentSnap, Status: s.status, StatusUpdatedAt: sb.statusAt,
		Cwd: DefaultCwd, Tags: maps.Clone(sb.tags),
	}
	if s.startedAt != 0 {
		out.ExpiresAt = s.startedAt + s.timeout
	}
	return out
}

// sessionView is s as the API reports it. Callers hold e.mu.
func (e *Emulator) sessionView(s *session) sandboxapi.Session {
	out := sandboxapi.Session{
		ID: s.id, Memory: s.sb.vcpus * sandboxapi.MemoryPerVCPU, VCPUs: s.sb.vcpus, Region: Region,
		Timeout: s.timeout, Status: s.status, RequestedAt: s.requestedAt, StartedAt: s.startedAt,
		RequestedStopAt: s.requestedStopAt, StoppedAt: s.stoppedAt, AbortedAt: s.abortedAt,
		SourceSnapshotID: s.sourceSnapshot, SnapshottedAt: s.snapshottedAt, CreatedAt: s.createdAt,
		Cwd: DefaultCwd, UpdatedAt: s.updatedAt,
	}
	if s.stoppedAt != 0 && s.startedAt != 0 {
		out.Duration = s.stoppedAt - s.startedAt
		out.NetworkTransfer = &sandboxapi.NetworkTransfer{}
	}
	return out
}

// routesView is sb's routes: one per port, at the proxy. Callers hold
// e.mu.
func (e *Emulator) routesView(sb *sandbox) []sandboxapi.Route {
	out := make([]sandboxapi.Route, 0, len(sb.ports))
	for _, p := range sb.ports {
		sub := sb.subdomains[p]
		out = append(out, sandboxapi.Route{URL: e.servers.ProxyURL + "/" + sub, Subdomain: sub, Port: p})
	}
	return out
}

// snapshotView is sn as the API reports it.
func snapshotView(sn *snapshot) sandboxapi.Snapshot {
	return sandboxapi.Snapshot{
		ID: sn.id, SourceSessionID: sn.sourceSession, Region: Region, Status: sn.status, SizeBytes: sn.sizeBytes,
		ExpiresAt: sn.expiresAt, CreatedAt: sn.createdAt, UpdatedAt: sn.updatedAt, ParentID: sn.parent,
	}
}

// both is the answer of create and get. Callers hold e.mu.
func (e *Emulator) both(sb *sandbox, resumed bool) sandboxapi.SandboxAndSession {
	return sandboxapi.SandboxAndSession{Sandbox: e.sandboxView(sb), Session: e.sessionView(sb.session),
		Routes: e.routesView(sb), Resumed: resumed}
}

// newSession makes sb's next session, pending. Callers hold e.mu.
func (e *Emulator) newSession(sb *sandbox, source string) *session {
	t := now()
	s := &session{id: "sbx_" + randhex.String(12), sb: sb, status: sandboxapi.StatusPending, timeout: sb.timeout,
		requestedAt: t, createdAt: t, updatedAt: t, sourceSnapshot: source}
	e.sessions[s.id] = s
	sb.session = s
	sb.statusAt = t
	return s
}

// subdomainsFor names a route per port.
func subdomainsFor(ports []int) map[int]string {
	out := map[int]string{}
	for _, p := range ports {
		out[p] = "sb-" + randhex.String(8) + "-" + strconv.Itoa(p)
	}
	return out
}

// lookupSandbox is the named sandbox of project (nil if none). Callers
// hold e.mu.
func (e *Emulator) lookupSandbox(project, name string) *sandbox {
	return e.sandboxes[key(project, name)]
}

// Sandboxes reports every sandbox (of every project) by name, with the
// status of its current session: what the dashboard would list.
func (e *Emulator) Sandboxes() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	for _, sb := range e.sandboxes {
		out[sb.name] = sb.session.status
	}
	return out
}

// Status reports the status of sandbox name's current session ("" when
// there is no such sandbox).
func (e *Emulator) Status(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sb := e.byName(name); sb != nil {
		return sb.session.status
	}
	return ""
}

// Tags reports sandbox name's tags (nil when there is no such sandbox).
func (e *Emulator) Tags(name string) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sb := e.byName(name); sb != nil {
		return maps.Clone(sb.tags)
	}
	return nil
}

// Snapshots reports the ids of the snapshots that exist (not deleted).
func (e *Emulator) Snapshots() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for id, sn := range e.snapshots {
		if sn.status == sandboxapi.SnapshotCreated {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// ContainerID is the Docker container holding sandbox name's file system
// ("" when none), for tests that look inside.
func (e *Emulator) ContainerID(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sb := e.byName(name); sb != nil {
		return sb.container
	}
	return ""
}

// byName finds a sandbox by name in any project. Callers hold e.mu.
func (e *Emulator) byName(name string) *sandbox {
	for _, sb := range e.sandboxes {
		if sb.name == name {
			return sb
		}
	}
	return nil
}
