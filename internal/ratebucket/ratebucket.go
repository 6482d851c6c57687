// Package ratebucket keeps token buckets by key, as the platform
// emulators apply their APIs' rate limits (one bucket per route and
// machine, per project, ...), and says how long a refused caller waits.
package ratebucket

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Buckets keeps one token bucket per key. The zero value is ready; its
// methods are safe for concurrent use.
type Buckets struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// Take takes n tokens from key's bucket, made on first use with the
// sustained rate perSecond and burst (at least 1). When the tokens are
// not there it takes none and returns false and how long until they are
// (a minute when n is more than the burst).
func (b *Buckets) Take(key string, n int, perSecond float64, burst int) (bool, time.Duration) {
	b.mu.Lock()
	l, ok := b.m[key]
	if !ok {
		if b.m == nil {
			b.m = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))
		b.m[key] = l
	}
	b.mu.Unlock()
	now := time.Now()
	r := l.ReserveN(now, n)
	if !r.OK() {
		return false, time.Minute
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// RetryAfter is the Retry-After header value for d: whole seconds, at
// least 1.
func RetryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
