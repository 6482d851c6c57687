package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/snapshot"
	"github.com/agcluster/caddy-agcluster/agent/workspace"
)

// snapshot answers GET /snapshot: the workspace and the state directory as
// one gzip-compressed tar (package snapshot), with its Content-Length: it
// is written to a temporary file first, so that a control plane can store
// it as it streams (Cloudflare's R2 takes a stream only of known length).
func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	f, err := os.CreateTemp("", "agcluster-snapshot-*.tar.gz")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "snapshot: "+err.Error())
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	dirs := snapshot.Dirs{Workspace: s.opts.Workspace, State: s.opts.StateDir}
	if err := snapshot.Write(r.Context(), f, dirs); err != nil {
		if !errors.Is(err, context.Canceled) {
			s.opts.Logger.Warn("snapshot failed", zap.Error(err))
		}
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "snapshot: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	if _, err := io.Copy(w, f); err != nil {
		s.opts.Logger.Debug("snapshot not delivered", zap.Error(err))
	}
}

// DefaultMaxSnapshotBytes caps the file content PUT /snapshot restores
// unless RestoreOptions.MaxBytes says otherwise.
const DefaultMaxSnapshotBytes int64 = 8 << 30

// StatusRestoring is the /health status of an agent waiting for its
// snapshot.
const StatusRestoring = "restoring"

// RestoreOptions configure a [RestoreGate].
type RestoreOptions struct {
	// Token is the bearer token PUT /snapshot requires.
	Token string
	// Workspace is the agent's workspace (required).
	Workspace *workspace.Workspace
	// StateDir is the agent's state directory (nil: none).
	StateDir *workspace.Workspace
	// MaxBytes caps the file content restored (default
	// DefaultMaxSnapshotBytes).
	MaxBytes int64
	// Logger receives the outcome; nil discards it.
	Logger *zap.Logger
	// OnRestored, if set, is called once the snapshot is restored, before
	// the restore is acknowledged and Done is closed (e.g. to hold requests
	// until the agent's API takes over).
	OnRestored func()
}

// RestoreGate is the agent's HTTP API while it waits for its disk
// (agent.EnvRestore), before it opens its state and starts the CLI: PUT
// /snapshot (bearer token) restores a snapshot made by GET /snapshot, or
// nothing with an empty body, and opens the gate; GET /health answers 503
// with status "restoring"; anything else 503 with code "restoring". A
// failed restore leaves the gate closed: the control plane may send the
// snapshot again, or an empty body to start with what is there. Every
// response carries [agent.HeaderServer].
type RestoreGate struct {
	opts RestoreOptions
	mux  *http.ServeMux
	done chan struct{}

	mu     sync.Mutex // one restore at a time
	opened bool
}

// NewRestoreGate builds the gate's routes.
func NewRestoreGate(opts RestoreOptions) (*RestoreGate, error) {
	if opts.Token == "" || opts.Workspace == nil {
		return nil, errors.New("restore gate: a token and a workspace are required")
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxSnapshotBytes
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	g := &RestoreGate{opts: opts, mux: http.NewServeMux(), done: make(chan struct{})}
	g.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusServiceUnavailable, agent.Health{Status: StatusRestoring})
	})
	g.mux.Handle("PUT /snapshot", requireToken([]byte(opts.Token), g.restore))
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusServiceUnavailable, StatusRestoring,
			fmt.Sprintf("the agent waits for its snapshot (PUT /snapshot) before %s %s", r.Method, r.URL.Path))
	})
	return g, nil
}

// ServeHTTP serves the gate's API.
func (g *RestoreGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(agent.HeaderServer, "1")
	g.mux.ServeHTTP(w, r)
}

// Done is closed once a snapshot (or nothing) is restored.
func (g *RestoreGate) Done() <-chan struct{} { return g.done }

// restore answers PUT /snapshot.
func (g *RestoreGate) restore(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.opened {
		writeError(w, http.StatusConflict, "restored", "the snapshot is restored already")
		return
	}
	dirs := snapshot.Dirs{Workspace: g.opts.Workspace, State: g.opts.StateDir}
	st, err := snapshot.Restore(r.Context(), r.Body, dirs, g.opts.MaxBytes)
	if err != nil {
		g.opts.Logger.Warn("snapshot not restored", zap.Int("entries", st.Entries), zap.Error(err))
		status, code := http.StatusBadRequest, "bad_snapshot"
		switch {
		case errors.Is(err, workspace.ErrTooLarge):
			status, code = http.StatusRequestEntityTooLarge, "too_large"
		case !errors.Is(err, snapshot.ErrFormat) && workspace.HTTPStatus(err) == http.StatusInternalServerError:
			status, code = http.StatusInternalServerError, "internal"
		}
		writeError(w, status, code, err.Error())
		return
	}
	g.opened = true
	if g.opts.OnRestored != nil {
		g.opts.OnRestored()
	}
	g.opts.Logger.Info("snapshot restored", zap.Int("entries", st.Entries), zap.Int64("bytes", st.Bytes), zap.Int("skipped", st.Skipped))
	writeJSON(w, http.StatusOK, map[string]any{"restored": st})
	close(g.done)
}
