package vercelemu

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/apirecord"
	"github.com/agcluster/caddy-agcluster/internal/emuhttp"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/internal/ratebucket"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// Routes of the API ([Request.Route]) that tests count.
const (
	// RouteCreate creates a sandbox (the SDK's path without a runtime).
	RouteCreate = "POST /v3/sandboxes"
	// RouteList lists sandboxes.
	RouteList = "GET /v2/sandboxes"
	// RouteGet gets (and resumes) a sandbox.
	RouteGet = "GET /v2/sandboxes/{name}"
	// RouteCommand starts a command.
	RouteCommand = "POST " + sessionRoute + "/cmd"
	// RouteWrite uploads files.
	RouteWrite = "POST " + sessionRoute + "/fs/write"
	// RouteSnapshot snapshots a session.
	RouteSnapshot = "POST " + sessionRoute + "/snapshot"
	// RouteExtend extends a session's timeout.
	RouteExtend = "POST " + sessionRoute + "/extend-timeout"
	// RouteStop stops a session.
	RouteStop = "POST " + sessionRoute + "/stop"
)

// sessionRoute is the path of a session.
const sessionRoute = "/v2/sandboxes/sessions/{sid}"

// routes is the Sandbox API as @vercel/sandbox 3.5.0 calls it.
func (e *Emulator) routes() http.Handler {
	mux := http.NewServeMux()
	const sb, ss, snap = "/v2/sandboxes/{name}", sessionRoute, "/v2/sandboxes/snapshots"
	e.handle(mux, RouteCreate, e.create)
	e.handle(mux, "POST /v2/sandboxes", e.create) // with a legacy runtime
	e.handle(mux, RouteList, e.list)
	e.handle(mux, RouteGet, e.withSandbox(e.get))
	e.handle(mux, "PATCH "+sb, e.withSandbox(e.update))
	e.handle(mux, "DELETE "+sb, e.withSandbox(e.remove))
	e.handle(mux, "GET /v2/sandboxes/sessions", e.listSessions)
	e.handle(mux, "GET "+ss, e.withSession(e.getSession))
	e.handle(mux, RouteStop, e.withSession(e.stop))
	e.handle(mux, RouteExtend, e.whileRunning(e.extend))
	e.handle(mux, RouteSnapshot, e.whileRunning(e.snapshot))
	e.handle(mux, RouteCommand, e.whileRunning(e.runCommand))
	e.handle(mux, "GET "+ss+"/cmd/{cid}", e.withCommand(e.getCommand))
	e.handle(mux, "GET "+ss+"/cmd/{cid}/logs", e.withCommand(e.commandLogs))
	e.handle(mux, "POST "+ss+"/cmd/{cid}/kill", e.withCommand(e.kill))
	e.handle(mux, RouteWrite, e.whileRunning(e.writeFiles))
	e.handle(mux, "POST "+ss+"/fs/read", e.whileRunning(e.readFile))
	e.handle(mux, "POST "+ss+"/fs/mkdir", e.whileRunning(e.mkdir))
	e.handle(mux, "GET "+snap, e.listSnapshots)
	e.handle(mux, "GET "+snap+"/{id}", e.withSnapshot(e.getSnapshot))
	e.handle(mux, "DELETE "+snap+"/{id}", e.withSnapshot(e.deleteSnapshot))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !e.authorized(r) {
			writeForbidden(w)
			return
		}
		writeError(w, http.StatusNotFound, sandboxapi.CodeNotFound, "the emulator does not implement "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// call is one API request on its way to a handler, with what its path
// names.
type call struct {
	w   http.ResponseWriter
	r   *http.Request
	sb  *sandbox
	s   *session
	cmd *command
	sn  *snapshot
}

// handle registers h behind authentication and the throttle (a bad token
// gets 403 before anything).
func (e *Emulator) handle(mux *http.ServeMux, pattern string, h func(*call)) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		apirecord.SetRoute(r, pattern)
		if !e.authorized(r) {
			writeForbidden(w)
			return
		}
		if e.opts.TeamID != "" && r.URL.Query().Get("teamId") != e.opts.TeamID {
			writeError(w, http.StatusForbidden, "forbidden", "You don't have permission to access this team")
			return
		}
		if e.throttled() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "too_many_requests", "Rate limit exceeded")
			return
		}
		h(&call{w: w, r: r})
	})
}

