package workspace

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// Restore writes one entry of an archive made by Archive or ArchiveTo
// into the workspace, at the workspace-relative path p (checked with
// CleanPath; a directory's trailing "/" is allowed): a directory, a
// regular file holding the next hdr.Size bytes of r, or a symbolic link
// with its target as stored. Missing parent directories are created.
// Whatever is at p already is replaced, never followed: a file or a link is
// removed first; a directory stays (an entry for it only sets its mode) and
// is never replaced by a file or a link (ErrIsDir). Other entry types
// (hard links, devices, FIFOs) are skipped: Restore returns false.
//
// Modes keep only the permission bits, and directories always keep the
// owner's rwx (the entries below them are written next). Files get their
// modification time. A file larger than limit bytes (a negative limit means
// no limit) is not written and the error wraps ErrTooLarge. Every access
// goes through the workspace's os.Root: an entry cannot write outside the
// workspace, even below a symbolic link restored earlier.
func (w *Workspace) Restore(p string, hdr *tar.Header, r io.Reader, limit int64) (bool, error) {
	name, err := CleanPath(strings.TrimSuffix(p, "/"))
	if err != nil {
		return false, err
	}
	perm := fs.FileMode(hdr.Mode) & fs.ModePerm
	switch hdr.Typeflag {
	case tar.TypeDir:
		return true, w.restoreDir(p, name, perm|0o700)
	case tar.TypeReg:
		return true, w.restoreFile(p, name, hdr, r, perm, limit)
	case tar.TypeSymlink:
		return true, w.restoreSymlink(p, name, hdr.Linkname)
	}
	return false, nil
}

// restoreDir makes directory name (or sets its mode when it exists).
func (w *Workspace) restoreDir(p, name string, perm fs.FileMode) error {
	fi, err := w.root.Lstat(name)
	switch {
	case err == nil && fi.IsDir():
		return mapErr(p, "set mode", w.root.Chmod(name, perm))
	case err == nil:
		if err := w.root.Remove(name); err != nil {
			return mapErr(p, "replace", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return mapErr(p, "stat", err)
	}
	if err := w.ensureParent(p, name); err != nil {
		return err
	}
	if err := w.root.Mkdir(name, perm); err != nil {
		return mapErr(p, "create directory", err)
	}
	return mapErr(p, "set mode", w.root.Chmod(name, perm))
}

// restoreFile writes regular file name with the content r holds.
func (w *Workspace) restoreFile(p, name string, hdr *tar.Header, r io.Reader, perm fs.FileMode, limit int64) (err error) {
	if limit >= 0 && hdr.Size > limit {
		return pathErr(p, ErrTooLarge, fmt.Sprintf("%d bytes, more than the %d left to restore", hdr.Size, limit))
	}
	if err := w.clear(p, name); err != nil {
		return err
	}
	// O_EXCL: a link raced in since clear is never followed.
	f, err := w.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return mapErr(p, "create", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = mapErr(p, "close", cerr)
		}
	}()
	if _, err := io.CopyN(f, r, hdr.Size); err != nil {
		return mapErr(p, "write", err)
	}
	if err := f.Chmod(perm); err != nil {
		return mapErr(p, "set mode", err)
	}
	if !hdr.ModTime.IsZero() {
		if err := w.root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
			return mapErr(p, "set times", err)
		}
	}
	return nil
}

// restoreSymlink makes name a symbolic link to target.
func (w *Workspace) restoreSymlink(p, name, target string) error {
	if target == "" || strings.ContainsRune(target, 0) {
		return pathErr(p, ErrInvalidPath, "a symbolic link needs a target")
	}
	if err := w.clear(p, name); err != nil {
		return err
	}
	return mapErr(p, "create symbolic link", w.root.Symlink(target, name))
}

// clear makes room for a file or link at name: its parents exist, and a
// file or link there is removed (a directory is refused).
func (w *Workspace) clear(p, name string) error {
	if err := w.ensureParent(p, name); err != nil {
		return err
	}
	fi, err := w.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return mapErr(p, "stat", err)
	case fi.IsDir():
		return pathErr(p, ErrIsDir, "a directory is in the way")
	}
	return mapErr(p, "replace", w.root.Remove(name))
}

// ensureParent creates name's missing parent directories.
func (w *Workspace) ensureParent(p, name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	if err := w.root.MkdirAll(dir, dirPerm); err != nil {
		if errors.Is(stripHostPath(err), syscall.ENOTDIR) || errors.Is(stripHostPath(err), fs.ErrExist) {
			return pathErr(p, ErrExists, "an element of the parent path exists and is not a directory")
		}
		return mapErr(p, "create parent directories", err)
	}
	return nil
}
