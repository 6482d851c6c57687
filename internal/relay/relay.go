// Package relay is the loop between a stream of events and a client: it
// writes the events to a [Sink] as they come, flushes, and writes
// keep-alive comments while the stream is silent. It is the one such loop
// behind the gateway's chat completions, the management API's event
// stream and the agent's own SSE stream.
//
// Events are written on the goroutine that reads (or produces) them, so an
// event that arrives alone is written and flushed at once, with no
// hand-over to another goroutine. The flush waits only for events that
// have already arrived: when the source is a [Readier] that has its next
// event already buffered, the event is written and the flush left for the
// last event of the burst (at most [Options.MaxBurst] events), so a burst
// costs one flush. Keep-alive comments come from a timer, under the same
// lock as the events. A failed write stops the relay: [Copy] closes its
// source and returns, [Produce]'s send fails. A failed source ends the
// relay after the events before it were flushed, and the caller ends its
// client's stream.
package relay

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// Sink is where events are written. The relay never calls it from two
// goroutines at once. Write and KeepAlive may buffer; Flush sends what
// they wrote to the client.
type Sink[E any] interface {
	// Write writes one event.
	Write(e E) error
	// KeepAlive writes a comment that keeps an idle connection open.
	KeepAlive() error
	// Flush sends what was written.
	Flush() error
}

// Source is a stream of events read by [Copy].
type Source[E any] interface {
	// Next returns the next event, blocking until there is one; io.EOF
	// ends the stream.
	Next() (E, error)
	// Close releases the source. Copy calls it, possibly from another
	// goroutine, to stop a pending Next when the relay stops early.
	Close() error
}

// Readier is a [Source] that can tell whether its next event has already
// arrived (so that Next will not wait). Copy then leaves the flush to the
// last event that arrived together with it.
type Readier interface {
	// Ready reports whether Next will return without waiting.
	Ready() bool
}

// Timer is a keep-alive timer, as [time.AfterFunc] returns.
type Timer interface {
	// Reset makes the timer fire d from now.
	Reset(d time.Duration) bool
	// Stop stops the timer.
	Stop() bool
}

// DefaultMaxBurst is the default [Options.MaxBurst].
const DefaultMaxBurst = 64

// Options configure a relay.
type Options struct {
	// KeepAlive is the silence after which Sink.KeepAlive is called (and
	// flushed); 0 means never.
	KeepAlive time.Duration
	// MaxBurst caps the events written between two flushes. Default
	// [DefaultMaxBurst].
	MaxBurst int
	// AfterFunc starts the keep-alive timer, which calls f; nil means
	// [time.AfterFunc]. Tests inject one to drive time.
	AfterFunc func(d time.Duration, f func()) Timer
}

// ErrStopped is returned by the send function of [Produce] once its
// context has ended: the producer should stop.
var ErrStopped = errors.New("relay: stopped")

// WriteError is returned when the sink failed (typically: the client is
// gone).
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "relay: write: " + e.Err.Error() }

func (e *WriteError) Unwrap() error { return e.Err }

// Copy relays the events of src to dst until src ends, dst fails or ctx
// ends. It returns nil when src ended with io.EOF and all its events were
// flushed; src's error (after flushing the events before it) when reading
// broke off; a *[WriteError] when dst failed; ctx's error when ctx ended
// first. When it stops before src ends it closes src. Copy reads and
// writes on the calling goroutine.
func Copy[E any](ctx context.Context, dst Sink[E], src Source[E], o Options) error {
	closeSrc := sync.OnceFunc(func() { _ = src.Close() })
	r := newRelay(dst, o, closeSrc)
	defer r.stop()
	defer context.AfterFunc(ctx, func() {
		r.cancel()
		closeSrc()
	})()
	ready, _ := src.(Readier)
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return r.end(ctx, nil)
		}
		if err != nil {
			return r.end(ctx, err)
		}
		if r.put(e, ready != nil && ready.Ready()) != nil {
			closeSrc()
			return r.end(ctx, nil)
		}
	}
}

// Produce relays the events that produce sends, until produce returns,
// dst fails or ctx ends. produce runs on the calling goroutine; send
// writes and flushes the event and returns a *[WriteError] once dst has
// failed, [ErrStopped] once ctx has ended: produce should then stop.
// (A producer that pushes events cannot tell whether more are waiting,
// so every event is flushed at once.) Produce returns nil when produce
// returned nil; produce's error; the *WriteError or ctx's error that
// stopped it.
func Produce[E any](ctx context.Context, dst Sink[E], o Options, produce func(send func(E) error) error) error {
	r := newRelay(dst, o, nil)
	defer r.stop()
	defer context.AfterFunc(ctx, r.cancel)()
	err := produce(func(e E) error { return r.put(e, false) })
	return r.end(ctx, err)
}

// relay is the state shared by the producing goroutine and the
// keep-alive timer.
type relay[E any] struct {
	mu       sync.Mutex
	dst      Sink[E]
	o        Options
	timer    Timer  // nil without keep-alives
	onFail   func() // called (unlocked) when a keep-alive write fails
	unsent   int    // events written since the last flush
	err      error  // the sink's failure (a *WriteError), or ErrStopped
	finished bool   // no writes any more
}

func newRelay[E any](dst Sink[E], o Options, onFail func()) *relay[E] {
	if o.MaxBurst <= 0 {
		o.MaxBurst = DefaultMaxBurst
	}
	if o.AfterFunc == nil {
		o.AfterFunc = func(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
	}
	r := &relay[E]{dst: dst, o: o, onFail: onFail}
	if o.KeepAlive > 0 {
		r.mu.Lock()
		r.timer = o.AfterFunc(o.KeepAlive, r.keepAlive)
		r.mu.Unlock()
	}
	return r
}

// put writes e, and flushes unless more events have already arrived
// (and fewer than MaxBurst wait for the flush).
func (r *relay[E]) put(e E, more bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if err := r.dst.Write(e); err != nil {
		return r.fail(err)
	}
	r.unsent++
	if more && r.unsent < r.o.MaxBurst {
		return nil
	}
	return r.flush()
}

// flush flushes what was written and counts the silence from now.
func (r *relay[E]) flush() error {
	r.unsent = 0
	if err := r.dst.Flush(); err != nil {
		return r.fail(err)
	}
	if r.timer != nil {
		r.timer.Reset(r.o.KeepAlive)
	}
	return nil
}

// fail records the sink's failure; every later write returns it.
func (r *relay[E]) fail(err error) error {
	r.err = &WriteError{err}
	return r.err
}

// keepAlive is the timer's: after a silence, a comment, flushed.
func (r *relay[E]) keepAlive() {
	r.mu.Lock()
	if r.finished || r.err != nil {
		r.mu.Unlock()
		return
	}
	err := r.dst.KeepAlive()
	if err == nil {
		err = r.flush()
	} else {
		err = r.fail(err)
	}
	if err == nil {
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	if r.onFail != nil {
		r.onFail()
	}
}

// cancel stops the relay when its context ends.
func (r *relay[E]) cancel() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = ErrStopped
	}
}

// end flushes what is unsent and says how the relay ended: the sink's
// failure, ctx's end, or the source's err.
func (r *relay[E]) end(ctx context.Context, err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil && r.unsent > 0 {
		_ = r.flush()
	}
	r.finished = true
	switch {
	case r.err == ErrStopped:
		return ctx.Err()
	case r.err != nil:
		return r.err
	}
	return err
}

// stop ends the keep-alives.
func (r *relay[E]) stop() {
	r.mu.Lock()
	r.finished = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
}