// throttled takes one from Throttle's count.
func (e *Emulator) throttled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.throttle > 0 {
		e.throttle--
		return true
	}
	return false
}

// authorized checks "Authorization: Bearer <token>".
func (e *Emulator) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(tok), []byte(e.opts.Token)) == 1
}

// writeError answers the API's error body {"error": {"code", "message"}}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	emuhttp.WriteJSON(w, status, sandboxapi.ErrorBody{Error: sandboxapi.ErrorDetail{Code: code, Message: msg}})
}

// writeForbidden answers a refused token as Vercel's API does.
func writeForbidden(w http.ResponseWriter) {
	emuhttp.WriteJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{
		"code": "forbidden", "message": "Not authorized", "invalidToken": true}})
}

// decode reads the JSON body into v; an empty body leaves v as it is.
func decode(c *call, v any) bool {
	if err := emuhttp.ReadJSON(c.r, v); err != nil {
		writeError(c.w, http.StatusBadRequest, "bad_request", "Invalid request body: "+err.Error())
		return false
	}
	return true
}

// knownProject checks a project id; unknown ones answer 404.
func (e *Emulator) knownProject(c *call, id string) bool {
	if slices.Contains(e.opts.Projects, id) {
		return true
	}
	writeError(c.w, http.StatusNotFound, sandboxapi.CodeNotFound, "Project not found")
	return false
}

// withSandbox resolves {name} in ?projectId's project.
func (e *Emulator) withSandbox(h func(*call)) func(*call) {
	return func(c *call) {
		project := c.r.URL.Query().Get("projectId")
		if !e.knownProject(c, project) {
			return
		}
		e.mu.Lock()
		c.sb = e.lookupSandbox(project, c.r.PathValue("name"))
		e.mu.Unlock()
		if c.sb == nil {
			writeError(c.w, http.StatusNotFound, sandboxapi.CodeNotFound, "Sandbox not found: "+c.r.PathValue("name"))
			return
		}
		h(c)
	}
}

// withSession resolves {sid}.
func (e *Emulator) withSession(h func(*call)) func(*call) {
	return func(c *call) {
		e.mu.Lock()
		c.s = e.sessions[c.r.PathValue("sid")]
		e.mu.Unlock()
		if c.s == nil {
			writeError(c.w, http.StatusNotFound, sandboxapi.CodeNotFound, "Session not found: "+c.r.PathValue("sid"))
			return
		}
		c.sb = c.s.sb
		h(c)
	}
}

// whileRunning resolves {sid} and lets only a running session through: a
// stopping or snapshotting one answers 422, one that ended 410 (as
// Vercel's SANDBOX_STOPPING, SANDBOX_SNAPSHOTTING and SANDBOX_STOPPED).
func (e *Emulator) whileRunning(h func(*call)) func(*call) {
	return e.withSession(func(c *call) {
		e.mu.Lock()
		st := c.s.status
		e.mu.Unlock()
		switch st {
		case sandboxapi.StatusRunning:
			h(c)
		case sandboxapi.StatusStopping, sandboxapi.StatusPending:
			writeError(c.w, http.StatusUnprocessableEntity, sandboxapi.CodeSandboxStopping, "The sandbox is stopping")
		case sandboxapi.StatusSnapshotting:
			writeError(c.w, http.StatusUnprocessableEntity, sandboxapi.CodeSandboxSnapshotting, "The sandbox is being snapshotted")
		default:
			writeError(c.w, http.StatusGone, sandboxapi.CodeSandboxStopped, "The sandbox is stopped")
		}
	})
}

// withCommand resolves {sid} and {cid}.
func (e *Emulator) withCommand(h func(*call)) func(*call) {
	return e.withSession(func(c *call) {
		e.mu.Lock()
		c.cmd = e.commands[c.r.PathValue("cid")]
		e.mu.Unlock()
		if c.cmd == nil || c.cmd.s != c.s {
			writeError(c.w, http.StatusNotFound, sandboxapi.CodeNotFound, "Command not found: "+c.r.PathValue("cid"))
			return
		}
		h(c)
	})
}

