package providers

import "sync"

// SleepSet holds the ids of the agents a provider is putting to sleep
// itself, so that its event watcher reports their stop as ReasonSlept
// rather than a death. The zero value is ready to use.
type SleepSet struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

// Mark records that the provider puts id to sleep.
func (s *SleepSet) Mark(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]struct{}{}
	}
	s.ids[id] = struct{}{}
}

// Forget ends what Mark recorded (the agent is woken or removed).
func (s *SleepSet) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ids, id)
}

// Has reports whether the provider put id to sleep and has not woken it.
func (s *SleepSet) Has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}
