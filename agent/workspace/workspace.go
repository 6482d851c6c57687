// Package workspace confines the agent server's file operations to the
// agent's workspace directory.
//
// Every access goes through an os.Root, so that no operation can leave the
// workspace, even if the agent (which can run arbitrary commands inside the
// workspace) races the server by replacing files with symbolic links.
// Client-supplied paths are validated with CleanPath first, so that hostile
// paths ("..", absolute paths, NUL bytes, backslashes, ...) are refused with
// a clear error before they reach the file system.
//
// Symbolic links are never followed as the final element of a path: OpenFile
// and Write refuse them, and Tree and Archive report them as links without
// descending into them. Symbolic links in intermediate elements are resolved
// by os.Root, which refuses any that lead outside the workspace.
//
// Errors wrap one of the package's sentinel errors (ErrInvalidPath,
// ErrNotFound, ...); HTTPStatus maps them to HTTP status codes. Error
// messages never contain the workspace's host directory.
package workspace

import (
	"fmt"
	"io/fs"
	"os"
)

// Workspace is a directory that file operations cannot escape. It is safe
// for concurrent use by multiple goroutines.
type Workspace struct {
	dir  string
	root *os.Root
}

// Open opens the workspace at dir, which must exist and be a directory.
func Open(dir string) (*Workspace, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("workspace: open %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("workspace: open %s: %w", dir, ErrNotDir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	return &Workspace{dir: dir, root: root}, nil
}

// Close releases the workspace's directory handle.
func (w *Workspace) Close() error { return w.root.Close() }

// Dir returns the workspace's directory as given to Open.
func (w *Workspace) Dir() string { return w.dir }

// OpenFile opens the regular file p for reading and returns it with its
// file information. The caller must close the file. Note that the file's
// Name is its host path; do not show it to clients.
//
// It fails with ErrInvalidPath for a malformed path, ErrNotFound if p does
// not exist, ErrIsDir for a directory, ErrSymlink if p itself is a symbolic
// link (even one pointing inside the workspace), ErrNotRegular for devices,
// FIFOs and sockets, and ErrEscapes if a symbolic link in an intermediate
// element leads outside the workspace.
func (w *Workspace) OpenFile(p string) (*os.File, fs.FileInfo, error) {
	name, err := CleanPath(p)
	if err != nil {
		return nil, nil, err
	}
	fi, err := w.root.Lstat(name)
	if err != nil {
		return nil, nil, mapErr(p, "stat", err)
	}
	if err := checkRegular(p, fi); err != nil {
		return nil, nil, err
	}
	f, st, err := w.openRegular(name, fi)
	if err != nil {
		return nil, nil, mapErr(p, "open", err)
	}
	if f == nil {
		return nil, nil, pathErr(p, ErrNotRegular, "file was replaced while being opened")
	}
	return f, st, nil
}

// checkRegular returns nil if fi (from Lstat) describes a regular file, and
// otherwise the appropriate error for client path p.
func checkRegular(p string, fi fs.FileInfo) error {
	switch m := fi.Mode(); {
	case m.IsRegular():
		return nil
	case m&fs.ModeSymlink != 0:
		return pathErr(p, ErrSymlink, "symbolic links are not followed")
	case m.IsDir():
		return pathErr(p, ErrIsDir, "")
	default:
		return pathErr(p, ErrNotRegular, "path is a device, FIFO, socket or other special file")
	}
}

// openRegular opens name for reading without blocking on FIFOs, and checks
// that the opened file is the regular file that Lstat described as want. A
// nil file with a nil error means the file was replaced in between (for
// example by a symbolic link, which os.Root would have followed).
func (w *Workspace) openRegular(name string, want fs.FileInfo) (*os.File, fs.FileInfo, error) {
	f, err := w.root.OpenFile(name, os.O_RDONLY|oNonblock, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() || !os.SameFile(st, want) {
		f.Close()
		return nil, nil, nil
	}
	return f, st, nil
}
