package vercelemu

import (
	"cmp"
	"time"

	"github.com/agcluster/caddy-agcluster/internal/ratebucket"
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
	buckets ratebucket.Buckets
}

func newLimiter(l RateLimits) *limiter {
	l.VCPUsPerMinute = cmp.Or(l.VCPUsPerMinute, 200)
	l.Burst = cmp.Or(l.Burst, 200)
	return &limiter{limits: l}
}

// allow takes n vCPUs from project's bucket; when they are not there it
// returns false and how long until they are.
func (l *limiter) allow(project string, n int) (bool, time.Duration) {
	if l.limits.Off {
		return true, 0
	}
	return l.buckets.Take(project, n, l.limits.VCPUsPerMinute/60, l.limits.Burst)
}
