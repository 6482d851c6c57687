package server

import (
	"net/http"
	"sync"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
)

// sleepClaimTTL is how long a sleep claim holds when its gateway neither
// puts the agent to sleep nor releases the claim (it died meanwhile).
const sleepClaimTTL = 2 * time.Minute

// sleepClaim arbitrates between gateways that share the agent: one of
// them puts it to sleep, and only when no turn runs and none of them has
// used it for the idle time asked. While the claim holds, new turns are
// refused with 409 "sleeping" (their gateway waits for the sleep to end,
// then wakes the agent).
type sleepClaim struct {
	mu    sync.Mutex
	until time.Time // zero: no claim
}

// held reports whether a claim holds now.
func (c *sleepClaim) held(now time.Time) bool { return now.Before(c.until) }

// claimSleep answers POST /sleep_claim: granted when no turn runs, the
// agent has been idle for at least min_idle_seconds and no other claim
// holds; otherwise refused with why, and how long it has been idle.
func (s *Server) claimSleep(w http.ResponseWriter, r *http.Request) {
	var req agent.SleepClaimRequest
	if !decodeBody(w, r, &req, 4<<10, `sleep claim body must be JSON {"min_idle_seconds": number}`) {
		return
	}
	s.claim.mu.Lock()
	defer s.claim.mu.Unlock()
	now := time.Now()
	idle, free := s.opts.Runner.Idle(now)
	out := agent.SleepClaim{IdleSeconds: idle.Seconds()}
	switch {
	case !free:
		out.Reason = agent.ClaimBusy
	case s.claim.held(now):
		out.Reason = agent.ClaimTaken
	case out.IdleSeconds < req.MinIdleSeconds:
		out.Reason = agent.ClaimRecentlyUsed
	default:
		s.claim.until = now.Add(sleepClaimTTL)
		out.Granted = true
	}
	writeJSON(w, http.StatusOK, out)
}

// releaseSleep answers DELETE /sleep_claim: the gateway did not put the
// agent to sleep after all, and turns are taken again.
func (s *Server) releaseSleep(w http.ResponseWriter, _ *http.Request) {
	s.claim.mu.Lock()
	s.claim.until = time.Time{}
	s.claim.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// beginUnlessSleeping runs begin (which starts a turn) unless a sleep
// claim holds; then it answers 409 "sleeping" and reports false. The
// check and the start are one step under the claim's lock, so a claim is
// never granted between them.
func (s *Server) beginUnlessSleeping(w http.ResponseWriter, begin func() bool) bool {
	s.claim.mu.Lock()
	defer s.claim.mu.Unlock()
	if s.claim.held(time.Now()) {
		writeError(w, http.StatusConflict, agent.CodeSleeping,
			"the agent is being put to sleep by a gateway; wake it and send again")
		return false
	}
	return begin()
}
