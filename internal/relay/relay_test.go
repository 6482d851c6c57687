package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	errBoom   = errors.New("boom")
	errClosed = errors.New("source closed")
)

// recorder is a Sink that logs what it is asked to do: "ev:<e>",
// "keep-alive" and "flush". It fails the failAt-th call of kind failOn
// ("write", "keep-alive" or "flush").
type recorder struct {
	mu     sync.Mutex
	log    []string
	failOn string
	failAt int // 1-based
	calls  map[string]int
}

func (s *recorder) do(kind, entry string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[kind]++
	if kind == s.failOn && s.calls[kind] == s.failAt {
		return errBoom
	}
	s.log = append(s.log, entry)
	return nil
}

func (s *recorder) Write(e string) error { return s.do("write", "ev:"+e) }
func (s *recorder) KeepAlive() error     { return s.do("keep-alive", "keep-alive") }
func (s *recorder) Flush() error         { return s.do("flush", "flush") }

func (s *recorder) entries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// clock drives the keep-alive timer by hand: fire runs its function as
// the timer would after a silence.
type clock struct {
	f       func()
	started int
	resets  int
	stops   int
}

func (c *clock) afterFunc(_ time.Duration, f func()) Timer {
	c.f = f
	c.started++
	return (*clockTimer)(c)
}

func (c *clock) fire() { c.f() }

type clockTimer clock

func (t *clockTimer) Reset(time.Duration) bool { t.resets++; return true }
func (t *clockTimer) Stop() bool               { t.stops++; return true }

// step is one event of a scripted source.
type step struct {
	ev    string
	ticks int  // silences before the event: the timer fires while Next waits
	ready bool // the next event arrived together with this one
}

func lone(evs ...string) []step {
	var out []step
	for _, e := range evs {
		out = append(out, step{ev: e})
	}
	return out
}

func burst(evs ...string) []step {
	out := lone(evs...)
	for i := range len(out) - 1 {
		out[i].ready = true
	}
	return out
}

func steps(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// source is a scripted Readier Source. After its steps it returns end, or
// with block waits until it is closed. At each Next it records the sink's
// log, and at Next number cancelAt (1-based) it calls cancel and waits
// until it is closed.
type source struct {
	steps    []step
	end      error
	block    bool
	clock    *clock
	sink     *recorder
	cancelAt int
	cancel   func()

	i       int
	nexts   int
	seen    [][]string // the sink's log at each Next
	closed  chan struct{}
	closing sync.Once
	isShut  atomic.Bool
}

func newSource(st []step, end error) *source {
	return &source{steps: st, end: end, closed: make(chan struct{})}
}

func (s *source) Next() (string, error) {
	s.nexts++
	if s.sink != nil {
		s.seen = append(s.seen, s.sink.entries())
	}
	if s.nexts == s.cancelAt {
		s.cancel()
		<-s.closed
	}
	if s.isShut.Load() {
		return "", errClosed
	}
	if s.i == len(s.steps) {
		if s.block {
			<-s.closed
			return "", errClosed
		}
		return "", s.end
	}
	st := s.steps[s.i]
	s.i++
	for range st.ticks {
		s.clock.fire()
	}
	if s.isShut.Load() { // a keep-alive failed and closed it
		return "", errClosed
	}
	return st.ev, nil
}

func (s *source) Ready() bool { return s.i > 0 && s.steps[s.i-1].ready }

func (s *source) Close() error {
	s.closing.Do(func() {
		s.isShut.Store(true)
		close(s.closed)
	})
	return nil
}

// plain hides a source's Ready.
type plain struct{ s *source }

func (p plain) Next() (string, error) { return p.s.Next() }
func (p plain) Close() error          { return p.s.Close() }

func expect(parts ...string) []string { return parts }

// TestBurstCoalescing: the events that arrived together are written
// before one flush (MaxBurst at most); an event that arrived alone is
// flushed before the relay waits for the next one.
func TestBurstCoalescing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		steps    []step
		maxBurst int
		noReady  bool
		want     []string
	}{
		{"a lone event", lone("a"), 0, false, expect("ev:a", "flush")},
		{"lone events", lone("a", "b", "c"), 0, false, expect("ev:a", "flush", "ev:b", "flush", "ev:c", "flush")},
		{"a burst", burst("a", "b", "c"), 0, false, expect("ev:a", "ev:b", "ev:c", "flush")},
		{"bursts and lone events", steps(burst("a", "b"), lone("c"), burst("d", "e")), 0, false,
			expect("ev:a", "ev:b", "flush", "ev:c", "flush", "ev:d", "ev:e", "flush")},
		{"a burst longer than MaxBurst", burst("a", "b", "c", "d", "e"), 2, false,
			expect("ev:a", "ev:b", "flush", "ev:c", "ev:d", "flush", "ev:e", "flush")},
		{"the end arrived with the last event", steps([]step{{ev: "a", ready: true}}), 0, false, expect("ev:a", "flush")},
		{"a source that cannot tell", burst("a", "b"), 0, true, expect("ev:a", "flush", "ev:b", "flush")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			src := newSource(tc.steps, io.EOF)
			src.sink = rec
			var s Source[string] = src
			if tc.noReady {
				s = plain{src}
			}
			require.NoError(t, Copy(context.Background(), rec, s, Options{MaxBurst: tc.maxBurst}))
			assert.Equal(t, tc.want, rec.entries())
			for i := 1; i < len(src.seen); i++ {
				if !tc.steps[i-1].ready || tc.noReady {
					seen := src.seen[i]
					assert.Equal(t, "flush", seen[len(seen)-1], "event %d was flushed before Next waited", i)
				}
			}
		})
	}
}

