package snapshot

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent/workspace"
)

// open opens dir as a workspace closed when the test ends.
func open(t *testing.T, dir string) *workspace.Workspace {
	t.Helper()
	ws, err := workspace.Open(dir)
	require.NoError(t, err)
	t.Cleanup(func() { ws.Close() })
	return ws
}

// files writes name -> content below dir.
func files(t *testing.T, dir string, fs map[string]string) {
	t.Helper()
	for name, content := range fs {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	}
}

// read returns the content of name below dir ("" when it is missing).
func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
	if os.IsNotExist(err) {
		return ""
	}
	require.NoError(t, err)
	return string(b)
}

// TestRoundTrip: a snapshot of a workspace and a state directory restores
// both into empty directories; without a state directory its entries are
// skipped.
func TestRoundTrip(t *testing.T) {
	srcWS, srcState := t.TempDir(), t.TempDir()
	files(t, srcWS, map[string]string{"notes.txt": "quince", "src/main.go": "package main"})
	files(t, srcState, map[string]string{"agent.json": `{"version":1}`, "claude/projects/p/s.jsonl": "{}\n"})
	var buf bytes.Buffer
	require.NoError(t, Write(context.Background(), &buf, Dirs{Workspace: open(t, srcWS), State: open(t, srcState)}))
	snap := buf.Bytes()

	t.Run("both directories", func(t *testing.T) {
		dstWS, dstState := t.TempDir(), t.TempDir()
		st, err := Restore(context.Background(), bytes.NewReader(snap), Dirs{Workspace: open(t, dstWS), State: open(t, dstState)}, -1)
		require.NoError(t, err)
		assert.Equal(t, "quince", read(t, dstWS, "notes.txt"))
		assert.Equal(t, "package main", read(t, dstWS, "src/main.go"))
		assert.Equal(t, `{"version":1}`, read(t, dstState, "agent.json"))
		assert.Equal(t, "{}\n", read(t, dstState, "claude/projects/p/s.jsonl"))
		assert.Equal(t, Stats{Entries: 8, Bytes: int64(len("quince") + len("package main") + len(`{"version":1}`) + len("{}\n"))}, st)
	})
	t.Run("no state directory", func(t *testing.T) {
		dstWS := t.TempDir()
		st, err := Restore(context.Background(), bytes.NewReader(snap), Dirs{Workspace: open(t, dstWS)}, -1)
		require.NoError(t, err)
		assert.Equal(t, "quince", read(t, dstWS, "notes.txt"))
		assert.Empty(t, read(t, dstWS, "agent.json"), "state entries do not land in the workspace")
		assert.Equal(t, 5, st.Skipped, "the state's entries are skipped")
	})
	t.Run("over the limit", func(t *testing.T) {
		_, err := Restore(context.Background(), bytes.NewReader(snap), Dirs{Workspace: open(t, t.TempDir()), State: open(t, t.TempDir())}, 10)
		assert.ErrorIs(t, err, workspace.ErrTooLarge)
	})
}

// TestRestoreRefuses: what is not a snapshot is refused; an empty body is
// an empty snapshot.
func TestRestoreRefuses(t *testing.T) {
	outside := tarGz(t, &tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644})
	escaping := tarGz(t, &tar.Header{Name: "workspace/../../evil", Typeflag: tar.TypeReg, Mode: 0o644})
	tests := []struct {
		name    string
		body    []byte
		wantErr error
	}{
		{name: "empty", body: nil},
		{name: "not gzip", body: []byte("plain text"), wantErr: ErrFormat},
		{name: "not tar", body: gz(t, []byte(strings.Repeat("x", 1024))), wantErr: ErrFormat},
		{name: "an entry outside the two directories", body: outside, wantErr: ErrFormat},
		{name: "an escaping entry", body: escaping, wantErr: workspace.ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := t.TempDir()
			st, err := Restore(context.Background(), bytes.NewReader(tt.body), Dirs{Workspace: open(t, ws)}, -1)
			if tt.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tt.wantErr)
			}
			assert.Zero(t, st.Entries)
			entries, err := os.ReadDir(ws)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing restored")
		})
	}
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func tarGz(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		require.NoError(t, tw.WriteHeader(h))
	}
	require.NoError(t, tw.Close())
	return gz(t, buf.Bytes())
}
