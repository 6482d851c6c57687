package workspace

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const secret = "TOP-SECRET-9f3a1c7e-do-not-leak"

// fixture is a workspace next to an "outside" directory holding a secret.
type fixture struct {
	base    string // parent of ws and outside
	dir     string // the workspace directory
	outside string // a directory outside the workspace
	ws      *Workspace
}

// newFixture builds:
//
//	outside/secret.txt
//	ws/sub/file.txt        "hello"
//	ws/escape   -> <abs outside>
//	ws/updir    -> ../outside
//	ws/link.txt -> ../outside/secret.txt
//	ws/abslink  -> <abs outside>/secret.txt
//	ws/inner    -> sub
//	ws/inlink.txt -> sub/file.txt
func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	fx := &fixture{base: base, dir: filepath.Join(base, "ws"), outside: filepath.Join(base, "outside")}
	require.NoError(t, os.MkdirAll(filepath.Join(fx.dir, "sub"), 0o755))
	require.NoError(t, os.MkdirAll(fx.outside, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(fx.outside, "secret.txt"), []byte(secret), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(fx.dir, "sub", "file.txt"), []byte("hello"), 0o644))
	for link, target := range map[string]string{
		"escape":     fx.outside,
		"updir":      "../outside",
		"link.txt":   "../outside/secret.txt",
		"abslink":    filepath.Join(fx.outside, "secret.txt"),
		"inner":      "sub",
		"inlink.txt": "sub/file.txt",
	} {
		require.NoError(t, os.Symlink(target, filepath.Join(fx.dir, link)))
	}
	ws, err := Open(fx.dir)
	require.NoError(t, err)
	t.Cleanup(func() { ws.Close() })
	fx.ws = ws
	return fx
}

