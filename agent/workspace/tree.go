package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"
)

// Entry describes one file in a Tree listing. It is the JSON form used by
// GET /files.
type Entry struct {
	// Path is the slash-separated path relative to the workspace.
	Path string `json:"path"`
	// Type is "file", "dir", "symlink" or "other" (devices, FIFOs, sockets).
	Type string `json:"type"`
	// Size is the size in bytes of a regular file, 0 for other types.
	Size int64 `json:"size"`
	// Mode is the file mode in ls form, e.g. "-rw-r--r--".
	Mode string `json:"mode"`
	// ModTime is the modification time, in UTC.
	ModTime time.Time `json:"mtime"`
	// Target is a symbolic link's target as stored; it is never followed.
	Target string `json:"target,omitempty"`
}

// Values of Entry.Type.
const (
	// TypeFile is a regular file.
	TypeFile = "file"
	// TypeDir is a directory.
	TypeDir = "dir"
	// TypeSymlink is a symbolic link.
	TypeSymlink = "symlink"
	// TypeOther is a device, FIFO, socket or other special file.
	TypeOther = "other"
)

// fileType returns the Entry type for mode m.
func fileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return TypeFile
	case m.IsDir():
		return TypeDir
	case m&fs.ModeSymlink != 0:
		return TypeSymlink
	default:
		return TypeOther
	}
}

// Tree lists everything below the workspace root, or below its
// sub-directory sub ("" or "." for the root), not including the directory
// itself. Entries are in depth-first order with the names in each directory
// sorted, which is the order of their paths compared element by element.
// Symbolic links are listed as such, with their target, and never followed;
// sub itself must not be a symbolic link.
//
// If there are more than maxEntries entries (maxEntries > 0), Tree returns
// the first maxEntries entries together with an error wrapping ErrTooMany.
// Files that cannot be read (permission denied) or that vanish during the
// listing are skipped.
func (w *Workspace) Tree(sub string, maxEntries int) ([]Entry, error) {
	var entries []Entry
	err := w.walk(sub, func(rel string, fi fs.FileInfo, target string) error {
		if maxEntries > 0 && len(entries) >= maxEntries {
			return pathErr(displaySub(sub), ErrTooMany, fmt.Sprintf("more than %d entries, listing truncated", maxEntries))
		}
		e := Entry{
			Path:    rel,
			Type:    fileType(fi.Mode()),
			Mode:    fi.Mode().String(),
			ModTime: fi.ModTime().UTC(),
			Target:  target,
		}
		if e.Type == TypeFile {
			e.Size = fi.Size()
		}
		entries = append(entries, e)
		return nil
	})
	return entries, err
}

// displaySub returns the client's name for sub-directory sub in messages.
func displaySub(sub string) string {
	if sub == "" {
		return "."
	}
	return sub
}

// walkFunc is called by walk for each entry with its workspace-relative
// path, its Lstat information and, for symbolic links, its target. An error
// stops the walk and is returned by walk.
type walkFunc func(rel string, fi fs.FileInfo, target string) error

// walk calls fn for everything below the sub-directory sub, depth first,
// without following symbolic links.
func (w *Workspace) walk(sub string, fn walkFunc) error {
	dir, err := cleanDir(sub)
	if err != nil {
		return err
	}
	p := displaySub(sub)
	fi, err := w.root.Lstat(dir)
	if err != nil {
		return mapErr(p, "stat", err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return pathErr(p, ErrSymlink, "symbolic links are not followed")
	case !fi.IsDir():
		return pathErr(p, ErrNotDir, "")
	}
	err = w.walkDir(dir, fi, fn)
	if err != nil {
		var pe *PathError
		if errors.As(err, &pe) {
			return err
		}
		return mapErr(p, "list", err)
	}
	return nil
}

// child is a directory entry read by walkDir.
type child struct {
	name   string
	fi     fs.FileInfo
	target string
}

// walkDir walks the directory dir, whose Lstat information is want.
func (w *Workspace) walkDir(dir string, want fs.FileInfo, fn walkFunc) error {
	children, err := w.readDir(dir, want)
	if err != nil {
		if skippable(err) {
			return nil
		}
		return err
	}
	for _, c := range children {
		rel := join(dir, c.name)
		if err := fn(rel, c.fi, c.target); err != nil {
			return err
		}
		if c.fi.IsDir() {
			if err := w.walkDir(rel, c.fi, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// readDir returns the sorted entries of directory dir with their Lstat
// information. It holds one file descriptor for dir only while reading it.
// If dir is no longer the directory described by want (it was replaced, for
// example by a symbolic link), it returns no entries.
func (w *Workspace) readDir(dir string, want fs.FileInfo) ([]child, error) {
	d := w.root
	if dir != "." {
		var err error
		if d, err = w.root.OpenRoot(dir); err != nil {
			return nil, err
		}
		defer d.Close()
	}
	f, err := d.Open(".")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !os.SameFile(st, want) {
		return nil, nil
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	children := make([]child, 0, len(names))
	for _, name := range names {
		fi, err := d.Lstat(name)
		if err != nil {
			if skippable(err) {
				continue
			}
			return nil, err
		}
		c := child{name: name, fi: fi}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if c.target, err = d.Readlink(name); err != nil {
				if skippable(err) {
					continue
				}
				return nil, err
			}
		}
		children = append(children, c)
	}
	return children, nil
}

// skippable reports whether err, met while walking, means the entry should
// be skipped rather than the walk stopped: it vanished, became unreadable,
// or was replaced by something leading outside the workspace.
func skippable(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || isEscape(err)
}

// join returns dir/name for a workspace-relative dir ("." for the root).
func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}
