package vercel

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// Snapshot preparation.
const (
	// snapshotFormat versions what a prepared snapshot holds and where:
	// changing the layout changes every snapshot's name.
	snapshotFormat = "agcluster-vercel-snapshot/1"
	// snapshotPrefix starts the name of the sandbox a snapshot is
	// prepared in; the rest is the fingerprint of what it holds.
	snapshotPrefix = "agcluster-snapshot-"
	// uploadDir is where the binaries are uploaded before root installs
	// them (the file API writes as the sandbox's default user).
	uploadDir = sandboxRoot + "/.agcluster-upload"
	// prepareTimeout bounds a preparation: upload, install, snapshot.
	prepareTimeout = 20 * time.Minute
	// claudePrefix is where claude_version installs the CLI with npm.
	claudePrefix = "/opt/agcluster/claude"
	// claudePackage is the CLI's npm package.
	claudePackage = "@anthropic-ai/claude-code"
)

// preparer finds or prepares the snapshot agents start from, once per
// provider value: concurrent creates wait for the same preparation, and a
// failed one is tried again by the next create.
type preparer struct {
	p *Provider

	mu      sync.Mutex
	id      string       // the snapshot, once known
	running *preparation // the preparation under way
}

// preparation is one preparation under way.
type preparation struct {
	done chan struct{}
	id   string
	err  error
}

// snapshotID returns the snapshot agents start from: Options.Snapshot, or
// the one this provider found or prepared. The preparation runs on its own
// context (bounded by prepareTimeout), so a create that gives up does not
// waste it; ctx bounds only the wait.
func (pr *preparer) snapshotID(ctx context.Context) (string, error) {
	if id := pr.p.opts.Snapshot; id != "" {
		return id, nil
	}
	pr.mu.Lock()
	if pr.id != "" {
		defer pr.mu.Unlock()
		return pr.id, nil
	}
	run := pr.running
	if run == nil {
		run = &preparation{done: make(chan struct{})}
		pr.running = run
		go pr.prepare(run)
	}
	pr.mu.Unlock()
	select {
	case <-run.done:
		return run.id, run.err
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the agent snapshot: %w", ctx.Err())
	}
}

// prepare runs one preparation and records its outcome.
func (pr *preparer) prepare(run *preparation) {
	ctx, cancel := context.WithTimeout(context.Background(), prepareTimeout)
	defer cancel()
	run.id, run.err = pr.p.findOrPrepare(ctx)
	pr.mu.Lock()
	if run.err == nil {
		pr.id = run.id
	}
	pr.running = nil
	pr.mu.Unlock()
	close(run.done)
}

// forget drops a snapshot that turned out gone, so the next create
// prepares it again.
func (pr *preparer) forget(id string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.id == id {
		pr.id = ""
	}
}

// findOrPrepare returns the snapshot holding this provider's binaries:
// one a gateway prepared before (found by the name of the sandbox it was
// prepared in, which is the fingerprint of what it holds), or a new one.
func (p *Provider) findOrPrepare(ctx context.Context) (string, error) {
	began := time.Now()
	fp, err := p.fingerprint()
	if err != nil {
		return "", fmt.Errorf("vercel: agent snapshot: %w (%w)", err, providers.ErrImageMissing)
	}
	name := snapshotPrefix + fp[:20]
	if id, err := p.findSnapshot(ctx, name); err != nil || id != "" {
		return id, err
	}
	p.logger.Info("preparing the vercel agent snapshot (once: later gateways reuse it)",
		zap.String("sandbox", name), zap.String("agent_binary", p.opts.AgentBinary),
		zap.String("claude", cmpOr(p.opts.ClaudeBinary, "npm "+claudePackage+"@"+p.opts.ClaudeVersion)))
	id, err := p.prepareSnapshot(ctx, name, fp)
	if err != nil {
		return "", err
	}
	p.logger.Info("vercel agent snapshot ready", zap.String("snapshot_id", id), zap.String("sandbox", name),
		zap.Duration("prepare_duration", time.Since(began)))
	return id, nil
}