// withSnapshot resolves {id}.
func (e *Emulator) withSnapshot(h func(*call)) func(*call) {
	return func(c *call) {
		e.mu.Lock()
		c.sn = e.snapshots[c.r.PathValue("id")]
		e.mu.Unlock()
		if c.sn == nil {
			writeError(c.w, http.StatusNotFound, sandboxapi.CodeNotFound, "Snapshot not found: "+c.r.PathValue("id"))
			return
		}
		h(c)
	}
}

// createBody is what create accepts: the SDK's fields (those the
// emulator does not model are accepted and ignored).
type createBody struct {
	sandboxapi.CreateSandboxRequest
	Source *struct {
		Type       string `json:"type"`
		SnapshotID string `json:"snapshotId"`
	} `json:"source"`
}

// nameRE is what the emulator accepts as a sandbox name.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

// create is POST /v3/sandboxes (and /v2/sandboxes): a new sandbox and
// its first session, answered once the session runs.
func (e *Emulator) create(c *call) {
	var in createBody
	if !decode(c, &in) || !e.knownProject(c, in.ProjectID) {
		return
	}
	vcpus := DefaultVCPUs
	if in.Resources != nil && in.Resources.VCPUs != 0 {
		vcpus = in.Resources.VCPUs
	}
	timeout := cmp.Or(in.Timeout, DefaultTimeout.Milliseconds())
	if msg := e.checkCreate(in, vcpus, timeout); msg != "" {
		writeError(c.w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	source := ""
	if in.Source != nil {
		if in.Source.Type != "snapshot" {
			writeError(c.w, http.StatusBadRequest, "bad_request", "vercelemu: "+in.Source.Type+" sources are not emulated")
			return
		}
		if !e.usableSnapshot(in.Source.SnapshotID, in.ProjectID) {
			writeError(c.w, http.StatusGone, sandboxapi.CodeSnapshotNotFound, "Snapshot not found: "+in.Source.SnapshotID)
			return
		}
		source = in.Source.SnapshotID
	}
	if !e.allow(c, in.ProjectID, vcpus) {
		return
	}
	t := now()
	sb := &sandbox{project: in.ProjectID, name: in.Name, persistent: in.Persistent == nil || *in.Persistent,
		vcpus: vcpus, timeout: timeout, env: maps.Clone(in.Env), tags: maps.Clone(in.Tags), ports: slices.Clone(in.Ports),
		subdomains: subdomainsFor(in.Ports), createdAt: t, updatedAt: t, source: source}
	if sb.name == "" {
		sb.name = "sbx-" + randhex.String(8)
	}
	e.mu.Lock()
	if e.lookupSandbox(sb.project, sb.name) != nil {
		e.mu.Unlock()
		writeError(c.w, http.StatusConflict, "conflict", "A sandbox named "+sb.name+" already exists")
		return
	}
	e.sandboxes[key(sb.project, sb.name)] = sb
	s := e.newSession(sb, source)
	e.mu.Unlock()
	e.answerBoot(c, sb, s, false)
}

// checkCreate explains what is wrong with a create ("" when nothing).
func (e *Emulator) checkCreate(in createBody, vcpus int, timeout int64) string {
	switch {
	case in.Name != "" && !nameRE.MatchString(in.Name):
		return "Invalid sandbox name: " + in.Name
	case len(in.Ports) > MaxPorts:
		return fmt.Sprintf("A sandbox can expose at most %d ports", MaxPorts)
	case len(in.Tags) > MaxTags:
		return fmt.Sprintf("A sandbox can have at most %d tags", MaxTags)
	case vcpus < 1 || vcpus > 8:
		return "resources.vcpus must be between 1 and 8"
	case timeout < 1000:
		return "timeout must be at least 1000 ms"
	case timeout > e.opts.MaxTimeout.Milliseconds():
		return fmt.Sprintf("timeout exceeds the maximum of %s for your plan", e.opts.MaxTimeout)
	}
	for _, p := range in.Ports {
		if p < 1 || p > 65535 {
			return "Invalid port " + strconv.Itoa(p)
		}
	}
	return ""
}

// usableSnapshot reports whether snapshot id of project exists, is
// created and has not expired.
func (e *Emulator) usableSnapshot(id, project string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	sn := e.snapshots[id]
	return sn != nil && sn.project == project && sn.status == sandboxapi.SnapshotCreated &&
		(sn.expiresAt == 0 || now() < sn.expiresAt)
}

// answerBoot boots session s of sb and answers the sandbox, its session
// and routes (500 when the container does not start).
func (e *Emulator) answerBoot(c *call, sb *sandbox, s *session, resumed bool) {
	sb.ops.Lock()
	ctx, cancel := e.opContext(2 * time.Minute)
	err := e.boot(ctx, sb, s)
	cancel()
	sb.ops.Unlock()
	if err != nil {
		writeError(c.w, http.StatusInternalServerError, "internal_server_error", "The sandbox could not be started")
		return
	}
	e.mu.Lock()
	out := e.both(sb, resumed)
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// allow takes vcpus from project's allocation rate, or answers 429.
func (e *Emulator) allow(c *call, project string, vcpus int) bool {
	ok, wait := e.limiter.allow(project, vcpus)
	if !ok {
		c.w.Header().Set("Retry-After", strconv.Itoa(ratebucket.RetryAfter(wait)))
		writeError(c.w, http.StatusTooManyRequests, "too_many_requests", "vCPU allocation rate limit exceeded")
	}
	return ok
}

// get is GET /v2/sandboxes/{name}; with resume=true a sandbox whose
// session ended gets a new one (from its file system when persistent),
// after the stop of one still stopping.
func (e *Emulator) get(c *call) {
	resume := c.r.URL.Query().Get("resume") == "true"
	e.mu.Lock()
	sb := c.sb
	st := sb.session.status
	if !resume || running(st) {
		out := e.both(sb, false)
		e.mu.Unlock()
		emuhttp.WriteJSON(c.w, http.StatusOK, out)
		return
	}
	prev := sb.session
	e.mu.Unlock()
	if st == sandboxapi.StatusStopping || st == sandboxapi.StatusSnapshotting {
		// The SDK resumes a session it found stopping (422) at once: the
		// resume waits for the stop.
		ctx, cancel := context.WithTimeout(c.r.Context(), 2*time.Minute)
		err := e.waitSession(ctx, prev, func(st string) bool {
			return !running(st) && st != sandboxapi.StatusStopping && st != sandboxapi.StatusSnapshotting
		})
		cancel()
		if err != nil {
			writeError(c.w, http.StatusUnprocessableEntity, sandboxapi.CodeSandboxStopping, "The sandbox is stopping")
			return
		}
	}
	if sb.source != "" && !sb.persistent && !e.usableSnapshot(sb.source, sb.project) {
		writeError(c.w, http.StatusGone, sandboxapi.CodeSnapshotNotFound, "Snapshot not found: "+sb.source)
		return
	}
	if !e.allow(c, sb.project, sb.vcpus) {
		return
	}
	e.mu.Lock()
	if running(sb.session.status) { // another resume won
		out := e.both(sb, false)
		e.mu.Unlock()
		emuhttp.WriteJSON(c.w, http.StatusOK, out)
		return
	}
	s := e.newSession(sb, sb.source)
	e.mu.Unlock()
	e.answerBoot(c, sb, s, true)
}

// updateBody is what PATCH accepts.
type updateBody struct {
	sandboxapi.UpdateSandboxRequest
}

// update is PATCH /v2/sandboxes/{name}: tags, ports, timeout, resources
// and persistence of the next session.
func (e *Emulator) update(c *call) {
	var in updateBody
	if !decode(c, &in) {
		return
	}
	if len(in.Tags) > MaxTags {
		writeError(c.w, http.StatusBadRequest, "bad_request", fmt.Sprintf("A sandbox can have at most %d tags", MaxTags))
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	sb := c.sb
	if in.Tags != nil {
		sb.tags = maps.Clone(in.Tags)
	}
	if in.Timeout != nil {
		sb.timeout = *in.Timeout
	}
	if in.Persistent != nil {
		sb.persistent = *in.Persistent
	}
	if in.Resources != nil && in.Resources.VCPUs > 0 {
		sb.vcpus = in.Resources.VCPUs
	}
	out := sandboxapi.UpdateSandboxResponse{}
	if in.Ports != nil {
		sb.ports, sb.subdomains = slices.Clone(in.Ports), subdomainsFor(in.Ports)
		out.Routes = e.routesView(sb)
	}
	sb.updatedAt = now()
	out.Sandbox = e.sandboxView(sb)
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// remove is DELETE /v2/sandboxes/{name}: its session stops, its container
// goes; its snapshots stay.
func (e *Emulator) remove(c *call) {
	sb := c.sb
	sb.ops.Lock()
	defer sb.ops.Unlock()
	e.mu.Lock()
	if e.lookupSandbox(sb.project, sb.name) != sb {
		e.mu.Unlock()
		writeError(c.w, http.StatusNotFound, sandboxapi.CodeNotFound, "Sandbox not found: "+sb.name)
		return
	}
	delete(e.sandboxes, key(sb.project, sb.name))
	if s := sb.session; running(s.status) || s.status == sandboxapi.StatusStopping {
		s.requestedStopAt = now()
		e.setStatus(s, sandboxapi.StatusStopped)
	}
	out := e.sandboxView(sb)
	e.mu.Unlock()
	ctx, cancel := e.opContext(time.Minute)
	defer cancel()
	if err := e.removeContainer(ctx, sb); err != nil {
		e.log.Warn("remove_failed", zap.String("sandbox", sb.name), zap.Error(err))
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, sandboxapi.UpdateSandboxResponse{Sandbox: out})
}

// list is GET /v2/sandboxes?project=&tags=k:v&namePrefix=&sortOrder=&limit=&cursor=.
func (e *Emulator) list(c *call) {
	q := c.r.URL.Query()
	if !e.knownProject(c, q.Get("project")) {
		return
	}
	e.mu.Lock()
	var all []*sandbox
	for _, sb := range e.sandboxes {
		if sb.project == q.Get("project") && strings.HasPrefix(sb.name, q.Get("namePrefix")) && hasTags(sb.tags, q["tags"]) {
			all = append(all, sb)
		}
	}
	sortByCreated(all, func(sb *sandbox) int64 { return sb.createdAt }, q.Get("sortOrder"))
	page, next := paginate(all, q.Get("cursor"), q.Get("limit"))
	views := make([]sandboxapi.Sandbox, 0, len(page))
	for _, sb := range page {
		views = append(views, e.sandboxView(sb))
	}
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, sandboxapi.SandboxList{Sandboxes: views, Pagination: sandboxapi.Pagination{Count: len(views), Next: next}})
}

// hasTags reports whether tags holds every key:value filter.
func hasTags(tags map[string]string, filters []string) bool {
	for _, f := range filters {
		k, v, _ := strings.Cut(f, ":")
		if tags[k] != v {
			return false
		}
	}
	return true
}

// sortByCreated sorts newest first, or oldest first with order "asc".
func sortByCreated[T any](items []T, created func(T) int64, order string) {
	slices.SortStableFunc(items, func(a, b T) int {
		if order == "asc" {
			return int(created(a) - created(b))
		}
		return int(created(b) - created(a))
	})
}

// paginate returns the page at cursor (an offset) of limit items (default
// 50, at most 100) and the next page's cursor (nil on the last).
func paginate[T any](items []T, cursor, limit string) ([]T, *string) {
	from, _ := strconv.Atoi(cursor)
	n, err := strconv.Atoi(limit)
	if err != nil || n <= 0 {
		n = 50
	}
	n = min(n, 100)
	from = min(max(from, 0), len(items))
	to := min(from+n, len(items))
	if to == len(items) {
		return items[from:to], nil
	}
	next := strconv.Itoa(to)
	return items[from:to], &next
}

// listSessions is GET /v2/sandboxes/sessions?project=&name=: a
// sandbox's sessions, newest first.
func (e *Emulator) listSessions(c *call) {
	q := c.r.URL.Query()
	if !e.knownProject(c, q.Get("project")) {
		return
	}
	e.mu.Lock()
	var all []*session
	for _, s := range e.sessions {
		if s.sb.project == q.Get("project") && (q.Get("name") == "" || s.sb.name == q.Get("name")) {
			all = append(all, s)
		}
	}
	sortByCreated(all, func(s *session) int64 { return s.createdAt }, q.Get("sortOrder"))
	page, next := paginate(all, q.Get("cursor"), q.Get("limit"))
	views := make([]sandboxapi.Session, 0, len(page))
	for _, s := range page {
		views = append(views, e.sessionView(s))
	}
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, map[string]any{"sessions": views, "pagination": sandboxapi.Pagination{Count: len(views), Next: next}})
}

// getSession is GET /v2/sandboxes/sessions/{sid}.
func (e *Emulator) getSession(c *call) {
	e.mu.Lock()
	out := sandboxapi.SessionAndRoutes{Session: e.sessionView(c.s), Routes: e.routesView(c.sb)}
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// stop is POST .../stop: a running session is stopping when this answers
// and stopped once its container is (a persistent sandbox keeps it); any
// other is answered as it is.
func (e *Emulator) stop(c *call) {
	e.mu.Lock()
	if c.s.status == sandboxapi.StatusRunning {
		e.halt(c.s, true)
	}
	out := sandboxapi.StopSessionResponse{Session: e.sessionView(c.s)}
	if e.lookupSandbox(c.sb.project, c.sb.name) == c.sb {
		v := e.sandboxView(c.sb)
		out.Sandbox = &v
	}
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// extend is POST .../extend-timeout {"duration": ms}: up to the plan's
// maximum in all.
func (e *Emulator) extend(c *call) {
	var in struct {
		Duration int64 `json:"duration"`
	}
	if !decode(c, &in) {
		return
	}
	if in.Duration < 1000 {
		writeError(c.w, http.StatusBadRequest, "bad_request", "duration must be at least 1000 ms")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := c.s
	if s.timeout+in.Duration > e.opts.MaxTimeout.Milliseconds() {
		writeError(c.w, http.StatusBadRequest, "bad_request",
			fmt.Sprintf("The total timeout cannot exceed the maximum allowed for your plan (%s)", e.opts.MaxTimeout))
		return
	}
	s.timeout += in.Duration
	s.updatedAt = now()
	e.armTimer(s)
	emuhttp.WriteJSON(c.w, http.StatusOK, sandboxapi.SessionResponse{Session: e.sessionView(s)})
}

// snapshot is POST .../snapshot {"expiration"?}: answered once the
// snapshot exists; the session then stops.
func (e *Emulator) snapshot(c *call) {
	var in struct {
		Expiration *int64 `json:"expiration"`
	}
	if !decode(c, &in) {
		return
	}
	ctx, cancel := e.opContext(5 * time.Minute)
	defer cancel()
	sn, err := e.snapshotSession(ctx, c.s, in.Expiration)
	if err != nil {
		writeError(c.w, http.StatusInternalServerError, "internal_server_error", "The snapshot could not be created")
		return
	}
	e.mu.Lock()
	out := sandboxapi.CreateSnapshotResponse{Snapshot: snapshotView(sn), Session: e.sessionView(c.s)}
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// listSnapshots is GET /v2/sandboxes/snapshots?project=&name=: the
// project's snapshots (of sandbox name), newest first.
func (e *Emulator) listSnapshots(c *call) {
	q := c.r.URL.Query()
	if !e.knownProject(c, q.Get("project")) {
		return
	}
	e.mu.Lock()
	var all []*snapshot
	for _, sn := range e.snapshots {
		if sn.project == q.Get("project") && sn.status != sandboxapi.SnapshotDeleted && (q.Get("name") == "" || sn.sandboxName == q.Get("name")) {
			all = append(all, sn)
		}
	}
	e.mu.Unlock()
	sortByCreated(all, func(sn *snapshot) int64 { return sn.createdAt }, q.Get("sortOrder"))
	page, next := paginate(all, q.Get("cursor"), q.Get("limit"))
	views := make([]sandboxapi.Snapshot, 0, len(page))
	for _, sn := range page {
		views = append(views, snapshotView(sn))
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, sandboxapi.SnapshotList{Snapshots: views, Pagination: sandboxapi.Pagination{Count: len(views), Next: next}})
}

// getSnapshot is GET /v2/sandboxes/snapshots/{id}.
func (e *Emulator) getSnapshot(c *call) {
	e.mu.Lock()
	out := sandboxapi.SnapshotResponse{Snapshot: snapshotView(c.sn)}
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// deleteSnapshot is DELETE /v2/sandboxes/snapshots/{id}: it is marked
// deleted (its image goes when the emulator closes).
func (e *Emulator) deleteSnapshot(c *call) {
	e.mu.Lock()
	c.sn.status, c.sn.updatedAt = sandboxapi.SnapshotDeleted, now()
	out := sandboxapi.SnapshotResponse{Snapshot: snapshotView(c.sn)}
	e.mu.Unlock()
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// runCommand is POST .../cmd: detached, answered at once; with wait, an
// NDJSON stream of the command, its output (with logs) and the finished
// command.
func (e *Emulator) runCommand(c *call) {
	var in sandboxapi.CommandRequest
	if !decode(c, &in) {
		return
	}
	if in.Command == "" {
		writeError(c.w, http.StatusBadRequest, "bad_request", "command is required")
		return
	}
	cmd, err := e.startCommand(c.r.Context(), c.s, in)
	if err != nil {
		writeError(c.w, http.StatusBadRequest, "bad_request", "The command could not be started: "+err.Error())
		return
	}
	if !in.Wait {
		emuhttp.WriteJSON(c.w, http.StatusOK, sandboxapi.CommandResponse{Command: cmd.view()})
		return
	}
	e.streamCommand(c, cmd, in.Logs)
}

// streamCommand answers a waited command as NDJSON: the command, its
// output when logs, then the finished command, or an error line when the
// session stops first.
func (e *Emulator) streamCommand(c *call, cmd *command, logs bool) {
	nd := newNDJSON(c.w)
	nd.line(sandboxapi.CommandResponse{Command: cmd.view()})
	stopped := e.sessionEnded(c.r.Context(), c.s)
	ctx, cancel := context.WithCancel(c.r.Context())
	defer cancel()
	go func() {
		select {
		case <-stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := cmd.follow(ctx, func(l logEntry) error {
		if logs {
			nd.line(map[string]string{"stream": l.stream, "data": l.data})
		}
		return nil
	})
	if c.r.Context().Err() != nil {
		return
	}
	e.mu.Lock()
	st := c.s.status
	e.mu.Unlock()
	if err != nil || st != sandboxapi.StatusRunning { // the command ended with its session
		nd.line(map[string]any{"stream": "error", "data": sandboxapi.ErrorDetail{Code: sandboxapi.CodeSandboxStopped, Message: "The sandbox stopped"}})
		return
	}
	nd.line(sandboxapi.CommandResponse{Command: cmd.view()})
}

// sessionEnded returns a channel closed once s is no longer running.
func (e *Emulator) sessionEnded(ctx context.Context, s *session) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.waitSession(ctx, s, func(st string) bool { return st != sandboxapi.StatusRunning })
	}()
	return done
}

// getCommand is GET .../cmd/{cid}; with wait=true it answers once the
// command has finished.
func (e *Emulator) getCommand(c *call) {
	if c.r.URL.Query().Get("wait") == "true" {
		select {
		case <-c.cmd.done:
		case <-c.r.Context().Done():
			return
		}
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, sandboxapi.CommandResponse{Command: c.cmd.view()})
}

// commandLogs is GET .../cmd/{cid}/logs: the command's output as NDJSON
// until it finishes.
func (e *Emulator) commandLogs(c *call) {
	nd := newNDJSON(c.w)
	_ = c.cmd.follow(c.r.Context(), func(l logEntry) error {
		nd.line(map[string]string{"stream": l.stream, "data": l.data})
		return nil
	})
}

// kill is POST .../cmd/{cid}/kill {"signal"}.
func (e *Emulator) kill(c *call) {
	var in struct {
		Signal int `json:"signal"`
	}
	if !decode(c, &in) {
		return
	}
	if in.Signal == 0 {
		in.Signal = 15
	}
	if err := e.killCommand(c.r.Context(), c.cmd, in.Signal); err != nil {
		writeError(c.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, sandboxapi.CommandResponse{Command: c.cmd.view()})
}

// ndjson writes one JSON value per line, flushing each.
type ndjson struct {
	w http.ResponseWriter
	f http.Flusher
}

func newNDJSON(w http.ResponseWriter) *ndjson {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	return &ndjson{w: w, f: f}
}

func (n *ndjson) line(v any) {
	b, _ := json.Marshal(v)
	_, _ = n.w.Write(append(b, '\n'))
	if n.f != nil {
		n.f.Flush()
	}
}