// TestKeepAliveOnSilence drives the keep-alive timer by hand: each fire
// is a silence of Options.KeepAlive while the relay waits for an event.
func TestKeepAliveOnSilence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		want  []string
	}{
		{"silence before the first event", []step{{ev: "a", ticks: 2}},
			expect("keep-alive", "flush", "keep-alive", "flush", "ev:a", "flush")},
		{"silence between events", []step{{ev: "a"}, {ev: "b", ticks: 1}},
			expect("ev:a", "flush", "keep-alive", "flush", "ev:b", "flush")},
		{"no silence, no keep-alive", lone("a", "b"), expect("ev:a", "flush", "ev:b", "flush")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			clk := &clock{}
			src := newSource(tc.steps, io.EOF)
			src.clock = clk
			require.NoError(t, Copy(context.Background(), rec, src, Options{KeepAlive: time.Second, AfterFunc: clk.afterFunc}))
			assert.Equal(t, tc.want, rec.entries())
			flushes := 0
			for _, e := range rec.entries() {
				if e == "flush" {
					flushes++
				}
			}
			assert.Equal(t, 1, clk.started)
			assert.Equal(t, flushes, clk.resets, "the silence is counted from every flush")
			assert.Equal(t, 1, clk.stops, "the timer is stopped at the end")
			clk.fire() // a timer that fires as the relay ends writes nothing
			assert.Equal(t, tc.want, rec.entries())
		})
	}
	t.Run("no timer without KeepAlive", func(t *testing.T) {
		clk := &clock{}
		rec := &recorder{}
		require.NoError(t, Copy(context.Background(), rec, newSource(lone("a"), io.EOF), Options{AfterFunc: clk.afterFunc}))
		assert.Zero(t, clk.started)
	})
}

// TestSourceErrors: the events read before the source broke off are all
// written and flushed, and Copy returns the source's error (nil for EOF).
func TestSourceErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		steps   []step
		end     error
		wantErr error
		want    []string
	}{
		{"clean end", lone("a", "b"), io.EOF, nil, expect("ev:a", "flush", "ev:b", "flush")},
		{"empty stream", nil, io.EOF, nil, nil},
		{"broken at once", nil, errBoom, errBoom, nil},
		{"broken mid-stream", lone("a", "b"), errBoom, errBoom, expect("ev:a", "flush", "ev:b", "flush")},
		{"broken after a burst's first event", steps([]step{{ev: "a", ready: true}}), errBoom, errBoom, expect("ev:a", "flush")},
		{"a wrapped EOF is a clean end", lone("a"), fmt.Errorf("read: %w", io.EOF), nil, expect("ev:a", "flush")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			src := newSource(tc.steps, tc.end)
			err := Copy(context.Background(), rec, src, Options{})
			if tc.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.wantErr)
				var we *WriteError
				assert.False(t, errors.As(err, &we), "a source error is not a write error")
			}
			assert.Equal(t, tc.want, rec.entries())
			assert.False(t, src.isShut.Load(), "a source that ended is not closed by Copy")
		})
	}
}

