package module

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/agcluster/caddy-agcluster/agentsapi"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI adds /agcluster/ routes to Caddy's admin endpoint:
// GET /agcluster/sessions lists every live session (no secrets),
// DELETE /agcluster/sessions/{id} removes one with its container, and
// GET /agcluster/pool shows the warm pool per configuration,
// GET /agcluster/usage every owner's usage (see usage.go) and
// GET /agcluster/providers the providers and their health.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.agcluster",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes. State is looked up per request: admin
// modules are recreated on every config load.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/agcluster/sessions", Handler: caddy.AdminHandlerFunc(adminSessions)},
		{Pattern: "/agcluster/sessions/", Handler: caddy.AdminHandlerFunc(adminSessions)},
		{Pattern: "/agcluster/pool", Handler: caddy.AdminHandlerFunc(adminPool)},
		{Pattern: "/agcluster/usage", Handler: caddy.AdminHandlerFunc(adminUsage)},
		{Pattern: "/agcluster/providers", Handler: caddy.AdminHandlerFunc(adminProviders)}}
}

func adminPool(w http.ResponseWriter, r *http.Request) error {
	st := currentState()
	if st == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("the agcluster app is not running")}
	}
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use GET /agcluster/pool")}
	}
	agentsapi.WriteJSON(w, http.StatusOK, st.pool.Stats())
	return nil
}

// adminSession is one session as the admin API shows it.
type adminSession struct {
	ID           string    `json:"id"`
	Owner        string    `json:"owner"`
	Conversation string    `json:"conversation"`
	ConfigID     string    `json:"config_id"`
	Provider     string    `json:"provider"`
	InstanceID   string    `json:"instance_id"`
	Created      time.Time `json:"created"`
	LastUsed     time.Time `json:"last_used"`
	Turns        int64     `json:"turns"`
	Busy         bool      `json:"busy"`
	Status       string    `json:"status"`
}

func currentState() *state {
	var st *state
	statePool.Range(func(_, v any) bool {
		st = v.(*state)
		return false
	})
	return st
}

func adminSessions(w http.ResponseWriter, r *http.Request) error {
	st := currentState()
	if st == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("the agcluster app is not running")}
	}
	m := st.manager
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/agcluster/sessions"), "/")
	switch {
	case r.Method == http.MethodGet && id == "":
		m.Sync(r.Context())
		out := []adminSession{}
		for _, s := range m.List("") {
			out = append(out, adminSession{
				ID: s.ID, Owner: ownerPrefix(s.Key.Owner), Conversation: s.Key.Conversation,
				ConfigID: s.ConfigID, Provider: s.Provider, InstanceID: s.Instance().ID,
				Created: s.Created, LastUsed: s.LastUsed(), Turns: s.Turns(), Busy: s.Busy(), Status: s.Status(),
			})
		}
		agentsapi.WriteJSON(w, http.StatusOK, out)
		return nil
	case r.Method == http.MethodDelete && id != "":
		m.Sync(r.Context())
		s := findSession(m, id)
		if s == nil {
			return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no session %q", id)}
		}
		if err := m.Delete(s.Key.Owner, id); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use GET /agcluster/sessions or DELETE /agcluster/sessions/{id}")}
}

// Interface guard.
var _ caddy.AdminRouter = (*AdminAPI)(nil)
