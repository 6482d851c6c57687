package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/snapshot"
	"github.com/agcluster/caddy-agcluster/agent/workspace"
)

// gateFixture is a restore gate on empty directories, served over HTTP.
type gateFixture struct {
	gate       *RestoreGate
	url        string
	ws, state  string
	token      string
	snapshotOf []byte // a snapshot of notes.txt and agent.json
}

func newGateFixture(t *testing.T) *gateFixture {
	t.Helper()
	f := &gateFixture{ws: t.TempDir(), state: t.TempDir(), token: "gate-token"}
	open := func(dir string) *workspace.Workspace {
		ws, err := workspace.Open(dir)
		require.NoError(t, err)
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	gate, err := NewRestoreGate(RestoreOptions{Token: f.token, Workspace: open(f.ws), StateDir: open(f.state)})
	require.NoError(t, err)
	f.gate = gate
	srv := httptest.NewServer(gate)
	t.Cleanup(srv.Close)
	f.url = srv.URL

	srcWS, srcState := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(srcWS, "notes.txt"), []byte("quince"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(srcState, "agent.json"), []byte(`{"version":1}`), 0o600))
	var buf bytes.Buffer
	require.NoError(t, snapshot.Write(context.Background(), &buf, snapshot.Dirs{Workspace: open(srcWS), State: open(srcState)}))
	f.snapshotOf = buf.Bytes()
	return f
}

// do sends a request with token (none when empty) and returns the status,
// the agent header and the body.
func (f *gateFixture) do(t *testing.T, method, path, token string, body []byte) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, bytes.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get(agent.HeaderServer), string(b)
}

// opened reports whether the gate opened.
func (f *gateFixture) opened() bool {
	select {
	case <-f.gate.Done():
		return true
	default:
		return false
	}
}

// TestRestoreGate: while the agent waits for its disk, /health says
// "restoring", the API answers 503, and only PUT /snapshot with the token
// restores it (or nothing, with an empty body) and opens the gate, once.
func TestRestoreGate(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		f := newGateFixture(t)
		status, hdr, body := f.do(t, http.MethodGet, "/health", "", nil)
		assert.Equal(t, http.StatusServiceUnavailable, status)
		assert.Equal(t, "1", hdr, "the agent's own answer")
		var h agent.Health
		require.NoError(t, json.Unmarshal([]byte(body), &h))
		assert.Equal(t, StatusRestoring, h.Status)

		status, hdr, body = f.do(t, http.MethodPost, "/query", f.token, []byte(`{"prompt":"hi"}`))
		assert.Equal(t, http.StatusServiceUnavailable, status)
		assert.Equal(t, "1", hdr)
		assert.Contains(t, body, `"code":"restoring"`)

		status, _, _ = f.do(t, http.MethodPut, "/snapshot", "", f.snapshotOf)
		assert.Equal(t, http.StatusUnauthorized, status, "no token")
		status, _, _ = f.do(t, http.MethodPut, "/snapshot", "wrong", f.snapshotOf)
		assert.Equal(t, http.StatusUnauthorized, status, "a wrong token")
		assert.False(t, f.opened())
		_, err := os.Stat(filepath.Join(f.ws, "notes.txt"))
		assert.ErrorIs(t, err, os.ErrNotExist, "nothing restored without the token")
	})
	t.Run("a snapshot", func(t *testing.T) {
		f := newGateFixture(t)
		status, _, body := f.do(t, http.MethodPut, "/snapshot", f.token, f.snapshotOf)
		require.Equal(t, http.StatusOK, status, body)
		assert.JSONEq(t, `{"restored":{"entries":2,"bytes":19,"skipped":0}}`, body)
		assert.True(t, f.opened())
		got, err := os.ReadFile(filepath.Join(f.ws, "notes.txt"))
		require.NoError(t, err)
		assert.Equal(t, "quince", string(got))
		got, err = os.ReadFile(filepath.Join(f.state, "agent.json"))
		require.NoError(t, err)
		assert.Equal(t, `{"version":1}`, string(got))

		status, _, body = f.do(t, http.MethodPut, "/snapshot", f.token, f.snapshotOf)
		assert.Equal(t, http.StatusConflict, status, "a second restore: %s", body)
	})
	t.Run("nothing", func(t *testing.T) {
		f := newGateFixture(t)
		status, _, body := f.do(t, http.MethodPut, "/snapshot", f.token, nil)
		require.Equal(t, http.StatusOK, status, body)
		assert.True(t, f.opened())
	})
	t.Run("a bad snapshot keeps the gate closed", func(t *testing.T) {
		f := newGateFixture(t)
		status, _, body := f.do(t, http.MethodPut, "/snapshot", f.token, []byte("not a snapshot"))
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Contains(t, body, `"code":"bad_snapshot"`)
		assert.False(t, f.opened())
		status, _, body = f.do(t, http.MethodPut, "/snapshot", f.token, f.snapshotOf)
		assert.Equal(t, http.StatusOK, status, "the control plane may try again: %s", body)
	})
}