// outsideNames lists the outside directory.
func (fx *fixture) outsideNames(t *testing.T) []string {
	t.Helper()
	des, err := os.ReadDir(fx.outside)
	require.NoError(t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	ws, err := Open(dir)
	require.NoError(t, err)
	assert.Equal(t, dir, ws.Dir())
	require.NoError(t, ws.Close())

	_, err = Open(filepath.Join(dir, "missing"))
	assert.ErrorIs(t, err, fs.ErrNotExist)

	file := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err = Open(file)
	assert.ErrorIs(t, err, ErrNotDir)
}

func TestOpenFile(t *testing.T) {
	fx := newFixture(t)
	if _, err := os.Stat("/etc/passwd"); err == nil {
		require.NoError(t, os.Symlink("/etc", filepath.Join(fx.dir, "etc")))
	}
	tests := []struct {
		path    string
		want    string // content on success
		wantErr error
	}{
		{"sub/file.txt", "hello", nil},
		{"./sub//file.txt", "hello", nil},
		{"inner/file.txt", "hello", nil}, // intermediate symlink inside the workspace
		{"escape/secret.txt", "", ErrEscapes},
		{"updir/secret.txt", "", ErrEscapes},
		{"etc/passwd", "", ErrEscapes},
		{"link.txt", "", ErrSymlink},
		{"abslink", "", ErrSymlink},
		{"inlink.txt", "", ErrSymlink},
		{"inner", "", ErrSymlink},
		{"escape", "", ErrSymlink},
		{"sub", "", ErrIsDir},
		{"missing.txt", "", ErrNotFound},
		{"missing/x.txt", "", ErrNotFound},
		{"sub/file.txt/x", "", ErrNotFound},
		{"../outside/secret.txt", "", ErrInvalidPath},
		{"sub/../../outside/secret.txt", "", ErrInvalidPath},
		{fx.outside + "/secret.txt", "", ErrInvalidPath},
		{"", "", ErrInvalidPath},
		{".", "", ErrInvalidPath},
		{"sub\x00/file.txt", "", ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			f, fi, err := fx.ws.OpenFile(tt.path)
			if tt.wantErr != nil {
				require.Error(t, err)
				assert.ErrorIs(t, err, tt.wantErr)
				assert.Nil(t, f)
				assert.NotContains(t, err.Error(), fx.dir, "message must not contain the host path")
				if tt.path != fx.outside+"/secret.txt" {
					assert.NotContains(t, err.Error(), fx.base)
				}
				return
			}
			require.NoError(t, err)
			defer f.Close()
			assert.Equal(t, int64(len(tt.want)), fi.Size())
			got, err := io.ReadAll(f)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}

	_, _, err := fx.ws.OpenFile("missing.txt")
	assert.ErrorIs(t, err, fs.ErrNotExist, "ErrNotFound wraps fs.ErrNotExist")
	assert.Equal(t, `workspace: "missing.txt": not found`, err.Error())
}

func TestWriteSymlinks(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		path    string
		wantErr error
	}{
		{"escape/new.txt", ErrEscapes},
		{"escape/deep/new.txt", ErrEscapes},
		{"updir/new.txt", ErrEscapes},
		{"updir/deep/er/new.txt", ErrEscapes},
		{"escape/secret.txt", ErrEscapes},
		{"link.txt", ErrSymlink},
		{"abslink", ErrSymlink},
		{"inlink.txt", ErrSymlink},
		{"inner", ErrSymlink},
		{"sub", ErrIsDir},
		{"sub/file.txt/x", ErrExists},
		{"../outside/new.txt", ErrInvalidPath},
		{fx.outside + "/new.txt", ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			n, err := fx.ws.Write(tt.path, strings.NewReader("pwned"), 1024, true)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.wantErr)
			assert.Zero(t, n)
			if !strings.HasPrefix(tt.path, "/") {
				assert.NotContains(t, err.Error(), fx.base)
			}
			assert.Equal(t, []string{"secret.txt"}, fx.outsideNames(t), "nothing created outside")
			got, err := os.ReadFile(filepath.Join(fx.outside, "secret.txt"))
			require.NoError(t, err)
			assert.Equal(t, secret, string(got))
		})
	}
	// Symlinks themselves are untouched.
	target, err := os.Readlink(filepath.Join(fx.dir, "link.txt"))
	require.NoError(t, err)
	assert.Equal(t, "../outside/secret.txt", target)

	// Writing through an intermediate symlink that stays inside is fine.
	n, err := fx.ws.Write("inner/new.txt", strings.NewReader("ok"), 1024, false)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	got, err := os.ReadFile(filepath.Join(fx.dir, "sub", "new.txt"))
	require.NoError(t, err)
	assert.Equal(t, "ok", string(got))
}

// tempFiles returns the Write temporary files anywhere in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			found = append(found, p)
		}
		return nil
	}))
	return found
}

func TestWrite(t *testing.T) {
	const limit = 10
	tests := []struct {
		name      string
		existing  string // content of p before the write; "" means absent
		path      string
		content   string
		overwrite bool
		wantErr   error
		wantFile  string // content after the call
	}{
		{"new file", "", "a.txt", "hello", false, nil, "hello"},
		{"creates parents", "", "x/y/z/a.txt", "deep", false, nil, "deep"},
		{"empty file", "", "empty", "", false, nil, ""},
		{"exact limit", "", "a.txt", strings.Repeat("x", limit), false, nil, strings.Repeat("x", limit)},
		{"limit plus one", "", "a.txt", strings.Repeat("x", limit+1), false, ErrTooLarge, ""},
		{"too large keeps old", "old", "a.txt", strings.Repeat("x", limit+5), true, ErrTooLarge, "old"},
		{"exists", "old", "a.txt", "new", false, ErrExists, "old"},
		{"overwrite", "old content", "a.txt", "new", true, nil, "new"},
		{"unclean path", "", "./d//a.txt", "c", false, nil, "c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ws, err := Open(dir)
			require.NoError(t, err)
			defer ws.Close()
			name, err := CleanPath(tt.path)
			require.NoError(t, err)
			host := filepath.Join(dir, filepath.FromSlash(name))
			if tt.existing != "" {
				require.NoError(t, os.WriteFile(host, []byte(tt.existing), 0o600))
			}

			n, err := ws.Write(tt.path, strings.NewReader(tt.content), limit, tt.overwrite)
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
				assert.Zero(t, n)
			} else {
				require.NoError(t, err)
				assert.Equal(t, int64(len(tt.content)), n)
			}
			got, err := os.ReadFile(host)
			if tt.wantFile == "" && tt.existing == "" && tt.wantErr != nil {
				assert.ErrorIs(t, err, fs.ErrNotExist, "nothing written on error")
			} else {
				require.NoError(t, err)
				assert.Equal(t, tt.wantFile, string(got))
			}
			if tt.wantErr == nil {
				fi, err := os.Stat(host)
				require.NoError(t, err)
				assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())
			}
			assert.Empty(t, tempFiles(t, dir), "no temporary files left")
		})
	}
}

