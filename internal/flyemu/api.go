package flyemu

import (
	"cmp"
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/apirecord"
	"github.com/agcluster/caddy-agcluster/internal/emuhttp"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/internal/ratebucket"
)

// route scopes: what a rate-limit bucket is keyed by.
const (
	perMachine = iota
	perApp
)

// routes is the Machines API (https://fly.io/docs/machines/api/), the
// subset fly-go's flaps client uses for machines.
// RouteList is the route of the list call ([Request.Route]), which a
// provider without an event stream polls.
const RouteList = "GET " + machinesPath

// machinesPath is the path of an app's machines.
const machinesPath = "/v1/apps/{app}/machines"

func (e *Emulator) routes() http.Handler {
	mux := http.NewServeMux()
	const ms = machinesPath
	const m = ms + "/{id}"
	e.handle(mux, "POST "+ms, perApp, false, e.create)
	e.handle(mux, RouteList, perApp, true, e.list)
	e.handle(mux, "GET "+m, perMachine, true, e.get)
	e.handle(mux, "POST "+m, perMachine, false, e.leased(e.update))
	e.handle(mux, "DELETE "+m, perMachine, false, e.leased(e.destroy))
	e.handle(mux, "POST "+m+"/start", perMachine, false, e.leased(e.start))
	e.handle(mux, "POST "+m+"/stop", perMachine, false, e.leased(e.stop))
	e.handle(mux, "POST "+m+"/suspend", perMachine, false, e.leased(e.suspend))
	e.handle(mux, "GET "+m+"/wait", perMachine, false, e.wait)
	e.handle(mux, "GET "+m+"/lease", perMachine, true, e.findLease)
	e.handle(mux, "POST "+m+"/lease", perMachine, false, e.postLease)
	e.handle(mux, "DELETE "+m+"/lease", perMachine, false, e.releaseLease)
	e.handle(mux, "GET "+m+"/metadata", perMachine, true, e.getMetadata)
	e.handle(mux, "POST "+m+"/metadata/{key}", perMachine, false, e.setMetadata)
	e.handle(mux, "DELETE "+m+"/metadata/{key}", perMachine, false, e.deleteMetadata)
	e.handle(mux, "GET /v1/apps/{app}", perApp, true, e.getApp)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !e.authorized(r) {
			writeError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		writeError(w, http.StatusNotFound, "not found (the emulator does not implement "+r.Method+" "+r.URL.Path+")")
	})
	return mux
}

// call is one API request on its way to a handler: its app and, for
// machine routes, its machine.
type call struct {
	w   http.ResponseWriter
	r   *http.Request
	app string
	m   *machine
}

// handle registers h behind authentication, the app and machine lookup and
// the rate limit, in that order (a bad token gets 401 before anything).
func (e *Emulator) handle(mux *http.ServeMux, pattern string, scope int, get bool, h func(*call)) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		apirecord.SetRoute(r, pattern)
		if !e.authorized(r) {
			writeError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		c := &call{w: w, r: r, app: r.PathValue("app")}
		if !slices.Contains(e.opts.Apps, c.app) {
			writeError(w, http.StatusNotFound, "app not found")
			return
		}
		key := pattern + " " + c.app
		if id := r.PathValue("id"); id != "" {
			e.mu.Lock()
			c.m = e.machines[id]
			e.mu.Unlock()
			if c.m == nil || c.m.app != c.app {
				writeError(w, http.StatusNotFound, "machine not found")
				return
			}
			if scope == perMachine {
				key = pattern + " " + id
			}
		}
		if ok, wait := e.limiter.allow(key, get); !ok {
			// Fly answers 429 with Retry-After (seconds).
			w.Header().Set("Retry-After", strconv.Itoa(ratebucket.RetryAfter(wait)))
			writeError(w, http.StatusTooManyRequests, "rate limit exceeded")
			return
		}
		h(c)
	})
}

