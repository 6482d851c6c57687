package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Several gateways share one fleet of agents with no store of their own:
// the provider's backend is the source of truth. A conversation's agent has
// a name derived from the conversation (IDFor), so a gateway that has not
// seen a conversation finds its agent on the backend, and two gateways that
// create it at once make one (the backend refuses the second name; the loser
// adopts the winner's agent). What a gateway knows of the conversation
// beyond the agent (the transcript fingerprints, the client ids bound to
// it, the client tool calls it waits for) is kept with the agent
// (agent.Transcript), saved after every turn and read before the next.

// IDFor is the session id of key's conversation: the same on every gateway.
func IDFor(key Key) string {
	sum := sha256.Sum256([]byte("agcluster session\x00" + key.Owner + "\x00" + key.Conversation))
	return "sess_" + hex.EncodeToString(sum[:12])
}

// maxOpenings caps how many conversations opening with the same messages
// (and sent without a conversation id) one owner can have: the n-th is
// named openingConversation(opening, n).
const maxOpenings = 64

// openingConversation is the conversation id of the n-th conversation of
// an owner that opened with the messages whose fingerprint is opening, for
// clients that send no conversation id: any gateway derives it again from
// the history the client sends back.
func openingConversation(opening string, n int) string {
	id := generatedConversation + opening[:min(24, len(opening))]
	if n > 0 {
		id += "-" + strconv.Itoa(n)
	}
	return id
}

// provider returns the provider named name, or nil.
func (m *Manager) provider(name string) providers.Provider {
	if m.opts.Providers == nil {
		return nil
	}
	p, _ := m.opts.Providers(name)
	return p
}

// findOnBackend looks for the agent of session id on the provider named
// providerName and returns it as a session of key, made ready to use: a
// running agent is waited for until it answers (another gateway may still
// be creating it) and its transcript is read. It returns nil, nil when the
// backend has no such agent.
func (m *Manager) findOnBackend(ctx context.Context, providerName, id string, key Key) (*Session, error) {
	p := m.provider(providerName)
	if p == nil {
		return nil, nil
	}
	inst, err := providers.Find(ctx, p, id)
	if errors.Is(err, providers.ErrGone) {
		if inst, err = m.findHandedOut(ctx, p, id); inst == nil && err == nil {
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("look up session %s: %w", id, err)
	}
	if inst.Owner != "" && inst.Owner != key.Owner {
		// Not reachable by hashing: refuse rather than share.
		return nil, fmt.Errorf("look up session %s: it belongs to another owner", id)
	}
	if inst.Owner == "" {
		inst.Owner, inst.Conversation = key.Owner, key.Conversation
	}
	s := foundSession(inst, key)
	if inst.State == providers.StateRunning {
		if err := m.awaitReady(ctx, s); err != nil {
			return nil, err
		}
		s.justFound.Store(m.loadTranscript(ctx, s))
	}
	m.opts.Logger.Info("session found on the backend", zap.String("session_id", s.ID),
		zap.String("instance_id", inst.ID), zap.String("provider", inst.Provider), zap.Bool("asleep", s.Asleep()))
	return s, nil
}

// findHandedOut looks for the session's agent among the warm-pool agents
// of a provider that cannot name them for their session (not a Claimer):
// one another gateway handed out keeps its pool name until it first
// sleeps, and only its binding says whose it is. It returns nil, nil when
// no running pool agent is bound to the session, and looks only when this
// gateway has warm pools (the gateways of a fleet share one configuration).
func (m *Manager) findHandedOut(ctx context.Context, p providers.Provider, id string) (*providers.Instance, error) {
	if _, ok := p.(providers.Claimer); ok {
		return nil, nil // found by name once claimed
	}
	if ws, ok := m.opts.Source.(WarmSource); !ok || !ws.Pooling() {
		return nil, nil // no gateway of the fleet hands out warm agents
	}
	insts, err := p.List(ctx)
	if err != nil {
		return nil, err
	}
	var pooled []*providers.Instance
	for _, inst := range insts {
		if inst.Pool != "" && inst.State == providers.StateRunning {
			pooled = append(pooled, inst)
		}
	}
	var mu sync.Mutex
	var found *providers.Instance
	forEach(pooled, 8, func(inst *providers.Instance) {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := inst.Client().Binding(bctx)
		if err != nil || st.Binding == nil || st.Binding.SessionID != id {
			return
		}
		mu.Lock()
		found = inst.Bound(*st.Binding)
		mu.Unlock()
	})
	return found, nil
}

// foundSession makes the session of an agent the backend holds.
func foundSession(inst *providers.Instance, key Key) *Session {
	s := &Session{
		ID:       inst.SessionID,
		Key:      key,
		ConfigID: inst.ConfigID,
		Provider: inst.Provider,
		Created:  inst.CreatedAt,
		// A gateway-made id ("conv_...") means the client named none.
		clientNamed: !strings.HasPrefix(key.Conversation, generatedConversation),
	}
	s.setInstance(inst, inst.State == providers.StateStopped)
	s.lastUsed.Store(time.Now().UnixNano())
	return s
}

// awaitReady waits until the session's agent answers ready: an agent found
// on the backend may still be starting (another gateway creates it).
func (m *Manager) awaitReady(ctx context.Context, s *Session) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.CreateTimeout)
	defer cancel()
	if err := providers.WaitReady(ctx, s.Client()); err != nil {
		return fmt.Errorf("agent of session %s found on the backend: %w", s.ID, err)
	}
	return nil
}

