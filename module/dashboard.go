package module

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/session"
	"github.com/agcluster/caddy-agcluster/usage"
)

// dashboardPage is the operator dashboard: one self-contained page (plain
// JavaScript, inline CSS and SVG; nothing loaded from elsewhere).
//
//go:embed dashboard.html
var dashboardPage string

// dashboardHeader must be on the dashboard's mutating requests. A browser
// sends a custom header cross-origin only after a CORS preflight, which
// the dashboard never grants, so a page elsewhere cannot forge the
// actions (CSRF); the Origin check below is a second guard.
const dashboardHeader = "X-Agcluster-Dashboard"

// Dashboard refresh periods: the cheap part of the snapshot (sessions and
// their states) is looked at every second, the agents' CPU and memory,
// the providers' health, the warm pool and the usage every five. An
// update is sent only when something changed.
const (
	dashboardTick  = time.Second
	dashboardSlow  = 5
	dashboardStats = 2 * time.Second // the longest wait for one agent's figures
	// dashboardLookTimeout bounds one look at the slow figures.
	dashboardLookTimeout = 10 * time.Second
	// dashboardStreamLife ends an event stream after this long; the page's
	// EventSource reconnects at once. An open page never holds up a
	// reload's or shutdown's graceful end of the old server for longer.
	dashboardStreamLife = time.Minute
)

// dashboardHandles tells whether the request is the dashboard's.
func (h *Handler) dashboardHandles(p string) bool {
	return h.Dashboard != "" && (p == h.Dashboard || strings.HasPrefix(p, strings.TrimSuffix(h.Dashboard, "/")+"/"))
}

// serveDashboard serves the page, its event stream and its actions.
func (h *Handler) serveDashboard(w http.ResponseWriter, r *http.Request) {
	base := strings.TrimSuffix(h.Dashboard, "/")
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, base), "/")
	switch {
	case rest == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(strings.Replace(dashboardPage, "{{BASE}}", html.EscapeString(base), 1)))
	case rest == "events" && r.Method == http.MethodGet:
		h.dashboardEvents(w, r)
	case rest == "snapshot" && r.Method == http.MethodGet:
		agentsapi.WriteJSON(w, http.StatusOK, h.dashboardSnapshot(h.dash.take(dashLookAge, h.dashboardFigures)))
	case strings.HasPrefix(rest, "sessions/") && r.Method == http.MethodPost:
		h.dashboardAction(w, r, strings.TrimPrefix(rest, "sessions/"))
	default:
		e := openai.BadRequest(fmt.Sprintf("no such dashboard endpoint: %s %s", r.Method, r.URL.Path), "")
		e.Status = http.StatusNotFound
		e.Write(w)
	}
}

// sameOrigin tells whether a mutating request comes from the dashboard
// itself: it carries the custom header and, when the browser says where it
// comes from, that is this host.
func sameOrigin(r *http.Request) bool {
	if r.Header.Get(dashboardHeader) == "" {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// dashboardAction runs "stop" (remove the session and its agent) or
// "interrupt" (end its running turn) on a session: {id}/{action}.
func (h *Handler) dashboardAction(w http.ResponseWriter, r *http.Request, rest string) {
	if !sameOrigin(r) {
		e := openai.BadRequest("dashboard actions must come from the dashboard page (same origin, "+dashboardHeader+" header)", "")
		e.Status = http.StatusForbidden
		e.Write(w)
		return
	}
	id, action, _ := strings.Cut(rest, "/")
	h.app.Manager().Sync(r.Context())
	s := findSession(h.app.Manager(), id)
	if s == nil {
		e := openai.BadRequest(fmt.Sprintf("no session %q", id), "")
		e.Status = http.StatusNotFound
		e.Write(w)
		return
	}
	switch action {
	case "stop":
		if err := h.app.Manager().Delete(s.Key.Owner, s.ID); err != nil {
			h.acquireError(r, err).Write(w)
			return
		}
		h.logger.Info("session stopped from the dashboard", zap.String("session_id", s.ID))
		agentsapi.WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "stopped": true})
	case "interrupt":
		ok := false
		if !s.Asleep() {
			var err error
			if ok, err = s.Client().Interrupt(r.Context()); err != nil {
				h.queryError(r, err).Write(w)
				return
			}
		}
		agentsapi.WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "interrupted": ok})
	default:
		e := openai.BadRequest(fmt.Sprintf("unknown action %q: want stop or interrupt", action), "")
		e.Status = http.StatusNotFound
		e.Write(w)
	}
}