// authorized checks the Authorization header: "Bearer <token>" or
// "FlyV1 <token>" (flaps sends FlyV1 for macaroons, Bearer otherwise).
func (e *Emulator) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !(strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "FlyV1")) {
		return false
	}
	tok = tokens.StripAuthorizationScheme(tok)
	return subtle.ConstantTimeCompare([]byte(tok), []byte(e.opts.Token)) == 1
}

// writeError answers Fly's error body {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	emuhttp.WriteJSON(w, status, map[string]string{"error": msg})
}

// decode reads the JSON body into v; an empty body leaves v as it is.
func decode(c *call, v any) bool {
	if err := emuhttp.ReadJSON(c.r, v); err != nil {
		writeError(c.w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return false
	}
	return true
}

// getApp is GET /v1/apps/{app}.
func (e *Emulator) getApp(c *call) {
	emuhttp.WriteJSON(c.w, http.StatusOK, map[string]any{"name": c.app, "status": "deployed",
		"organization": map[string]string{"name": "emulated", "slug": "personal"}})
}

// view is m as the API reports it (fly.Machine). Callers hold e.mu.
func (e *Emulator) view(m *machine) *fly.Machine {
	out := &fly.Machine{
		ID: m.id, Name: m.name, State: m.state, Region: m.region, ImageRef: m.imageRef,
		InstanceID: m.instanceID, Version: m.instanceID, PrivateIP: m.privateIP,
		CreatedAt: m.createdAt.Format(time.RFC3339), UpdatedAt: m.updatedAt.Format(time.RFC3339),
		Config: m.config, Events: slices.Clone(m.events), HostStatus: fly.HostStatusOk,
	}
	return out
}

// create is POST /v1/apps/{app}/machines (flaps Launch).
func (e *Emulator) create(c *call) {
	var in fly.LaunchMachineInput
	if !decode(c, &in) {
		return
	}
	if msg := unsupported(in.Config); msg != "" {
		writeError(c.w, http.StatusUnprocessableEntity, msg)
		return
	}
	ref, err := e.imageRef(c.r.Context(), in.Config.Image)
	if err != nil {
		// Fly cannot resolve the image: the create fails.
		writeError(c.w, http.StatusUnprocessableEntity, fmt.Sprintf("invalid image %q: could not resolve image: %v", in.Config.Image, err))
		return
	}
	now := time.Now().UTC()
	m := &machine{
		id: randhex.String(7), app: c.app, name: in.Name, region: cmp.Or(in.Region, e.opts.Region),
		instanceID: instanceID(), config: normalizeConfig(in.Config), imageRef: ref,
		createdAt: now, updatedAt: now, state: stateCreated,
	}
	if m.name == "" {
		m.name = "machine-" + m.id
	}
	m.events = []*fly.MachineEvent{{Type: "launch", Status: stateCreated, Source: "user", Timestamp: now.UnixMilli()}}
	if in.LeaseTTL > 0 {
		m.lease = &lease{nonce: randhex.String(6), owner: e.owner(), expires: now.Add(time.Duration(in.LeaseTTL) * time.Second)}
	}
	e.mu.Lock()
	e.machines[m.id] = m
	out := e.view(m)
	if m.lease != nil {
		out.LeaseNonce = m.lease.nonce
	}
	if !in.SkipLaunch {
		e.setState(m, stateStarting, nil)
	}
	e.mu.Unlock()
	if !in.SkipLaunch {
		e.launch(m, stateStarting)
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// unsupported names what a config asks for that the emulator cannot do.
func unsupported(c *fly.MachineConfig) string {
	switch {
	case c == nil || c.Image == "":
		return "config.image is required"
	case len(c.Mounts) > 0:
		return "flyemu: volume mounts are not emulated"
	case len(c.Files) > 0:
		return "flyemu: config.files are not emulated"
	case len(c.Containers) > 0:
		return "flyemu: multi-container machines are not emulated"
	}
	return ""
}

// normalizeConfig fills Fly's defaults: guest shared-cpu-1x (1 shared CPU,
// 256 MB).
func normalizeConfig(in *fly.MachineConfig) *fly.MachineConfig {
	c := *in
	g := fly.MachineGuest{CPUKind: "shared", CPUs: 1, MemoryMB: 256}
	if in.Guest != nil {
		g = *in.Guest
		g.CPUKind = cmp.Or(g.CPUKind, "shared")
		g.CPUs = cmp.Or(g.CPUs, 1)
		g.MemoryMB = cmp.Or(g.MemoryMB, 256*g.CPUs)
	}
	c.Guest = &g
	return &c
}

// instanceID makes a ULID-like instance id (26 upper-case characters).
func instanceID() string {
	return strings.ToUpper("01" + randhex.String(12))
}

// owner is the lease owner reported for the emulator's token.
func (e *Emulator) owner() string { return "emulated-token@tokens.fly.io" }

// get is GET .../machines/{id}.
func (e *Emulator) get(c *call) {
	e.mu.Lock()
	out := e.view(c.m)
	e.mu.Unlock()
	out.Checks = e.checkStatuses(c.r.Context(), out)
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// list is GET .../machines with Fly's filters: include_deleted, region,
// state (comma-separated) and metadata.<key>=<value> (flaps List passes
// them as its raw query).
func (e *Emulator) list(c *call) {
	q := c.r.URL.Query()
	includeDeleted, _ := strconv.ParseBool(q.Get("include_deleted"))
	var states []string
	if s := q.Get("state"); s != "" {
		states = strings.Split(s, ",")
	}
	e.mu.Lock()
	out := make([]*fly.Machine, 0)
	for _, m := range e.machines {
		if m.app == c.app && matches(m, q, includeDeleted, states) {
			out = append(out, e.view(m))
		}
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b *fly.Machine) int { return strings.Compare(a.CreatedAt+a.ID, b.CreatedAt+b.ID) })
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// matches tells whether m passes a list's filters. Callers hold e.mu.
func matches(m *machine, q map[string][]string, includeDeleted bool, states []string) bool {
	if m.state == stateDestroyed && !includeDeleted {
		return false
	}
	if r := firstOf(q["region"]); r != "" && r != m.region {
		return false
	}
	if len(states) > 0 && !slices.Contains(states, m.state) {
		return false
	}
	for k, vs := range q {
		if key, ok := strings.CutPrefix(k, "metadata."); ok && m.config.Metadata[key] != firstOf(vs) {
			return false
		}
	}
	return true
}

func firstOf(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// gone answers 404 for a destroyed machine and reports whether it did.
// Callers hold e.mu.
func gone(c *call) bool {
	if c.m.state == stateDestroyed || c.m.state == stateDestroying {
		writeError(c.w, http.StatusNotFound, "machine not found")
		return true
	}
	return false
}

// start is POST .../start: a stopped or created machine boots from its
// image, a suspended one resumes.
func (e *Emulator) start(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	prev := c.m.state
	switch prev {
	case stateStopped, stateCreated, stateFailed:
		e.setState(c.m, stateStarting, event("start", "starting", "user"))
		e.launch(c.m, stateStarting)
	case stateSuspended:
		e.setState(c.m, stateStarting, event("start", "resuming", "user"))
		e.resume(c.m)
	default:
		// Fly: "failed_precondition: machine still active, refusing to start".
		writeError(c.w, http.StatusPreconditionFailed, fmt.Sprintf("failed_precondition: unable to start machine from current state: '%s'", prev))
		return
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, fly.MachineStartResponse{PreviousState: prev})
}

// stop is POST .../stop with {signal, timeout}.
func (e *Emulator) stop(c *call) {
	var in fly.StopMachineInput
	if !decode(c, &in) {
		return
	}
	timeout := cmp.Or(in.Timeout.Duration, 5*time.Second)
	if c.m.config.StopConfig != nil && in.Timeout.Duration == 0 && c.m.config.StopConfig.Timeout != nil {
		timeout = c.m.config.StopConfig.Timeout.Duration
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	switch c.m.state {
	case stateStarted, stateStarting, stateSuspended, stateSuspending:
		e.setState(c.m, stateStopping, event("stop", "stopping", "user"))
		m := c.m
		e.async(m, func(ctx ctxT) {
			if err := e.stopContainer(ctx, m, in.Signal, timeout); err != nil {
				e.log.Warn("machine_stop_failed", zapMachine(m), zapErr(err))
			}
			e.finish(m, stateStopping, stateStopped, event("exit", "stopped", "flyd"))
		})
	case stateStopped, stateCreated, stateStopping:
		// Already stopped: nothing to do.
	default:
		writeError(c.w, http.StatusPreconditionFailed, fmt.Sprintf("failed_precondition: unable to stop machine from current state: '%s'", c.m.state))
		return
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, map[string]bool{"ok": true})
}

// suspend is POST .../suspend: `docker pause` keeps the processes and
// their memory, the local stand-in for Fly's memory snapshot.
func (e *Emulator) suspend(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	if c.m.state != stateStarted {
		writeError(c.w, http.StatusPreconditionFailed, fmt.Sprintf("failed_precondition: unable to suspend machine from current state: '%s'", c.m.state))
		return
	}
	e.setState(c.m, stateSuspending, event("suspend", "suspending", "user"))
	m := c.m
	e.async(m, func(ctx ctxT) {
		if err := e.pause(ctx, e.containerIDOf(m)); err != nil {
			e.log.Warn("machine_suspend_failed", zapMachine(m), zapErr(err))
			e.finish(m, stateSuspending, stateStarted, nil)
			return
		}
		e.finish(m, stateSuspending, stateSuspended, event("suspend", "suspended", "flyd"))
	})
	emuhttp.WriteJSON(c.w, http.StatusOK, map[string]bool{"ok": true})
}

// pause freezes a machine's container. The cgroup freezer gives up when
// a process does not stop in time (runc: "unable to freeze"), which a
// loaded host makes likely; like a snapshot that is simply taken again,
// the freeze is retried a few times before the suspend fails.
func (e *Emulator) pause(ctx ctxT, id string) error {
	var err error
	for range 5 {
		if err = e.cli.ContainerPause(ctx, id); err == nil || !strings.Contains(err.Error(), "freeze") {
			return err
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
	return err
}

// resume unpauses a suspended machine. Callers hold e.mu.
func (e *Emulator) resume(m *machine) {
	e.async(m, func(ctx ctxT) {
		if err := e.cli.ContainerUnpause(ctx, e.containerIDOf(m)); err != nil {
			e.log.Warn("machine_resume_failed", zapMachine(m), zapErr(err))
			e.finish(m, stateStarting, stateFailed, event("start", "failed", "flyd"))
			return
		}
		e.finish(m, stateStarting, stateStarted, event("start", "started", "flyd"))
	})
}

// destroy is DELETE .../{id}?kill=true|false (force is accepted too). A
// running machine needs kill; a destroyed machine is gone (404).
func (e *Emulator) destroy(c *call) {
	q := c.r.URL.Query()
	kill, _ := strconv.ParseBool(q.Get("kill"))
	force, _ := strconv.ParseBool(q.Get("force"))
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	switch c.m.state {
	case stateStopped, stateCreated, stateSuspended, stateFailed:
	default:
		if !kill && !force {
			writeError(c.w, http.StatusPreconditionFailed, fmt.Sprintf("failed_precondition: unable to destroy machine, not currently stopped or suspended (state: '%s'); use kill=true", c.m.state))
			return
		}
	}
	e.setState(c.m, stateDestroying, event("destroy", "destroying", "user"))
	m := c.m
	e.async(m, func(ctx ctxT) {
		if err := e.discardContainer(ctx, m); err != nil {
			e.log.Warn("machine_destroy_failed", zapMachine(m), zapErr(err))
		}
		e.finish(m, stateDestroying, stateDestroyed, event("destroy", "destroyed", "flyd"))
	})
	emuhttp.WriteJSON(c.w, http.StatusOK, map[string]bool{"ok": true})
}

// update is POST .../{id} (flaps Update): a new config and instance id;
// a running machine is restarted on a fresh container with it.
func (e *Emulator) update(c *call) {
	var in fly.LaunchMachineInput
	if !decode(c, &in) {
		return
	}
	if msg := unsupported(in.Config); msg != "" {
		writeError(c.w, http.StatusUnprocessableEntity, msg)
		return
	}
	ref, err := e.imageRef(c.r.Context(), in.Config.Image)
	if err != nil {
		writeError(c.w, http.StatusUnprocessableEntity, fmt.Sprintf("invalid image %q: could not resolve image: %v", in.Config.Image, err))
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	m := c.m
	m.config, m.imageRef, m.instanceID = normalizeConfig(in.Config), ref, instanceID()
	switch m.state {
	case stateStarted, stateStarting, stateSuspended, stateSuspending:
		e.setState(m, stateStarting, event("update", "updating", "user"))
		e.launch(m, stateStarting)
	default: // the next start makes a container with the new config
		e.setState(m, m.state, event("update", "updated", "user"))
		e.async(m, func(ctx ctxT) {
			if err := e.discardContainer(ctx, m); err != nil {
				e.log.Warn("machine_update_failed", zapMachine(m), zapErr(err))
			}
		})
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, e.view(m))
}

// waitStates are the states /wait accepts.
var waitStates = []string{stateStarted, stateStopped, stateSuspended, stateDestroyed}

// wait is GET .../wait?state=<s>[&state=<s2>]&timeout=<seconds>
// [&instance_id|version=<id>][&from_event_id=]: 200 once the machine is in
// one of the states, 408 when timeout (1-60 s, default 60) passes first.
func (e *Emulator) wait(c *call) {
	q := c.r.URL.Query()
	states := q["state"]
	if len(states) == 0 {
		states = []string{stateStarted}
	}
	for _, s := range states {
		if !slices.Contains(waitStates, s) {
			writeError(c.w, http.StatusBadRequest, fmt.Sprintf("invalid state %q: must be one of %s", s, strings.Join(waitStates, ", ")))
			return
		}
	}
	timeout := 60
	if t := q.Get("timeout"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil {
			writeError(c.w, http.StatusBadRequest, "invalid timeout: "+t)
			return
		}
		timeout = min(max(n, 1), 60)
	}
	deadline := time.NewTimer(time.Duration(timeout) * time.Second)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		st, ch := c.m.state, e.changed
		e.mu.Unlock()
		if slices.Contains(states, st) {
			emuhttp.WriteJSON(c.w, http.StatusOK, map[string]any{"ok": true, "state": st})
			return
		}
		if st == stateDestroyed {
			writeError(c.w, http.StatusNotFound, "machine not found")
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			writeError(c.w, http.StatusRequestTimeout, fmt.Sprintf("deadline_exceeded: machine did not reach state %s within %ds (state: %s)", strings.Join(states, ","), timeout, st))
			return
		case <-c.r.Context().Done():
			return
		case <-e.closed:
			writeError(c.w, http.StatusServiceUnavailable, "emulator closed")
			return
		}
	}
}

// leased guards a mutation: a machine under a lease accepts it only with
// the lease's nonce in the fly-machine-lease-nonce header.
func (e *Emulator) leased(h func(*call)) func(*call) {
	return func(c *call) {
		e.mu.Lock()
		l := c.m.lease
		e.mu.Unlock()
		if l.active(time.Now()) && c.r.Header.Get(flaps.NonceHeader) != l.nonce {
			writeError(c.w, http.StatusConflict, fmt.Sprintf("machine %s: lease currently held by %s, expires at %s", c.m.id, l.owner, l.expires.Format(time.RFC3339)))
			return
		}
		h(c)
	}
}

// leaseBody is fly.MachineLease for l.
func leaseBody(l *lease, version string) fly.MachineLease {
	return fly.MachineLease{Status: "success", Data: &fly.MachineLeaseData{
		Nonce: l.nonce, ExpiresAt: l.expires.Unix(), Owner: l.owner, Version: version}}
}

// findLease is GET .../lease: the active lease, or 404.
func (e *Emulator) findLease(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !c.m.lease.active(time.Now()) {
		writeError(c.w, http.StatusNotFound, "lease not found")
		return
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, leaseBody(c.m.lease, c.m.instanceID))
}

// postLease is POST .../lease?ttl=<seconds> (default 30): without a nonce
// header it acquires (409 while another lease is active), with one it
// refreshes the lease of that nonce.
func (e *Emulator) postLease(c *call) {
	ttl := 30
	if t := c.r.URL.Query().Get("ttl"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 1 {
			writeError(c.w, http.StatusBadRequest, "invalid ttl: "+t)
			return
		}
		ttl = n
	}
	nonce := c.r.Header.Get(flaps.NonceHeader)
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	l := c.m.lease
	switch {
	case l.active(now) && nonce != l.nonce:
		writeError(c.w, http.StatusConflict, fmt.Sprintf("lease currently held by %s, expires at %s", l.owner, l.expires.Format(time.RFC3339)))
		return
	case nonce != "" && !l.active(now):
		writeError(c.w, http.StatusConflict, "lease not found or expired for nonce "+nonce)
		return
	case nonce == "":
		l = &lease{nonce: randhex.String(6), owner: e.owner()}
		c.m.lease = l
	}
	l.expires = now.Add(time.Duration(ttl) * time.Second)
	emuhttp.WriteJSON(c.w, http.StatusOK, leaseBody(l, c.m.instanceID))
}

// releaseLease is DELETE .../lease with the nonce header; releasing a
// lease that is no longer there succeeds.
func (e *Emulator) releaseLease(c *call) {
	nonce := c.r.Header.Get(flaps.NonceHeader)
	e.mu.Lock()
	defer e.mu.Unlock()
	l := c.m.lease
	if l.active(time.Now()) && nonce != l.nonce {
		writeError(c.w, http.StatusConflict, "lease is held with another nonce")
		return
	}
	c.m.lease = nil
	emuhttp.WriteJSON(c.w, http.StatusOK, map[string]bool{"ok": true})
}

// getMetadata is GET .../metadata.
func (e *Emulator) getMetadata(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	for k, v := range c.m.config.Metadata {
		out[k] = v
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, out)
}

// setMetadata is POST .../metadata/{key} with {"value": ...}.
func (e *Emulator) setMetadata(c *call) {
	var in struct {
		Value string `json:"value"`
	}
	if !decode(c, &in) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	cfg := *c.m.config
	cfg.Metadata = map[string]string{}
	for k, v := range c.m.config.Metadata {
		cfg.Metadata[k] = v
	}
	cfg.Metadata[c.r.PathValue("key")] = in.Value
	c.m.config = &cfg
	c.w.WriteHeader(http.StatusNoContent)
}

// deleteMetadata is DELETE .../metadata/{key}.
func (e *Emulator) deleteMetadata(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gone(c) {
		return
	}
	cfg := *c.m.config
	cfg.Metadata = map[string]string{}
	for k, v := range c.m.config.Metadata {
		if k != c.r.PathValue("key") {
			cfg.Metadata[k] = v
		}
	}
	c.m.config = &cfg
	c.w.WriteHeader(http.StatusNoContent)
}

type ctxT = context.Context

func zapMachine(m *machine) zap.Field { return zap.String("machine", m.id) }

func zapErr(err error) zap.Field { return zap.Error(err) }