// loadTranscript reads the gateways' record of the conversation from the
// session's agent. It reports whether it could; a session whose agent
// could not be asked keeps what it had.
func (m *Manager) loadTranscript(ctx context.Context, s *Session) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t, err := s.Client().Transcript(ctx)
	if err != nil {
		m.opts.Logger.Warn("could not read the conversation's transcript from its agent",
			zap.String("session_id", s.ID), zap.Error(err))
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.takeTranscriptLocked(s, t)
	return true
}

// takeTranscriptLocked puts t, as the agent holds it, in place of the
// session's own view, and indexes its fingerprints and bound ids.
func (m *Manager) takeTranscriptLocked(s *Session, t agent.Transcript) {
	s.mu.Lock()
	old := s.transcript.fingerprints()
	s.transcript = transcript{turns: t.Turns, tip: t.Tip, sentHistory: t.SentHistory}
	s.pending = t.Pending
	if len(t.Names) > 0 {
		s.clientNamed = true
	}
	fps := s.transcript.fingerprints()
	var newKeys []Key
	for _, name := range t.Names {
		if k := (Key{Owner: s.Key.Owner, Conversation: name}); s.aliasLocked(k) {
			newKeys = append(newKeys, k)
		}
	}
	s.mu.Unlock()
	if _, live := m.byID[s.ID]; !live {
		return
	}
	for _, fp := range old {
		if m.byFP[s.Key.Owner+"\x00"+fp] == s {
			delete(m.byFP, s.Key.Owner+"\x00"+fp)
		}
	}
	for _, fp := range fps {
		m.byFP[s.Key.Owner+"\x00"+fp] = s
	}
	if e, ok := m.byKey[s.Key]; ok && e.session == s {
		for _, k := range newKeys {
			if _, taken := m.byKey[k]; !taken {
				m.byKey[k] = e
			}
		}
	}
}

// saveTranscript keeps the session's record of the conversation with its
// agent, for the gateway that serves the next message. It runs before the
// answer's last bytes leave, so that the client's next request, wherever
// it lands, finds it.
func (m *Manager) saveTranscript(ctx context.Context, s *Session) {
	s.mu.Lock()
	t := agent.Transcript{Tip: s.transcript.tip, Turns: s.transcript.turns, SentHistory: s.transcript.sentHistory,
		Pending: s.pending}
	for _, k := range s.aliases {
		t.Names = append(t.Names, k.Conversation)
	}
	t = *t.Clone()
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.Client().PutTranscript(ctx, t); err != nil {
		m.opts.Logger.Warn("could not keep the conversation's transcript with its agent; another gateway may not find where it continues",
			zap.String("session_id", s.ID), zap.Error(err))
	}
}

// refresh brings a session this gateway knew already up to date with its
// agent before a turn: another gateway may have run turns in it since (its
// transcript), put it to sleep or re-created it (its instance). It
// reports whether it had to wake the agent.
func (m *Manager) refresh(ctx context.Context, s *Session) (woke bool) {
	if m.loadTranscript(ctx, s) {
		return false
	}
	if _, err := m.sleeper(s.Provider); err != nil {
		return false
	}
	m.logWaking(s, errors.New("its transcript could not be read"))
	if err := m.wakeFound(ctx, s); err != nil {
		return false // the turn finds out
	}
	m.loadTranscript(ctx, s)
	return true
}

// logWaking tells that the session's agent, which the gateway took for
// awake, is woken because a call found it unreachable (why) or being put
// to sleep by another gateway.
func (m *Manager) logWaking(s *Session, why error) {
	m.opts.Logger.Warn("session agent unreachable; waking it", zap.String("session_id", s.ID),
		zap.String("instance_id", s.Instance().ID), zap.Error(why))
}

// relocate finds the session's agent on the backend again, by its
// session id, after a call for it found its instance gone: another
// gateway may have re-created it under a new instance id (a warm agent
// put to sleep). It reports whether the agent was found.
func (m *Manager) relocate(ctx context.Context, s *Session) bool {
	p := m.provider(s.Provider)
	if p == nil {
		return false
	}
	inst, err := providers.Find(ctx, p, s.ID)
	if err != nil || inst.ID == s.Instance().ID {
		return false
	}
	s.setInstance(inst, inst.State == providers.StateStopped)
	m.opts.Logger.Info("session agent found under a new instance", zap.String("session_id", s.ID),
		zap.String("instance_id", inst.ID))
	return true
}

