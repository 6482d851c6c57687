package vercelemu

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// opContext is a context for Docker work that outlives the API call that
// started it, ended by Close.
func (e *Emulator) opContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-e.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// async runs op after the API call that started it returned, one op per
// sandbox at a time, on a context Close ends. Callers hold e.mu.
func (e *Emulator) async(sb *sandbox, op func(ctx context.Context)) {
	e.spawn(func() {
		sb.ops.Lock()
		defer sb.ops.Unlock()
		ctx, cancel := e.opContext(2 * time.Minute)
		defer cancel()
		op(ctx)
	})
}

// boot runs s, sb's pending session: its container starts and the session
// runs until its timeout. The caller holds sb.ops. On failure the session
// is failed.
func (e *Emulator) boot(ctx context.Context, sb *sandbox, s *session) error {
	if err := e.bootContainer(ctx, sb); err != nil {
		e.log.Warn("session_boot_failed", zap.String("sandbox", sb.name), zap.Error(err))
		e.mu.Lock()
		e.setStatus(s, sandboxapi.StatusFailed)
		e.mu.Unlock()
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.status != sandboxapi.StatusPending { // deleted meanwhile
		return fmt.Errorf("session %s is %s", s.id, s.status)
	}
	s.startedAt = now()
	e.setStatus(s, sandboxapi.StatusRunning)
	e.armTimer(s)
	return nil
}

// armTimer (re)starts s's timeout: when it passes, the session stops as
// Vercel stops it, without a requested stop. Callers hold e.mu.
func (e *Emulator) armTimer(s *session) {
	if s.timer != nil {
		s.timer.Stop()
	}
	left := time.Until(time.UnixMilli(s.startedAt + s.timeout))
	s.timer = time.AfterFunc(max(left, 0), func() { e.timeUp(s) })
}

// timeUp stops s because its timeout passed (unless it stopped already).
func (e *Emulator) timeUp(s *session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.status != sandboxapi.StatusRunning {
		return
	}
	e.log.Info("session_timed_out", zap.String("sandbox", s.sb.name), zap.String("session", s.id))
	e.halt(s, false)
}

// halt moves running session s to stopping and stops its container
// after the call returns; requested tells a stop asked for through the
// API from one the platform made (its timeout). Callers hold e.mu.
func (e *Emulator) halt(s *session, requested bool) {
	if requested {
		s.requestedStopAt = now()
	}
	e.setStatus(s, sandboxapi.StatusStopping)
	sb := s.sb
	e.async(sb, func(ctx context.Context) {
		err := e.haltContainer(ctx, sb)
		e.mu.Lock()
		defer e.mu.Unlock()
		if s.status != sandboxapi.StatusStopping {
			return
		}
		if err != nil {
			e.log.Warn("session_stop_failed", zap.String("sandbox", sb.name), zap.Error(err))
			e.setStatus(s, sandboxapi.StatusFailed)
			return
		}
		e.setStatus(s, sandboxapi.StatusStopped)
	})
}

// Expire ends sandbox name's running session now, as its timeout passing
// would (no requested stop; the session's timeout becomes the time it
// ran), so tests need not wait for the clock. It returns once the session
// is stopped.
func (e *Emulator) Expire(ctx context.Context, name string) error {
	e.mu.Lock()
	sb := e.byName(name)
	if sb == nil || sb.session.status != sandboxapi.StatusRunning {
		e.mu.Unlock()
		return fmt.Errorf("vercelemu: sandbox %s has no running session", name)
	}
	s := sb.session
	s.timeout = max(now()-s.startedAt, 1)
	e.log.Info("session_timed_out", zap.String("sandbox", name), zap.String("session", s.id), zap.Bool("forced", true))
	e.halt(s, false)
	e.mu.Unlock()
	return e.waitSession(ctx, s, func(st string) bool { return st == sandboxapi.StatusStopped || st == sandboxapi.StatusFailed })
}

// snapshotSession snapshots running session s: it is snapshotting while
// its container is committed to an image, then stopping, and stopped once
// its container is. It returns once the snapshot exists.
func (e *Emulator) snapshotSession(ctx context.Context, s *session, expiration *int64) (*snapshot, error) {
	sb := s.sb
	sb.ops.Lock()
	e.mu.Lock()
	if s.status != sandboxapi.StatusRunning {
		st := s.status
		e.mu.Unlock()
		sb.ops.Unlock()
		return nil, fmt.Errorf("session %s is %s", s.id, st)
	}
	t := now()
	s.snapshottedAt, s.requestedStopAt = t, t
	e.setStatus(s, sandboxapi.StatusSnapshotting)
	e.mu.Unlock()

	id := "snap_" + randhex.String(12)
	ref, size, err := e.commit(ctx, sb, id)
	e.mu.Lock()
	defer e.mu.Unlock()
	defer sb.ops.Unlock()
	if err != nil {
		e.log.Warn("snapshot_failed", zap.String("sandbox", sb.name), zap.Error(err))
		e.setStatus(s, sandboxapi.StatusFailed)
		return nil, err
	}
	t = now()
	sn := &snapshot{id: id, project: sb.project, sandboxName: sb.name, sourceSession: s.id, image: ref,
		status: sandboxapi.SnapshotCreated, sizeBytes: size, createdAt: t, updatedAt: t, parent: s.sourceSnapshot}
	if expiration != nil && *expiration > 0 {
		sn.expiresAt = t + *expiration
	}
	e.snapshots[sn.id] = sn
	sb.currentSnap = sn.id
	s.status = sandboxapi.StatusRunning // halt stops it from here
	e.halt(s, true)
	return sn, nil
}
