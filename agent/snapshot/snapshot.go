// Package snapshot moves an agent's disk in and out as one archive: its
// workspace and its state directory (the CLI's sessions, the agent's
// session id, turn count, turn tree and binding). It is for platforms
// whose containers lose their disk when they stop, such as Cloudflare
// Containers: the control plane saves a snapshot (GET /snapshot) before
// the container stops, and restores it into the next container before the
// agent starts its CLI (PUT /snapshot while the agent waits for it, see
// agent.EnvRestore), so the conversation resumes with its files.
//
// A snapshot is a gzip-compressed tar archive whose entries are named
// "workspace/<path>" and "state/<path>", written and restored through each
// directory's os.Root (package workspace): directories, regular files with
// their permission bits and modification times, and symbolic links as
// links, never followed.
package snapshot

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent/workspace"
)

// Entry name prefixes of the two directories.
const (
	// WorkspacePrefix starts the names of the workspace's entries.
	WorkspacePrefix = "workspace/"
	// StatePrefix starts the names of the state directory's entries.
	StatePrefix = "state/"
)

// ErrFormat marks an archive that is not a snapshot: not gzip, not tar,
// or an entry outside the two directories.
var ErrFormat = errors.New("not an agent snapshot")

// Dirs are the directories a snapshot holds.
type Dirs struct {
	// Workspace is the agent's workspace (required).
	Workspace *workspace.Workspace
	// State is the agent's state directory (nil: the agent has none; a
	// snapshot's state entries are then skipped).
	State *workspace.Workspace
}

// Write writes a snapshot of d to out.
func Write(ctx context.Context, out io.Writer, d Dirs) error {
	gz := gzip.NewWriter(out)
	tw := tar.NewWriter(gz)
	if err := d.Workspace.ArchiveTo(ctx, tw, WorkspacePrefix); err != nil {
		return fmt.Errorf("snapshot: workspace: %w", err)
	}
	if d.State != nil {
		if err := d.State.ArchiveTo(ctx, tw, StatePrefix); err != nil {
			return fmt.Errorf("snapshot: state: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// Stats counts what Restore did.
type Stats struct {
	// Entries is how many entries were restored.
	Entries int `json:"entries"`
	// Bytes is how many bytes of file content were written.
	Bytes int64 `json:"bytes"`
	// Skipped is how many entries were left out (types a snapshot does
	// not restore, or state entries for an agent without a state
	// directory).
	Skipped int `json:"skipped"`
}

// Restore reads a snapshot from r into d. An empty r is an empty snapshot:
// nothing is restored. At most limit bytes of file content are written (a
// negative limit means no limit); a larger snapshot fails with an error
// wrapping workspace.ErrTooLarge. On a failure part of the snapshot may be
// restored already.
func Restore(ctx context.Context, r io.Reader, d Dirs, limit int64) (Stats, error) {
	var st Stats
	br := bufio.NewReader(r)
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		return st, nil
	}
	gz, err := gzip.NewReader(br)
	if err != nil {
		return st, fmt.Errorf("snapshot: %w: %w", ErrFormat, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("snapshot: %w: %w", ErrFormat, err)
		}
		if err := restoreEntry(hdr, tr, d, limit-st.Bytes, limit >= 0, &st); err != nil {
			return st, err
		}
	}
}

// restoreEntry restores one entry into the directory its name's prefix
// names, with left bytes of content allowed when bounded.
func restoreEntry(hdr *tar.Header, r io.Reader, d Dirs, left int64, bounded bool, st *Stats) error {
	dir, rel, err := target(hdr.Name, d)
	if err != nil {
		return err
	}
	if dir == nil || rel == "" {
		st.Skipped++
		return nil
	}
	if !bounded {
		left = -1
	}
	done, err := dir.Restore(rel, hdr, r, left)
	if err != nil {
		return fmt.Errorf("snapshot: restore %s: %w", hdr.Name, err)
	}
	if !done {
		st.Skipped++
		return nil
	}
	st.Entries++
	if hdr.Typeflag == tar.TypeReg {
		st.Bytes += hdr.Size
	}
	return nil
}

// target is the directory an entry belongs to and its path there (nil for
// the state of an agent without a state directory).
func target(name string, d Dirs) (*workspace.Workspace, string, error) {
	if rel, ok := strings.CutPrefix(name, WorkspacePrefix); ok {
		return d.Workspace, rel, nil
	}
	if rel, ok := strings.CutPrefix(name, StatePrefix); ok {
		return d.State, rel, nil
	}
	return nil, "", fmt.Errorf("snapshot: entry %q is neither below %s nor below %s: %w", name, WorkspacePrefix, StatePrefix, ErrFormat)
}