// TestWriteFailureStopsReading: when the sink fails, Copy reads no more:
// it closes the source (which stops a pending Next) and returns a
// *WriteError.
func TestWriteFailureStopsReading(t *testing.T) {
	for _, tc := range []struct {
		name   string
		failOn string
		failAt int
		steps  []step
		nexts  int // Next calls in all
	}{
		{"first write", "write", 1, lone("a", "b", "c"), 1},
		{"a later write", "write", 2, lone("a", "b", "c"), 2},
		{"a flush", "flush", 2, lone("a", "b", "c"), 2},
		{"the flush of a burst", "flush", 1, burst("a", "b", "c"), 3},
		{"a keep-alive while waiting", "keep-alive", 1, []step{{ev: "a"}, {ev: "b", ticks: 1}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{failOn: tc.failOn, failAt: tc.failAt}
			clk := &clock{}
			src := newSource(tc.steps, io.EOF)
			src.clock = clk
			err := Copy(context.Background(), rec, src, Options{KeepAlive: time.Second, AfterFunc: clk.afterFunc})
			var we *WriteError
			require.ErrorAs(t, err, &we)
			assert.ErrorIs(t, err, errBoom)
			assert.True(t, src.isShut.Load(), "the source is closed")
			assert.Equal(t, tc.nexts, src.nexts, "no reading after the failure")
		})
	}
}

// TestContextEndStops: the context's end stops a pending Next (by closing
// the source) and Copy returns the context's error.
func TestContextEndStops(t *testing.T) {
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	src := newSource(lone("a"), io.EOF)
	src.block = true
	src.cancelAt = 2
	src.cancel = cancel
	require.ErrorIs(t, Copy(ctx, rec, src, Options{}), context.Canceled)
	assert.True(t, src.isShut.Load())
	assert.Equal(t, expect("ev:a", "flush"), rec.entries())
}

// TestProduce: a producer's events are each flushed at once; its error
// ends the relay; once the sink failed, send fails and Produce returns
// the failure; once the context ended, send fails with ErrStopped.
func TestProduce(t *testing.T) {
	t.Run("each event flushed at once", func(t *testing.T) {
		rec := &recorder{}
		err := Produce(context.Background(), rec, Options{}, func(send func(string) error) error {
			require.NoError(t, send("a"))
			assert.Equal(t, expect("ev:a", "flush"), rec.entries())
			return send("b")
		})
		require.NoError(t, err)
		assert.Equal(t, expect("ev:a", "flush", "ev:b", "flush"), rec.entries())
	})
	t.Run("the producer's error", func(t *testing.T) {
		rec := &recorder{}
		err := Produce(context.Background(), rec, Options{}, func(send func(string) error) error {
			_ = send("a")
			return errBoom
		})
		require.ErrorIs(t, err, errBoom)
		assert.Equal(t, expect("ev:a", "flush"), rec.entries())
	})
	t.Run("send fails once the sink failed", func(t *testing.T) {
		rec := &recorder{failOn: "write", failAt: 1}
		var sendErrs []error
		err := Produce(context.Background(), rec, Options{}, func(send func(string) error) error {
			sendErrs = append(sendErrs, send("a"), send("b"))
			return nil
		})
		var we *WriteError
		require.ErrorAs(t, err, &we)
		require.Len(t, sendErrs, 2)
		for _, e := range sendErrs {
			assert.ErrorIs(t, e, errBoom)
		}
		assert.Empty(t, rec.entries())
	})
	t.Run("send fails once the context ended", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rec := &recorder{}
		r := newRelay[string](rec, Options{}, nil)
		r.cancel() // what the context's AfterFunc does
		assert.ErrorIs(t, r.put("a", false), ErrStopped)
		assert.ErrorIs(t, r.end(ctx, nil), context.Canceled)
		assert.Empty(t, rec.entries())
	})
}
