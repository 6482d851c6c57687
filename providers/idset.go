package providers

import (
	"sync"
	"time"
)

// IDSet holds agent ids a provider keeps track of itself: the agents it
// is creating (its List and event watcher leave them out) or putting to
// sleep (its watcher reports their stop as ReasonSlept rather than a
// death). The zero value is ready to use; its methods are safe for
// concurrent use.
type IDSet struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

// Mark adds id.
func (s *IDSet) Mark(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]struct{}{}
	}
	s.ids[id] = struct{}{}
}

// Forget ends what Mark recorded (the agent is created, woken or
// removed).
func (s *IDSet) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ids, id)
}

// Has reports whether id is marked and not forgotten.
func (s *IDSet) Has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

// goneTTL is how long a GoneSet remembers an id.
const goneTTL = time.Hour

// GoneSet holds the ids of the agents a provider destroyed itself in the
// last hour, so that its event watcher does not report their
// disappearance as a death. The zero value is ready to use; its methods
// are safe for concurrent use.
type GoneSet struct {
	mu  sync.Mutex
	ids map[string]time.Time
}

// Mark records that the provider destroys id now, and drops the ids
// marked more than an hour ago.
func (s *GoneSet) Mark(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, at := range s.ids {
		if now.Sub(at) > goneTTL {
			delete(s.ids, k)
		}
	}
	if s.ids == nil {
		s.ids = map[string]time.Time{}
	}
	s.ids[id] = now
}

// Has reports whether the provider destroyed id (in the last hour).
func (s *GoneSet) Has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}
