package workspace

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
)

// Archive writes a gzip-compressed tar archive of everything below the
// workspace root, or below its sub-directory sub ("" or "." for the root),
// to out. Entries are the ones Tree lists, in the same order, named by their
// workspace-relative paths (directories with a trailing "/"): directories
// and regular files with their permission bits and modification times (in
// whole seconds), and symbolic links as symlink entries with their target as
// stored, never followed. Devices, FIFOs and sockets are skipped, as are
// files that vanish or cannot be read. Every file is opened through the
// workspace's os.Root. A file that shrinks while it is archived is padded
// with zero bytes; one that grows is truncated to its size when opened.
//
// If ctx is cancelled, Archive stops and returns ctx.Err(); out then holds
// an incomplete archive.
func (w *Workspace) Archive(ctx context.Context, sub string, out io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	gz := gzip.NewWriter(out)
	tw := tar.NewWriter(gz)
	if err := w.archiveTo(ctx, tw, sub, ""); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("workspace: archive: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("workspace: archive: %w", err)
	}
	return nil
}

// ArchiveTo writes the entries Archive would write for the whole
// workspace into tw, each name prefixed with prefix (e.g. "workspace/"),
// without closing tw: several directories can share one archive.
func (w *Workspace) ArchiveTo(ctx context.Context, tw *tar.Writer, prefix string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.archiveTo(ctx, tw, "", prefix)
}

// archiveTo writes the entries below sub into tw, named prefix+rel.
func (w *Workspace) archiveTo(ctx context.Context, tw *tar.Writer, sub, prefix string) error {
	err := w.walk(sub, func(rel string, fi fs.FileInfo, target string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return w.archiveEntry(ctx, tw, prefix, rel, fi, target)
	})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return err
	}
	return nil
}

// tarMode returns the tar mode bits for m: permissions plus the setuid,
// setgid and sticky bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// archiveEntry writes the tar entry for rel, named prefix+rel.
func (w *Workspace) archiveEntry(ctx context.Context, tw *tar.Writer, prefix, rel string, fi fs.FileInfo, target string) error {
	hdr := &tar.Header{
		Name:    prefix + rel,
		Mode:    tarMode(fi.Mode()),
		ModTime: fi.ModTime().Truncate(1e9),
	}
	switch fileType(fi.Mode()) {
	case TypeDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case TypeSymlink:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
	case TypeFile:
		return w.archiveFile(ctx, tw, hdr, rel, fi)
	default:
		return nil
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("workspace: archive %q: %w", rel, err)
	}
	return nil
}

// archiveFile writes the regular file rel, described by fi, with header hdr.
func (w *Workspace) archiveFile(ctx context.Context, tw *tar.Writer, hdr *tar.Header, rel string, fi fs.FileInfo) error {
	f, st, err := w.openRegular(rel, fi)
	if err != nil {
		if skippable(err) {
			return nil
		}
		return mapErr(rel, "open for archive", err)
	}
	if f == nil {
		return nil // replaced since it was listed
	}
	defer f.Close()
	hdr.Typeflag = tar.TypeReg
	hdr.Size = st.Size()
	hdr.Mode = tarMode(st.Mode())
	hdr.ModTime = st.ModTime().Truncate(1e9)
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("workspace: archive %q: %w", rel, err)
	}
	n, err := io.Copy(tw, &ctxReader{ctx: ctx, r: io.LimitReader(f, hdr.Size)})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return mapErr(rel, "copy into archive", err)
	}
	if n < hdr.Size {
		// The file shrank: pad it so that the archive stays valid.
		if _, err := io.CopyN(tw, zeros{}, hdr.Size-n); err != nil {
			return fmt.Errorf("workspace: archive %q: %w", rel, err)
		}
	}
	return nil
}

// ctxReader is a reader that fails with ctx.Err() once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