// findSession finds any owner's session by id.
func findSession(m *session.Manager, id string) *session.Session {
	for _, s := range m.List("") {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// dashSession is one conversation as the dashboard shows it.
type dashSession struct {
	// ID is the session id.
	ID string `json:"id"`
	// Owner is the owner hash's first 12 characters.
	Owner string `json:"owner"`
	// Config is the configuration id.
	Config string `json:"config"`
	// Provider names the provider that runs its agent.
	Provider string `json:"provider"`
	// Status is running, busy (a turn runs) or sleeping.
	Status string `json:"status"`
	// Turns counts its finished turns.
	Turns int64 `json:"turns"`
	// Created is when the session started.
	Created time.Time `json:"created"`
	// LastUsed is when its last turn ended; the page counts idle time from it.
	LastUsed time.Time `json:"last_used"`
	// CPUPercent and MemoryBytes are the agent's own figures (its
	// container's cgroup when readable, else its processes'); nil when
	// asleep or not reachable.
	CPUPercent  *float64 `json:"cpu_percent"`
	MemoryBytes *int64   `json:"memory_bytes"`
}

// dashSnapshot is what the dashboard shows.
type dashSnapshot struct {
	// Sessions are every owner's conversations, oldest first.
	Sessions []dashSession `json:"sessions"`
	// Providers are the providers in use and their health.
	Providers []providerStatus `json:"providers"`
	// Pool is the warm pool per configuration.
	Pool []session.PoolStats `json:"pool"`
	// ByDay is the usage of the last 14 days, by UTC day.
	ByDay []usage.Row `json:"usage_by_day"`
	// ByConfig is the usage of the last 14 days, by configuration.
	ByConfig []usage.Row `json:"usage_by_config"`
}

// dashFigures are the dashboard's slow figures, gathered in one look that
// every open page shares.
type dashFigures struct {
	sessions  []dashSession // the awake agents' CPU and memory, by session id
	providers []providerStatus
	pool      []session.PoolStats
	byDay     []usage.Row
	byConfig  []usage.Row
}

// dashLook shares the slow figures between the dashboard's open pages: a
// look younger than maxAge is reused, and pages that ask while one is
// being taken wait for it rather than asking every agent again.
type dashLook struct {
	mu   sync.Mutex
	at   time.Time
	figs dashFigures
}

// dashLookAge is how long a look serves: a page asks every five ticks, so
// each of its asks finds a look taken since its previous one.
const dashLookAge = dashboardSlow*dashboardTick - dashboardTick/2

// take returns the current look, taking a new one with fresh when the last
// is older than maxAge.
func (l *dashLook) take(maxAge time.Duration, fresh func() dashFigures) dashFigures {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.at.IsZero() || time.Since(l.at) >= maxAge {
		l.figs, l.at = fresh(), time.Now()
	}
	return l.figs
}

// dashboardFigures takes a look at the slow figures: the sessions other
// gateways serve, every awake agent's CPU and memory, the providers'
// health, the warm pool and the last 14 days' usage. It runs for every
// open page at once, so no page's context bounds it.
func (h *Handler) dashboardFigures() dashFigures {
	ctx, cancel := context.WithTimeout(context.Background(), dashboardLookTimeout)
	defer cancel()
	m := h.app.Manager()
	m.Sync(ctx)
	figs := dashFigures{sessions: agentFigures(ctx, m.List("")), providers: h.app.state.status(ctx), pool: h.app.Pool().Stats()}
	if meter := h.app.metered(); meter != nil {
		f, _ := usage.ParseRange("", "", 14, meter.Time())
		var err error
		if figs.byDay, err = meter.Store.Group(f, usage.ByDay); err == nil {
			figs.byConfig, err = meter.Store.Group(f, usage.ByConfig)
		}
		if err != nil {
			h.logger.Warn("dashboard usage could not be read", zap.Error(err))
		}
	}
	return figs
}

// dashboardSnapshot is what the dashboard shows now: every session as it
// stands, with figs (the last look's slow figures).
func (h *Handler) dashboardSnapshot(figs dashFigures) dashSnapshot {
	list := h.app.Manager().List("")
	slices.SortFunc(list, func(a, b *session.Session) int { return a.Created.Compare(b.Created) })
	snap := dashSnapshot{Sessions: make([]dashSession, len(list)), Providers: figs.providers, Pool: figs.pool,
		ByDay: figs.byDay, ByConfig: figs.byConfig}
	for i, s := range list {
		snap.Sessions[i] = dashSession{ID: s.ID, Owner: ownerPrefix(s.Key.Owner), Config: s.ConfigID, Provider: s.Provider,
			Status: s.Status(), Turns: s.Turns(), Created: s.Created, LastUsed: s.LastUsed()}
	}
	keepFigures(snap.Sessions, figs.sessions)
	return snap
}

// agentFigures asks every awake agent of list for its CPU and memory, at
// once, and returns them by session id (an agent that did not answer has
// none).
func agentFigures(ctx context.Context, list []*session.Session) []dashSession {
	out := make([]dashSession, len(list))
	var wg sync.WaitGroup
	for i, s := range list {
		out[i].ID = s.ID
		if s.Asleep() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, dashboardStats)
			defer cancel()
			st, err := s.Client().Stats(sctx)
			if err != nil {
				return
			}
			mem := st.Agent.RSSBytes + st.Claude.RSSBytes
			if st.Cgroup != nil {
				mem = st.Cgroup.MemoryBytes
			}
			cpu := st.CPUPercent
			out[i].CPUPercent, out[i].MemoryBytes = &cpu, &mem
		}()
	}
	wg.Wait()
	return out
}

