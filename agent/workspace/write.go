package workspace

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"strings"
	"syscall"
)

const (
	// dirPerm is the permission of directories created by Write.
	dirPerm = 0o755
	// filePerm is the permission of files written by Write.
	filePerm = 0o644
	// tempPrefix starts the names of Write's temporary files.
	tempPrefix = ".agcluster-write-"
)

// Write writes the content of r to the file p atomically: it writes a
// temporary file in the same directory and renames it over p, so readers
// see either the old or the new content. Missing parent directories are
// created with permission 0o755; the file gets permission 0o644.
//
// At most limit bytes are accepted (a negative limit means no limit): if r
// has more, nothing is written and ErrTooLarge is returned. If overwrite is
// false and p exists, ErrExists is returned. If p exists and is a directory
// or a symbolic link, ErrIsDir or ErrSymlink is returned; other special
// files give ErrNotRegular. Write returns the number of bytes written.
func (w *Workspace) Write(p string, r io.Reader, limit int64, overwrite bool) (int64, error) {
	name, err := CleanPath(p)
	if err != nil {
		return 0, err
	}
	if err := w.checkWriteTarget(p, name, overwrite); err != nil {
		return 0, err
	}
	if err := w.ensureParent(p, name); err != nil {
		return 0, err
	}
	dir := path.Dir(name)

	tmp, f, err := w.createTemp(dir)
	if err != nil {
		return 0, mapErr(p, "create temporary file", err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			w.root.Remove(tmp)
		}
	}()
	if err := f.Chmod(filePerm); err != nil {
		return 0, mapErr(p, "set file mode", err)
	}

	src := r
	if limit >= 0 && limit < math.MaxInt64 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(f, src)
	if err != nil {
		return 0, mapErr(p, "write", err)
	}
	if limit >= 0 && n > limit {
		return 0, pathErr(p, ErrTooLarge, fmt.Sprintf("content is larger than the limit of %d bytes", limit))
	}
	if err := f.Sync(); err != nil {
		return 0, mapErr(p, "sync", err)
	}
	if err := f.Close(); err != nil {
		w.root.Remove(tmp)
		done = true
		return 0, mapErr(p, "close", err)
	}
	done = true

	if err := w.commit(p, tmp, name, overwrite); err != nil {
		w.root.Remove(tmp)
		return 0, err
	}
	return n, nil
}

// checkWriteTarget checks what currently exists at name.
func (w *Workspace) checkWriteTarget(p, name string, overwrite bool) error {
	fi, err := w.root.Lstat(name)
	if err != nil {
		if mapped := mapErr(p, "stat", err); errors.Is(mapped, ErrNotFound) {
			// Not there yet (or a parent is missing, which Write creates; a
			// parent that is a file is reported by MkdirAll).
			return nil
		} else {
			return mapped
		}
	}
	if err := checkRegular(p, fi); err != nil {
		return err
	}
	if !overwrite {
		return pathErr(p, ErrExists, "file exists and overwrite was not requested")
	}
	return nil
}

// createTemp creates a new, empty temporary file in dir.
func (w *Workspace) createTemp(dir string) (string, *os.File, error) {
	for range 16 {
		name := path.Join(dir, tempPrefix+strings.ToLower(rand.Text())+".tmp")
		f, err := w.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return name, f, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", nil, err
		}
	}
	return "", nil, errors.New("could not create a unique temporary file")
}

// commit moves the complete temporary file tmp to name.
func (w *Workspace) commit(p, tmp, name string, overwrite bool) error {
	if !overwrite {
		// A hard link fails atomically if name exists, so a file created
		// since checkWriteTarget is never clobbered.
		err := w.root.Link(tmp, name)
		if err == nil {
			w.root.Remove(tmp)
			return nil
		}
		if errors.Is(err, fs.ErrExist) {
			return pathErr(p, ErrExists, "file exists and overwrite was not requested")
		}
		if isEscape(err) {
			return mapErr(p, "link", err)
		}
		// The file system may not support hard links: fall back to a
		// check followed by a rename.
	}
	if err := w.checkWriteTarget(p, name, overwrite); err != nil {
		return err
	}
	if err := w.root.Rename(tmp, name); err != nil {
		cause := stripHostPath(err)
		if errors.Is(cause, syscall.EISDIR) || errors.Is(cause, fs.ErrExist) || errors.Is(cause, syscall.ENOTEMPTY) {
			return pathErr(p, ErrIsDir, "")
		}
		return mapErr(p, "rename", err)
	}
	return nil
}
