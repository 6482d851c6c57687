package claude

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent/statefile"
)

// TestSaveAndRestoreFiles: the files of a branch left behind are copied
// (an absent one recorded as absent) and put back as they were.
func TestSaveAndRestoreFiles(t *testing.T) {
	ws, saves := t.TempDir(), t.TempDir()
	r := &Runner{opts: Options{SavesDir: saves, Logger: zap.NewNop()},
		tree: newTree([]statefile.Turn{{ID: "t1", Session: "s"}}, "t1")}
	kept, gone := filepath.Join(ws, "sub", "kept.txt"), filepath.Join(ws, "gone.txt")
	require.NoError(t, os.MkdirAll(filepath.Dir(kept), 0o755))
	require.NoError(t, os.WriteFile(kept, []byte("after t1"), 0o640))

	r.saveFiles("t1", "", []string{kept, gone})
	saved := r.tree.get("t1").Saved
	require.NotNil(t, saved)
	assert.Equal(t, []statefile.SavedFile{{Path: kept, Copy: "0"}, {Path: gone}}, saved.Files)

	// The workspace moves on: kept.txt changes and goes, gone.txt appears.
	require.NoError(t, os.RemoveAll(filepath.Join(ws, "sub")))
	require.NoError(t, os.WriteFile(gone, []byte("other branch"), 0o644))

	assert.Empty(t, r.restoreFiles("t1", saved))
	b, err := os.ReadFile(kept)
	require.NoError(t, err)
	assert.Equal(t, "after t1", string(b))
	info, err := os.Stat(kept)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), info.Mode().Perm(), "with its mode")
	_, err = os.Stat(gone)
	assert.ErrorIs(t, err, os.ErrNotExist, "a file that did not exist is removed")

	require.NoError(t, os.Remove(filepath.Join(saves, "t1", "0")))
	assert.Equal(t, []string{kept}, r.restoreFiles("t1", saved), "a lost copy is reported")
}