// fingerprint identifies what a prepared snapshot holds: the layout, the
// agent binary's bytes, and the CLI's bytes or npm version.
func (p *Provider) fingerprint() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", snapshotFormat)
	files := []string{p.opts.AgentBinary}
	if p.opts.ClaudeBinary != "" {
		files = append(files, p.opts.ClaudeBinary)
	} else {
		fmt.Fprintf(h, "npm %s@%s\n", claudePackage, p.opts.ClaudeVersion)
	}
	for _, f := range files {
		sum, err := fileSum(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\n", sum)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileSum is the SHA-256 of a file's content.
func fileSum(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// findSnapshot returns the newest usable snapshot of the sandbox named
// name ("" when there is none).
func (p *Provider) findSnapshot(ctx context.Context, name string) (string, error) {
	list, err := p.api.ListSnapshots(ctx, p.opts.ProjectID, name, "")
	if err != nil {
		return "", p.apiError("find the agent snapshot", "", err)
	}
	snaps := slices.DeleteFunc(list.Snapshots, func(s sandboxapi.Snapshot) bool {
		return s.Status != sandboxapi.SnapshotCreated || (s.ExpiresAt != 0 && time.Now().UnixMilli() >= s.ExpiresAt)
	})
	if len(snaps) == 0 {
		return "", nil
	}
	slices.SortFunc(snaps, func(a, b sandboxapi.Snapshot) int { return int(b.CreatedAt - a.CreatedAt) })
	p.logger.Info("vercel agent snapshot found", zap.String("snapshot_id", snaps[0].ID), zap.String("sandbox", name),
		zap.Time("created", time.UnixMilli(snaps[0].CreatedAt)))
	return snaps[0].ID, nil
}

// prepareSnapshot makes the snapshot in a sandbox named name: upload,
// install, snapshot. When the name is taken by a sandbox that still runs,
// another gateway is preparing the same snapshot: it waits for that one.
// One that stopped (its snapshot since deleted or expired, or its
// gateway gone) is deleted and the name used again.
func (p *Provider) prepareSnapshot(ctx context.Context, name, fp string) (string, error) {
	off := false
	req := sandboxapi.CreateSandboxRequest{
		ProjectID: p.opts.ProjectID, Name: name, Persistent: &off, Ports: []int{},
		Timeout: prepareTimeout.Milliseconds(), Resources: &sandboxapi.Resources{VCPUs: p.opts.VCPUs},
		Tags: map[string]string{TagSnapshot: fp[:20]},
	}
	for attempt := 1; ; attempt++ {
		step := time.Now()
		sb, err := p.api.CreateSandbox(ctx, req)
		if sandboxapi.StatusOf(err) == http.StatusConflict {
			if attempt == 1 && p.stalePrep(ctx, name) {
				continue
			}
			return p.awaitSnapshot(ctx, name)
		}
		if err != nil {
			return "", p.apiError("prepare the agent snapshot: create a sandbox", name, err)
		}
		p.logger.Info("preparing the vercel agent snapshot: sandbox created", zap.String("sandbox", name),
			zap.Duration("duration", time.Since(step)))
		id, err := p.install(ctx, sb.Session.ID, name)
		if err != nil {
			p.dropPrepSandbox(ctx, name)
			return "", err
		}
		return id, nil
	}
}

// stalePrep deletes the preparation sandbox named name when it no longer
// runs, and reports whether it did.
func (p *Provider) stalePrep(ctx context.Context, name string) bool {
	sb, err := p.api.GetSandbox(ctx, p.opts.ProjectID, name, false)
	if err != nil || running(sb.Sandbox.Status) || sb.Sandbox.Status == sandboxapi.StatusSnapshotting || sb.Sandbox.Status == sandboxapi.StatusStopping {
		return false
	}
	p.logger.Info("removing a stopped agent snapshot sandbox without a usable snapshot", zap.String("sandbox", name),
		zap.String("status", sb.Sandbox.Status))
	p.dropPrepSandbox(ctx, name)
	return true
}

// install uploads and installs the binaries in session sid and snapshots
// it (never expiring).
func (p *Provider) install(ctx context.Context, sid, name string) (string, error) {
	step := time.Now()
	files := []string{p.opts.AgentBinary}
	if p.opts.ClaudeBinary != "" {
		files = append(files, p.opts.ClaudeBinary)
	}
	total, err := totalSize(files)
	if err != nil {
		return "", fmt.Errorf("vercel: prepare the agent snapshot: %w (%w)", err, providers.ErrImageMissing)
	}
	body := func() (io.ReadCloser, error) { return p.uploadArchive(files, total), nil }
	if err := p.api.WriteFiles(ctx, sid, "/", body); err != nil {
		return "", p.apiError("prepare the agent snapshot: upload the binaries", name, err)
	}
	p.logger.Info("preparing the vercel agent snapshot: binaries uploaded", zap.String("sandbox", name),
		zap.Int64("bytes", total), zap.Duration("duration", time.Since(step)))

	step = time.Now()
	version, err := p.runInstall(ctx, sid, name)
	if err != nil {
		return "", err
	}
	p.logger.Info("preparing the vercel agent snapshot: installed", zap.String("sandbox", name),
		zap.String("claude_version", version), zap.Duration("duration", time.Since(step)))

	step = time.Now()
	never := time.Duration(0)
	snap, err := p.api.CreateSnapshot(ctx, sid, &never)
	if err != nil {
		return "", p.apiError("prepare the agent snapshot: snapshot", name, err)
	}
	p.logger.Info("preparing the vercel agent snapshot: snapshot taken", zap.String("sandbox", name),
		zap.String("snapshot_id", snap.Snapshot.ID), zap.Int64("size_bytes", snap.Snapshot.SizeBytes),
		zap.Duration("duration", time.Since(step)))
	return snap.Snapshot.ID, nil
}

// installScript installs the uploaded binaries as root, or the CLI with
// npm (claude_version), and removes the upload.
func (p *Provider) installScript() string {
	s := `set -e
install -m 0755 -o root -g root ` + uploadDir + `/agcluster-agent ` + agentPath + `
`
	if p.opts.ClaudeBinary != "" {
		s += `install -m 0755 -o root -g root ` + uploadDir + `/claude ` + claudePath + `
`
	} else {
		s += `npm install --global --prefix ` + claudePrefix + ` --no-audit --no-fund "$CLAUDE_PACKAGE"
ln -sf ` + claudePrefix + `/bin/claude ` + claudePath + `
`
	}
	return s + `rm -rf ` + uploadDir + `
`
}

// layoutScript makes the agent's directories as the default user, checks
// that the agent runs (without its settings it exits 2 with its usage) and
// prints the CLI's version.
const layoutScript = `set -e
mkdir -p ` + workspaceDir + ` ` + stateDir + ` ` + homeDir + `
chmod 700 ` + stateDir + `
code=0; ` + agentPath + ` --check >/dev/null 2>&1 || code=$?
if [ "$code" -ne 2 ]; then echo "` + agentPath + ` does not run here (exit $code)" >&2; exit 1; fi
` + claudePath + ` --version
`

// runInstall runs the install (sudo) and the layout script and returns the
// installed CLI's version.
func (p *Provider) runInstall(ctx context.Context, sid, name string) (string, error) {
	env := map[string]string{"CLAUDE_PACKAGE": claudePackage + "@" + p.opts.ClaudeVersion}
	for _, c := range []struct {
		what, script string
		sudo         bool
	}{{"install", p.installScript(), true}, {"lay out the directories", layoutScript, false}} {
		res, err := p.api.RunCommandWait(ctx, sid, sandboxapi.CommandRequest{Command: "sh", Args: []string{"-c", c.script}, Env: env, Sudo: c.sudo})
		if err != nil {
			return "", p.apiError("prepare the agent snapshot: "+c.what, name, err)
		}
		if code := *res.Command.ExitCode; code != 0 {
			p.logger.Warn("preparing the vercel agent snapshot failed", zap.String("step", c.what),
				zap.Int("exit_code", code), zap.String("stderr", truncate(res.Stderr, 4096)))
			return "", fmt.Errorf("vercel: prepare the agent snapshot: %s exited %d: %s (%w)", c.what, code,
				truncate(res.Stderr, 300), providers.ErrImageMissing)
		}
		if !c.sudo {
			return lastLine(res.Stdout), nil
		}
	}
	return "", nil
}

// awaitSnapshot waits for the snapshot another gateway prepares in the
// sandbox named name. When that sandbox stopped without one (its gateway
// died), it is deleted, so the next create prepares anew.
func (p *Provider) awaitSnapshot(ctx context.Context, name string) (string, error) {
	p.logger.Info("another gateway is preparing the vercel agent snapshot; waiting for it", zap.String("sandbox", name))
	for wait := time.Second; ; wait = min(wait*2, 15*time.Second) {
		if id, err := p.findSnapshot(ctx, name); err != nil || id != "" {
			return id, err
		}
		sb, err := p.api.GetSandbox(ctx, p.opts.ProjectID, name, false)
		switch {
		case sandboxapi.IsNotFound(err):
			return "", fmt.Errorf("vercel: the agent snapshot's sandbox %s vanished while being prepared (%w)", name, providers.ErrNotReady)
		case err != nil:
			return "", p.apiError("wait for the agent snapshot", name, err)
		case !running(sb.Sandbox.Status) && sb.Sandbox.Status != sandboxapi.StatusSnapshotting && sb.Sandbox.Status != sandboxapi.StatusStopping:
			if id, err := p.findSnapshot(ctx, name); err != nil || id != "" {
				return id, err
			}
			p.dropPrepSandbox(ctx, name)
			return "", fmt.Errorf("vercel: the agent snapshot's sandbox %s stopped without a snapshot; it was removed, the next conversation prepares it again (%w)",
				name, providers.ErrNotReady)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("vercel: waiting for the agent snapshot: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// dropPrepSandbox deletes a preparation's sandbox that produced no
// snapshot.
func (p *Provider) dropPrepSandbox(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupBudget)
	defer cancel()
	if err := p.api.DeleteSandbox(ctx, p.opts.ProjectID, name); err != nil && !sandboxapi.IsNotFound(err) {
		p.logger.Warn("could not delete a failed snapshot preparation's sandbox", zap.String("sandbox", name), zap.Error(err))
	}
}

// totalSize is the files' summed size.
func totalSize(files []string) (int64, error) {
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", f, err)
		}
		n += fi.Size()
	}
	return n, nil
}

// uploadArchive streams a gzipped tar of files (the agent as
// agcluster-agent, the CLI as claude, mode 0755, under uploadDir relative
// to "/"), logging progress at every quarter of total.
func (p *Provider) uploadArchive(files []string, total int64) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(p.writeArchive(pw, files, total))
	}()
	return pr
}

// writeArchive writes the upload's archive to w.
func (p *Provider) writeArchive(w io.Writer, files []string, total int64) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	names := []string{"agcluster-agent", "claude"}
	prog := &progress{logger: p.logger, total: total, began: time.Now()}
	for i, f := range files {
		if err := addFile(tw, f, path.Join(uploadDir[1:], names[i]), prog); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// addFile adds file f to tw as name, mode 0755.
func addFile(tw *tar.Writer, f, name string, prog *progress) error {
	in, err := os.Open(f)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: fi.Size(), Typeflag: tar.TypeReg, ModTime: fi.ModTime()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, io.TeeReader(in, prog))
	return err
}

// progress logs an upload's progress at every quarter.
type progress struct {
	logger *zap.Logger
	total  int64
	done   int64
	began  time.Time
	logged int // quarters logged
}

func (pg *progress) Write(b []byte) (int, error) {
	pg.done += int64(len(b))
	if pg.total > 0 {
		if q := int(pg.done * 4 / pg.total); q > pg.logged && q < 4 {
			pg.logged = q
			pg.logger.Info("preparing the vercel agent snapshot: uploading", zap.Int("percent", q*25),
				zap.Int64("bytes", pg.done), zap.Duration("elapsed", time.Since(pg.began)))
		}
	}
	return len(b), nil
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := slices.DeleteFunc(splitLines(s), func(l string) bool { return l == "" })
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}
