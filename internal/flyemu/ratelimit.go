package flyemu

import (
	"time"

	"github.com/agcluster/caddy-agcluster/internal/ratebucket"
)

// Limit is a token bucket: PerSecond requests a second, Burst at once.
type Limit struct {
	// PerSecond is the sustained rate.
	PerSecond float64
	// Burst is how many requests may come at once.
	Burst int
}

// RateLimits are the Machines API's limits. Fly documents "1 request per
// second per action per machine, short-term burstable up to 3; Get Machine
// 5 req/s, burstable to 10". An action is one route (create, start, stop,
// wait, lease, ...) on one machine; create and list count per app.
type RateLimits struct {
	// Off disables rate limiting.
	Off bool
	// Action limits each non-GET route and /wait per machine (create per
	// app); zero = {1, 3}.
	Action Limit
	// Get limits GET of a machine, of its lease and metadata, and list
	// (per app); zero = {5, 10}.
	Get Limit
}

// Fly's documented defaults.
var (
	defaultAction = Limit{PerSecond: 1, Burst: 3}
	defaultGet    = Limit{PerSecond: 5, Burst: 10}
)

// limiter keeps one bucket per (route, machine or app).
type limiter struct {
	limits  RateLimits
	buckets ratebucket.Buckets
}

func newLimiter(l RateLimits) *limiter {
	if l.Action == (Limit{}) {
		l.Action = defaultAction
	}
	if l.Get == (Limit{}) {
		l.Get = defaultGet
	}
	return &limiter{limits: l}
}

// allow takes a token from key's bucket; when none is left it returns
// false and how long until one is.
func (l *limiter) allow(key string, get bool) (bool, time.Duration) {
	if l.limits.Off {
		return true, 0
	}
	lim := l.limits.Action
	if get {
		lim = l.limits.Get
	}
	return l.buckets.Take(key, 1, lim.PerSecond, lim.Burst)
}