func TestWriteMessages(t *testing.T) {
	ws, err := Open(t.TempDir())
	require.NoError(t, err)
	defer ws.Close()
	_, err = ws.Write("big.bin", strings.NewReader("12345"), 4, false)
	assert.Equal(t, `workspace: "big.bin": content is larger than the limit of 4 bytes: too large`, err.Error())
	_, err = ws.Write("f", strings.NewReader("1"), -1, false)
	require.NoError(t, err)
	_, err = ws.Write("f", strings.NewReader("2"), -1, false)
	assert.Equal(t, `workspace: "f": file exists and overwrite was not requested: already exists`, err.Error())
	assert.ErrorIs(t, err, fs.ErrExist)
}

func TestWriteReaderError(t *testing.T) {
	dir := t.TempDir()
	ws, err := Open(dir)
	require.NoError(t, err)
	defer ws.Close()
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("partial"), iotestErrReader{boom})
	_, err = ws.Write("a.txt", r, 100, true)
	assert.ErrorIs(t, err, boom)
	_, err = os.Stat(filepath.Join(dir, "a.txt"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Empty(t, tempFiles(t, dir))
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func TestTree(t *testing.T) {
	dir := t.TempDir()
	ws, err := Open(dir)
	require.NoError(t, err)
	defer ws.Close()
	for p, content := range map[string]string{
		"b.txt":       "bb",
		"a/x.txt":     "x",
		"a-c":         "dash",
		"a/sub/y.txt": "yyyy",
		"z/empty":     "",
	} {
		_, err := ws.Write(p, strings.NewReader(content), -1, false)
		require.NoError(t, err)
	}
	require.NoError(t, os.Symlink("../../etc", filepath.Join(dir, "a", "up")))
	require.NoError(t, os.Symlink("sub", filepath.Join(dir, "a", "same")))

	entries, err := ws.Tree("", 0)
	require.NoError(t, err)
	type row struct{ Path, Type, Target string }
	var got []row
	for _, e := range entries {
		got = append(got, row{e.Path, e.Type, e.Target})
	}
	assert.Equal(t, []row{
		{"a", "dir", ""},
		{"a/same", "symlink", "sub"},
		{"a/sub", "dir", ""},
		{"a/sub/y.txt", "file", ""},
		{"a/up", "symlink", "../../etc"},
		{"a/x.txt", "file", ""},
		{"a-c", "file", ""},
		{"b.txt", "file", ""},
		{"z", "dir", ""},
		{"z/empty", "file", ""},
	}, got, "depth-first, sorted, symlinks not followed")

	byPath := map[string]Entry{}
	for _, e := range entries {
		byPath[e.Path] = e
	}
	assert.Equal(t, int64(4), byPath["a/sub/y.txt"].Size)
	assert.Equal(t, int64(2), byPath["b.txt"].Size)
	assert.Equal(t, int64(0), byPath["z/empty"].Size)
	assert.Equal(t, int64(0), byPath["a"].Size, "size is for files only")
	assert.Equal(t, "-rw-r--r--", byPath["b.txt"].Mode)
	assert.True(t, strings.HasPrefix(byPath["a"].Mode, "d"))
	assert.True(t, strings.HasPrefix(byPath["a/up"].Mode, "L"))
	assert.WithinDuration(t, time.Now(), byPath["b.txt"].ModTime, time.Minute)

	// Sub-directory.
	entries, err = ws.Tree("a/sub", 0)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	assert.Equal(t, "a/sub/y.txt", entries[0].Path)

	// Truncation.
	entries, err = ws.Tree("", 3)
	assert.ErrorIs(t, err, ErrTooMany)
	assert.Len(t, entries, 3)
	assert.Equal(t, "a/sub", entries[2].Path)
	entries, err = ws.Tree("", 10)
	assert.NoError(t, err, "exactly maxEntries is not truncated")
	assert.Len(t, entries, 10)

	// Bad sub-directories.
	for sub, want := range map[string]error{
		"a/same":  ErrSymlink,
		"a/up":    ErrSymlink,
		"b.txt":   ErrNotDir,
		"missing": ErrNotFound,
		"../x":    ErrInvalidPath,
		"/":       ErrInvalidPath,
	} {
		_, err := ws.Tree(sub, 0)
		assert.ErrorIs(t, err, want, sub)
	}
}

func TestTreeSymlinkFixture(t *testing.T) {
	fx := newFixture(t)
	entries, err := fx.ws.Tree("", 0)
	require.NoError(t, err)
	got := map[string]Entry{}
	for _, e := range entries {
		got[e.Path] = e
		assert.NotContains(t, e.Path, "secret", "does not descend into symlinks")
	}
	assert.Len(t, entries, 8)
	assert.Equal(t, Entry{Path: "link.txt", Type: "symlink", Target: "../outside/secret.txt"},
		Entry{Path: got["link.txt"].Path, Type: got["link.txt"].Type, Target: got["link.txt"].Target})
	assert.Equal(t, "symlink", got["escape"].Type)
	assert.Equal(t, fx.outside, got["escape"].Target)
	assert.Equal(t, "symlink", got["inner"].Type)

	_, err = fx.ws.Tree("escape", 0)
	assert.ErrorIs(t, err, ErrSymlink)
	_, err = fx.ws.Tree("updir/", 0)
	assert.ErrorIs(t, err, ErrSymlink)
}

// untar extracts a tar.gz into dir, checking that names are relative, and
// returns the headers by name.
func untar(t *testing.T, r io.Reader, dir string) map[string]*tar.Header {
	t.Helper()
	gz, err := gzip.NewReader(r)
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	root, err := os.OpenRoot(dir)
	require.NoError(t, err)
	defer root.Close()
	headers := map[string]*tar.Header{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		headers[hdr.Name] = hdr
		require.False(t, strings.HasPrefix(hdr.Name, "/"), hdr.Name)
		name := strings.TrimSuffix(hdr.Name, "/")
		_, err = CleanPath(name)
		require.NoError(t, err, "archive names must be clean relative paths")
		switch hdr.Typeflag {
		case tar.TypeDir:
			require.NoError(t, root.MkdirAll(name, 0o700))
			require.NoError(t, root.Chmod(name, fs.FileMode(hdr.Mode).Perm()))
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			require.NoError(t, err)
			if parent := path.Dir(name); parent != "." {
				require.NoError(t, root.MkdirAll(parent, 0o755))
			}
			require.NoError(t, root.WriteFile(name, data, fs.FileMode(hdr.Mode).Perm()))
			require.NoError(t, root.Chmod(name, fs.FileMode(hdr.Mode).Perm()))
		case tar.TypeSymlink:
			// Not recreated: the symlinks of the fixture point outside.
		default:
			t.Fatalf("unexpected entry type %c for %s", hdr.Typeflag, hdr.Name)
		}
	}
	return headers
}

func TestArchiveRoundTrip(t *testing.T) {
	src := t.TempDir()
	ws, err := Open(src)
	require.NoError(t, err)
	defer ws.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	files := map[string][]byte{
		"top.txt":                          []byte("top"),
		"dir/nested.txt":                   []byte("nested"),
		"dir/deeper/e":                     {},
		"dir/deeper/big":                   big,
		"other/x.sh":                       []byte("#!/bin/sh\n"),
		"données/ü.txt":                    []byte("unicode"),
		"long/" + strings.Repeat("n", 200): []byte("long name"),
	}
	for p, data := range files {
		_, err := ws.Write(p, bytes.NewReader(data), -1, false)
		require.NoError(t, err)
	}
	require.NoError(t, os.Chmod(filepath.Join(src, "other", "x.sh"), 0o755))
	require.NoError(t, os.Chmod(filepath.Join(src, "other"), 0o750))
	require.NoError(t, os.Mkdir(filepath.Join(src, "emptydir"), 0o700))
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	require.NoError(t, os.Chtimes(filepath.Join(src, "top.txt"), old, old))

	var buf bytes.Buffer
	require.NoError(t, ws.Archive(context.Background(), "", &buf))
	dst := t.TempDir()
	headers := untar(t, &buf, dst)

	for p, data := range files {
		got, err := os.ReadFile(filepath.Join(dst, filepath.FromSlash(p)))
		require.NoError(t, err, p)
		assert.True(t, bytes.Equal(data, got), "content of %s", p)
	}
	for _, p := range []string{"top.txt", "other/x.sh", "other", "emptydir", "dir/deeper/big"} {
		want, err := os.Stat(filepath.Join(src, filepath.FromSlash(p)))
		require.NoError(t, err)
		got, err := os.Stat(filepath.Join(dst, filepath.FromSlash(p)))
		require.NoError(t, err, p)
		assert.Equal(t, want.Mode(), got.Mode(), "mode of %s", p)
	}
	assert.True(t, old.Equal(headers["top.txt"].ModTime), "mtime preserved")
	assert.Contains(t, headers, "emptydir/")
	assert.Equal(t, byte(tar.TypeDir), headers["dir/"].Typeflag)

	// Sub-directory archive: workspace-relative names below sub only.
	buf.Reset()
	require.NoError(t, ws.Archive(context.Background(), "dir/deeper", &buf))
	headers = untar(t, &buf, t.TempDir())
	var names []string
	for name := range headers {
		names = append(names, name)
	}
	assert.ElementsMatch(t, []string{"dir/deeper/big", "dir/deeper/e"}, names)

	assert.ErrorIs(t, ws.Archive(context.Background(), "top.txt", io.Discard), ErrNotDir)
	assert.ErrorIs(t, ws.Archive(context.Background(), "../", io.Discard), ErrInvalidPath)
}

func TestArchiveSymlinks(t *testing.T) {
	fx := newFixture(t)
	var buf bytes.Buffer
	require.NoError(t, fx.ws.Archive(context.Background(), "", &buf))
	raw := buf.Bytes()

	gz, err := gzip.NewReader(bytes.NewReader(raw))
	require.NoError(t, err)
	plain, err := io.ReadAll(gz)
	require.NoError(t, err)
	assert.False(t, bytes.Contains(plain, []byte(secret)), "the outside secret must not be archived")
	assert.True(t, bytes.Contains(plain, []byte("hello")))

	headers := untar(t, bytes.NewReader(raw), t.TempDir())
	for name, want := range map[string]string{
		"escape":     fx.outside,
		"updir":      "../outside",
		"link.txt":   "../outside/secret.txt",
		"inner":      "sub",
		"inlink.txt": "sub/file.txt",
	} {
		require.Contains(t, headers, name)
		assert.Equal(t, byte(tar.TypeSymlink), headers[name].Typeflag, name)
		assert.Equal(t, want, headers[name].Linkname, name)
	}
	for name := range headers {
		assert.False(t, strings.HasPrefix(name, "escape/") || strings.HasPrefix(name, "inner/"), name)
	}
	assert.ErrorIs(t, fx.ws.Archive(context.Background(), "escape", io.Discard), ErrSymlink)
}

// cancelWriter cancels a context once more than n bytes were written.
type cancelWriter struct {
	n       int
	written int
	cancel  context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.written += len(p)
	if w.written > w.n {
		w.cancel()
	}
	return len(p), nil
}

func TestArchiveCancel(t *testing.T) {
	dir := t.TempDir()
	ws, err := Open(dir)
	require.NoError(t, err)
	defer ws.Close()
	for i := range 20 {
		// Incompressible content so that gzip output flows early.
		data := make([]byte, 256<<10)
		rnd := rand.New(rand.NewPCG(uint64(i), 1))
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		_, err := ws.Write(fmt.Sprintf("f%02d", i), bytes.NewReader(data), -1, false)
		require.NoError(t, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, ws.Archive(ctx, "", io.Discard), context.Canceled)

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w := &cancelWriter{n: 64 << 10, cancel: cancel}
	err = ws.Archive(ctx, "", w)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, context.Canceled, err)
	assert.Less(t, w.written, 2<<20, "archive stopped soon after cancellation")
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{pathErr("x", ErrInvalidPath, "r"), http.StatusBadRequest},
		{pathErr("x", ErrEscapes, "r"), http.StatusBadRequest},
		{pathErr("x", ErrSymlink, "r"), http.StatusBadRequest},
		{pathErr("x", ErrNotRegular, "r"), http.StatusBadRequest},
		{pathErr("x", ErrIsDir, "r"), http.StatusBadRequest},
		{pathErr("x", ErrNotDir, "r"), http.StatusBadRequest},
		{pathErr("x", ErrNotFound, ""), http.StatusNotFound},
		{pathErr("x", ErrExists, ""), http.StatusConflict},
		{pathErr("x", ErrTooLarge, ""), http.StatusRequestEntityTooLarge},
		{fmt.Errorf("wrapped: %w", ErrTooLarge), http.StatusRequestEntityTooLarge},
		{errors.New("disk on fire"), http.StatusInternalServerError},
		{context.Canceled, http.StatusInternalServerError},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, HTTPStatus(tt.err), tt.err.Error())
	}
}