// dashboardEvents streams snapshots as SSE ("event: snapshot"), each only
// when it differs from the last one sent.
func (h *Handler) dashboardEvents(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	ctx, cancel := context.WithTimeout(r.Context(), dashboardStreamLife)
	defer cancel()
	if _, err := fmt.Fprint(w, "retry: 500\n\n"); err != nil {
		return
	}
	var figs dashFigures
	var sent []byte
	quiet := 0
	tick := time.NewTicker(dashboardTick)
	defer tick.Stop()
	for n := 0; ; n++ {
		if n%dashboardSlow == 0 {
			figs = h.dash.take(dashLookAge, h.dashboardFigures)
		}
		b, err := json.Marshal(h.dashboardSnapshot(figs))
		if err != nil {
			return
		}
		var werr error
		quiet++
		switch {
		case !bytes.Equal(b, sent):
			_, werr = fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b)
			sent, quiet = b, 0
		case quiet >= 15: // nothing changed for a while: keep proxies from closing the stream
			_, werr = fmt.Fprint(w, ": keep-alive\n\n")
			quiet = 0
		}
		if werr != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if caddy.Exiting() { // Caddy waits for open requests before it exits
			return
		}
	}
}

// keepFigures gives the awake sessions the CPU and memory figures last
// has for them.
func keepFigures(sessions, last []dashSession) {
	byID := make(map[string]*dashSession, len(last))
	for i := range last {
		byID[last[i].ID] = &last[i]
	}
	for i := range sessions {
		if sessions[i].Status == session.StatusSleeping {
			continue // asleep: no figures
		}
		if d, ok := byID[sessions[i].ID]; ok {
			sessions[i].CPUPercent, sessions[i].MemoryBytes = d.CPUPercent, d.MemoryBytes
		}
	}
}
