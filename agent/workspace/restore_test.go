package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// restoreAll restores every entry of tar stream r into ws, prefix
// stripped, and returns the first error.
func restoreAll(t *testing.T, ws *Workspace, r io.Reader, prefix string) error {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		require.NoError(t, err)
		if _, err := ws.Restore(strings.TrimPrefix(hdr.Name, prefix), hdr, tr, -1); err != nil {
			return err
		}
	}
}

// TestRestoreRoundTrip: what ArchiveTo writes, Restore puts back in an
// empty workspace: contents, modes, modification times, empty
// directories and symbolic links (as links, even those pointing outside).
func TestRestoreRoundTrip(t *testing.T) {
	fx := newFixture(t)
	_, err := fx.ws.Write("dir/deeper/data.bin", bytes.NewReader(bytes.Repeat([]byte{0, 1, 2}, 100000)), -1, false)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(filepath.Join(fx.dir, "sub", "file.txt"), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(fx.dir, "empty"), 0o750))
	old := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	require.NoError(t, os.Chtimes(filepath.Join(fx.dir, "sub", "file.txt"), old, old))

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	require.NoError(t, fx.ws.ArchiveTo(context.Background(), tw, "workspace/"))
	require.NoError(t, tw.Close())

	dst := t.TempDir()
	ws, err := Open(dst)
	require.NoError(t, err)
	defer ws.Close()
	require.NoError(t, restoreAll(t, ws, &buf, "workspace/"))

	want, err := fx.ws.Tree("", 0)
	require.NoError(t, err)
	got, err := ws.Tree("", 0)
	require.NoError(t, err)
	for i := range want {
		if want[i].Type != TypeFile { // children change a directory's; a link's is not kept
			want[i].ModTime, got[i].ModTime = time.Time{}, time.Time{}
		}
		want[i].ModTime = want[i].ModTime.Truncate(time.Second) // an archive keeps whole seconds
	}
	assert.Equal(t, want, got, "the restored tree")
	data, err := os.ReadFile(filepath.Join(dst, "sub", "file.txt"))
	require.NoError(t, err)
	assert.Equal(t, "hello", string(data))
	target, err := os.Readlink(filepath.Join(dst, "escape"))
	require.NoError(t, err)
	assert.Equal(t, fx.outside, target, "a link is restored as a link")
	assert.Equal(t, []string{"secret.txt"}, fx.outsideNames(t), "nothing written outside")
}

// TestRestoreHostile: entries that try to leave the workspace, replace a
// directory or exceed the limit are refused, and nothing is written
// outside; other entry types are skipped.
func TestRestoreHostile(t *testing.T) {
	tests := []struct {
		name    string
		entries []*tar.Header // restored in order; the last one is checked
		limit   int64
		wantErr error // nil: the last entry is restored (or skipped, see skipped)
		skipped bool
	}{
		{name: "dot dot", entries: []*tar.Header{reg("../evil", "x")}, wantErr: ErrInvalidPath},
		{name: "absolute", entries: []*tar.Header{reg("/etc/evil", "x")}, wantErr: ErrInvalidPath},
		{name: "through a link restored before", entries: []*tar.Header{link("out", "OUTSIDE"), reg("out/evil", "x")}, wantErr: ErrEscapes},
		{name: "through a relative link", entries: []*tar.Header{link("up", ".."), reg("up/outside/evil", "x")}, wantErr: ErrEscapes},
		{name: "a file over a directory", entries: []*tar.Header{dir("d"), reg("d", "x")}, wantErr: ErrIsDir},
		{name: "a file over a link replaces the link", entries: []*tar.Header{link("l", "OUTSIDE/secret.txt"), reg("l", "mine")}},
		{name: "a link over a file replaces the file", entries: []*tar.Header{reg("f", "x"), link("f", "elsewhere")}},
		{name: "too large", entries: []*tar.Header{reg("big", "0123456789")}, limit: 5, wantErr: ErrTooLarge},
		{name: "a link without target", entries: []*tar.Header{link("l", "")}, wantErr: ErrInvalidPath},
		{name: "a device is skipped", entries: []*tar.Header{{Name: "dev", Typeflag: tar.TypeChar, Mode: 0o666}}, skipped: true},
		{name: "a hard link is skipped", entries: []*tar.Header{reg("f", "x"), {Name: "h", Typeflag: tar.TypeLink, Linkname: "f"}}, skipped: true},
		{name: "setuid is dropped", entries: []*tar.Header{{Name: "s", Typeflag: tar.TypeReg, Mode: 0o4755}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t)
			limit := tt.limit
			if limit == 0 {
				limit = -1
			}
			var err error
			var done bool
			for _, h := range tt.entries {
				h := *h
				h.Linkname = strings.ReplaceAll(h.Linkname, "OUTSIDE", fx.outside)
				done, err = fx.ws.Restore(h.Name, &h, strings.NewReader(strings.Repeat("x", int(h.Size))), limit)
				if err != nil {
					break
				}
			}
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
				assert.Equal(t, !tt.skipped, done, "restored")
			}
			assert.Equal(t, []string{"secret.txt"}, fx.outsideNames(t), "nothing written outside")
			kept, err := os.ReadFile(filepath.Join(fx.outside, "secret.txt"))
			require.NoError(t, err)
			assert.Equal(t, secret, string(kept), "the outside file is untouched")
			last := tt.entries[len(tt.entries)-1]
			if tt.wantErr == nil && !tt.skipped {
				fi, err := os.Lstat(filepath.Join(fx.dir, last.Name))
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(last.Mode)&os.ModePerm, fi.Mode()&os.ModePerm|fi.Mode()&os.ModeSetuid, "mode (no setuid)")
			}
		})
	}
}

func reg(name, content string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}
}

func link(name, target string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}
}

func dir(name string) *tar.Header {
	return &tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755}
}