// foundAsleep reports whether the session's agent, which did not answer
// its sleep claim, is stopped or stopping on the backend (another gateway
// put it to sleep: the agent server exits before its container is
// stopped); the session is then marked asleep. An agent still running
// after the stop grace is not: the caller puts it to sleep.
func (m *Manager) foundAsleep(ctx context.Context, s *Session) bool {
	if err := m.awaitStopped(ctx, s, stopGrace); err != nil {
		return false
	}
	m.opts.Logger.Info("session found asleep", zap.String("session_id", s.ID), zap.String("instance_id", s.Instance().ID))
	return true
}

// stopGrace is how long a gateway gives an agent that stopped answering to
// be found stopped (a stop takes up to the platform's grace, 10 s on
// Docker), before it puts the agent to sleep itself.
const stopGrace = 15 * time.Second

// awaitSleep waits until another gateway has put the session's agent to
// sleep (the agent refused a turn as "sleeping") and marks the session
// asleep: the caller wakes it next.
func (m *Manager) awaitSleep(ctx context.Context, s *Session) error {
	return m.awaitStopped(ctx, s, 3*time.Minute) // the claim holds two
}

// awaitStopped waits up to within until the backend holds the session's
// agent stopped (or gone), and marks the session asleep.
func (m *Manager) awaitStopped(ctx context.Context, s *Session, within time.Duration) error {
	p := m.provider(s.Provider)
	if p == nil {
		return fmt.Errorf("session %s: provider %q is not configured: %w", s.ID, s.Provider, providers.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		inst, err := providers.Find(ctx, p, s.ID)
		switch {
		case errors.Is(err, providers.ErrGone):
			return nil // the wake finds out
		case err == nil && inst.State == providers.StateStopped:
			s.setInstance(inst, true)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("session %s: waiting for its agent to stop: %w", s.ID, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// transcriptFingerprints lists the fingerprints the session answers to.
func (s *Session) transcriptFingerprints() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transcript.fingerprints()
}

// continues reports whether the session's transcript knows one of the
// history prefixes (beyond the empty one): a request with that history
// continues this conversation.
func (s *Session) continues(prefixes []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fp := range prefixes[min(1, len(prefixes)):] {
		if _, ok := s.transcript.turns[fp]; ok || fp == s.transcript.tip && fp != "" {
			return true
		}
	}
	return false
}

// named reports whether the client conversation id conv names the
// session.
func (s *Session) named(conv string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Key.Conversation == conv {
		return true
	}
	return slices.ContainsFunc(s.aliases, func(k Key) bool { return k.Conversation == conv })
}

// isClientNamed reports whether a client's conversation id names the
// session.
func (s *Session) isClientNamed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientNamed
}

// wakeFound wakes the session's agent; when its instance is gone, the
// agent is looked for again by its session id (another gateway may have
// re-created it) and woken if it sleeps there.
func (m *Manager) wakeFound(ctx context.Context, s *Session) error {
	err := m.wake(ctx, s)
	if !errors.Is(err, providers.ErrGone) || !m.relocate(ctx, s) {
		return err
	}
	if s.Asleep() {
		return m.wake(ctx, s)
	}
	return nil
}

// syncEvery is the least time between two listings of the fleet by Sync.
const syncEvery = time.Second

// Sync lists every provider's agents and takes in the sessions this
// gateway has not seen (made or served by another gateway sharing the
// fleet), so that listings show the whole fleet. Warm agents are left to
// the pool; a warm agent handed out by another gateway shows once it has
// slept (then the backend holds its session) or once its conversation is
// served here. Calls closer than a second to the previous one return at
// once.
func (m *Manager) Sync(ctx context.Context) {
	if m.opts.AllProviders == nil {
		return
	}
	m.mu.Lock()
	if time.Since(m.synced) < syncEvery {
		m.mu.Unlock()
		return
	}
	m.synced = time.Now()
	m.mu.Unlock()
	var found []*providers.Instance
	for _, p := range m.opts.AllProviders() {
		insts, err := p.List(ctx)
		if err != nil {
			m.opts.Logger.Warn("fleet listing failed", zap.String("provider", p.Name()), zap.Error(err))
			continue
		}
		for _, inst := range insts {
			if inst.Pool == "" {
				found = append(found, inst)
			}
		}
	}
	if n := m.Adopt(found); n > 0 {
		m.opts.Logger.Info("sessions of other gateways taken in", zap.Int("count", n))
	}
}

// Find returns the owner's session by id, looking on every provider's
// backend when this gateway does not know it (another gateway made it).
func (m *Manager) Find(ctx context.Context, owner, id string) (*Session, error) {
	if s, err := m.Get(owner, id); err == nil {
		return s, nil
	}
	m.Sync(ctx)
	return m.Get(owner, id)
}
