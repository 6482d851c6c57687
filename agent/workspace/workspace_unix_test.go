//go:build unix

package workspace

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "plain"), []byte("plain"), 0o644))
	ws, err := Open(dir)
	require.NoError(t, err)
	defer ws.Close()

	_, _, err = ws.OpenFile("fifo")
	assert.ErrorIs(t, err, ErrNotRegular)
	_, err = ws.Write("fifo", strings.NewReader("x"), 10, true)
	assert.ErrorIs(t, err, ErrNotRegular)

	entries, err := ws.Tree("", 0)
	require.NoError(t, err)
	require.Len(t, entries, 2)
	assert.Equal(t, "other", entries[0].Type)

	var buf bytes.Buffer
	require.NoError(t, ws.Archive(context.Background(), "", &buf), "FIFOs are skipped, not read")
	headers := untar(t, &buf, t.TempDir())
	assert.NotContains(t, headers, "fifo")
	assert.Contains(t, headers, "plain")
}
