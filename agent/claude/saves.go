package claude

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent/statefile"
)

// The CLI's checkpoints hold the workspace as each turn found it, never
// as the last turn of a session left it. So when the conversation
// branches away from its tip, the files the abandoned turns changed are
// copied to <saves>/<tip turn id>/ first (Turn.Saved lists them), for a
// later branch back to the tip.

// savesDir returns the directory for saved files, making it if needed:
// Options.SavesDir, else a temporary directory removed by Close.
func (r *Runner) savesDir() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opts.SavesDir == "" {
		dir, err := os.MkdirTemp("", "agcluster-saves-")
		if err != nil {
			return "", fmt.Errorf("saves directory: %w", err)
		}
		r.opts.SavesDir, r.tempSaves = dir, true
	}
	if err := os.MkdirAll(r.opts.SavesDir, 0o700); err != nil {
		return "", fmt.Errorf("saves directory: %w", err)
	}
	return r.opts.SavesDir, nil
}

// saveFiles copies the files at paths (absolute) as they are now, the
// state after turn id compared with the state after turn base, and
// records them in id's tree node. A file that cannot be copied is left
// out (and logged).
func (r *Runner) saveFiles(id, base string, paths []string) {
	root, err := r.savesDir()
	if err == nil {
		root = filepath.Join(root, id)
		if err = os.RemoveAll(root); err == nil {
			err = os.Mkdir(root, 0o700)
		}
	}
	if err != nil {
		r.opts.Logger.Warn("branch files not saved", zap.String("turn", id), zap.Error(err))
		return
	}
	saved := &statefile.Saved{Base: base, Files: make([]statefile.SavedFile, 0, len(paths))}
	for i, path := range paths {
		f := statefile.SavedFile{Path: path, Copy: strconv.Itoa(i)}
		exists, err := copyFile(path, filepath.Join(root, f.Copy))
		if err != nil {
			r.opts.Logger.Warn("branch file not saved", zap.String("path", path), zap.Error(err))
			continue
		}
		if !exists {
			f.Copy = ""
		}
		saved.Files = append(saved.Files, f)
	}
	r.mu.Lock()
	if turn := r.tree.get(id); turn != nil {
		turn.Saved = saved
	}
	r.mu.Unlock()
	r.persist()
}

// restoreFiles puts the files saved for turn id back (removing those that
// did not exist) and returns the paths it could not restore.
func (r *Runner) restoreFiles(id string, saved *statefile.Saved) []string {
	var failed []string
	root, err := r.savesDir()
	for _, f := range saved.Files {
		ferr := err
		if ferr == nil {
			ferr = restoreFile(filepath.Join(root, id), f)
		}
		if ferr != nil {
			r.opts.Logger.Warn("branch file not restored", zap.String("path", f.Path), zap.Error(ferr))
			failed = append(failed, f.Path)
		}
	}
	return failed
}

// restoreFile puts back one file saved in dir.
func restoreFile(dir string, f statefile.SavedFile) error {
	if f.Copy == "" {
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return err
	}
	exists, err := copyFile(filepath.Join(dir, f.Copy), f.Path)
	if err == nil && !exists {
		err = fmt.Errorf("saved copy %s is gone", f.Copy)
	}
	return err
}

// copyFile copies the regular file src to dst with its mode, replacing
// dst. It reports false, and no error, when src does not exist.
func copyFile(src, dst string) (bool, error) {
	info, err := os.Lstat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !info.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file", src)
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	tmp := dst + ".agcluster-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return false, err
	}
	if _, err = io.Copy(out, in); err == nil {
		err = out.Close()
	} else {
		_ = out.Close()
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("copy %s: %w", src, err)
	}
	return true, nil
}
