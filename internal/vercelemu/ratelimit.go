package vercelemu

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimits are the limits the emulator applies to the vCPUs that
// creates and resumes allocate, per project: Vercel's "vCPU allocation
// rate" (Hobby 40 per 10 minutes, Pro 200 a minute, Enterprise 400 a
// minute). A refused call answers 429 with Retry-After.
type RateLimits struct {
	// Off disables rate limiting.
	Off bool
	// VCPUsPerMinute is the sustained allocation rate (default 200).
	VCPUsPerMinute float64
	// Burst is how many vCPUs may be allocated at once (default 200).
	Burst int
}

// limiter keeps one bucket per project.
type limiter struct {
	limits  RateLimits
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newLimiter(l RateLimits) *limiter {
	l.VCPUsPerMinute = orDefault(l.VCPUsPerMinute, 200)
	l.Burst = orDefault(l.Burst, 200)
	return &limiter{limits: l, buckets: map[string]*rate.Limiter{}}
}

// allow takes n vCPUs from project's bucket; when they are not there it
// returns false and how long until they are.
func (l *limiter) allow(project string, n int) (bool, time.Duration) {
	if l.limits.Off {
		return true, 0
	}
	l.mu.Lock()
	b, ok := l.buckets[project]
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.limits.VCPUsPerMinute/60), max(l.limits.Burst, 1))
		l.buckets[project] = b
	}
	l.mu.Unlock()
	now := time.Now()
	r := b.ReserveN(now, n)
	if !r.OK() {
		return false, time.Minute
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// retryAfter is the Retry-After value for d: whole seconds, at least 1.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