// TestSymlinkRace swaps a directory for a symlink to the outside while
// reading, writing, listing and archiving through it: confinement must hold
// whatever the interleaving.
func TestSymlinkRace(t *testing.T) {
	fx := newFixture(t)
	d := filepath.Join(fx.dir, "d")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tmp := filepath.Join(fx.dir, "d.tmp")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			os.RemoveAll(tmp)
			if i%2 == 0 {
				os.Mkdir(tmp, 0o755)
				os.WriteFile(filepath.Join(tmp, "secret.txt"), []byte("inside"), 0o644)
			} else {
				os.Symlink(fx.outside, tmp)
			}
			os.RemoveAll(d)
			os.Rename(tmp, d)
		}
	}()
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if f, _, err := fx.ws.OpenFile("d/secret.txt"); err == nil {
			data, _ := io.ReadAll(f)
			f.Close()
			require.NotEqual(t, secret, string(data))
		}
		fx.ws.Write("d/new.txt", strings.NewReader("x"), 10, true)
		entries, _ := fx.ws.Tree("", 0)
		for _, e := range entries {
			require.False(t, strings.HasPrefix(e.Path, "escape/"), e.Path)
		}
		var buf bytes.Buffer
		if err := fx.ws.Archive(context.Background(), "", &buf); err == nil {
			gz, err := gzip.NewReader(&buf)
			require.NoError(t, err)
			plain, err := io.ReadAll(gz)
			require.NoError(t, err)
			require.False(t, bytes.Contains(plain, []byte(secret)))
		}
	}
	close(stop)
	<-done
	assert.Equal(t, []string{"secret.txt"}, fx.outsideNames(t), "nothing created outside")
}
