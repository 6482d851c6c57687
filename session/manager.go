// Package session maps conversations to agents: who owns which session,
// creating each agent once however many requests race for it, one turn at
// a time per session, sleep at idle and wake on the next message, retention,
// deaths, rediscovery and limits. Every call for an agent goes through the
// provider that made it (Instance.Provider).
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Errors Acquire returns (wrapped with detail).
var (
	// ErrBusy: the conversation's agent is running another turn.
	ErrBusy = errors.New("conversation is busy")
	// ErrLimit: max_sessions or the per-owner limit is reached.
	ErrLimit = errors.New("session limit reached")
	// ErrNotFound: a session id that does not exist for this owner.
	ErrNotFound = errors.New("session not found")
	// ErrClosed: the manager is shutting down.
	ErrClosed = errors.New("session manager closed")
	// ErrAgentLost: a turn found the session's agent gone with its
	// workspace (before its provider's event said so). The session is
	// forgotten: acquiring the conversation again starts it over in a new
	// agent, with Lease.Restarted.
	ErrAgentLost = errors.New("the conversation's agent is gone")
)

// Key identifies a conversation: an owner and the owner's conversation id.
// Owners never see each other's sessions, even with equal conversation ids.
type Key struct {
	// Owner is an opaque owner id (a hash; never a key in clear).
	Owner string
	// Conversation is the client's conversation id.
	Conversation string
}

// Source hands out ready agent instances. The provider itself is the
// plain source (Create); a warm pool can stand in front of it.
type Source interface {
	// Get returns a ready instance for spec.
	Get(ctx context.Context, spec providers.Spec) (*providers.Instance, error)
	// Release destroys an instance that is no longer used.
	Release(ctx context.Context, inst *providers.Instance) error
}

// ProviderSource is the Source that creates a fresh instance per session.
type ProviderSource struct {
	// Provider creates and destroys the instances.
	Provider providers.Provider
}

// Get creates an instance.
func (s ProviderSource) Get(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	return s.Provider.Create(ctx, spec)
}

// Release destroys an instance.
func (s ProviderSource) Release(ctx context.Context, inst *providers.Instance) error {
	return s.Provider.Destroy(ctx, inst.ID)
}

// Options configure a [Manager].
type Options struct {
	// Source provides agent instances.
	Source Source
	// Providers finds a provider by name, for sleeping, waking and
	// reconciling agents (nil: no agent sleeps; idle ones are destroyed).
	Providers func(name string) (providers.Provider, bool)
	// AllProviders lists the configured providers, for Sync (nil: Sync
	// does nothing).
	AllProviders func() []providers.Provider
	// IdleTimeout puts sessions unused this long to sleep, or destroys
	// them when their provider cannot sleep (0 = never).
	IdleTimeout time.Duration
	// Retention destroys sessions asleep this long (0 = keep until
	// deleted).
	Retention time.Duration
	// MaxSessions caps live (awake) agents in total (0 = no cap).
	MaxSessions int
	// MaxSessionsPerOwner caps live agents per owner (0 = no cap).
	MaxSessionsPerOwner int
	// MaxConversations caps conversations, awake or asleep, in total (0 =
	// no cap).
	MaxConversations int
	// MaxConversationsPerOwner caps conversations, awake or asleep, per
	// owner (0 = no cap).
	MaxConversationsPerOwner int
	// OnWake is told of every wake: the provider's name, how long it took
	// and its outcome: WakeOK, WakeGone (the agent was gone and the
	// conversation starts over) or WakeFailed.
	OnWake func(provider string, took time.Duration, outcome string)
	// MaxConcurrentCreates caps instance creations in progress at once
	// (default 4); more wait their turn. Starting many agents at once on a
	// small host makes every one of them slow.
	MaxConcurrentCreates int
	// CreateTimeout bounds the creation of one instance (default 15m; the
	// provider's own ready timeout usually ends a failed creation sooner).
	CreateTimeout time.Duration
	// Logger receives lifecycle logs; nil discards them.
	Logger *zap.Logger
}

// Session is one conversation's agent.
type Session struct {
	// ID is the session id clients may send back as X-Session-ID.
	ID string
	// Key is the owner and conversation.
	Key Key
	// ConfigID names the agent configuration.
	ConfigID string
	// Provider names the provider that runs the session's agent.
	Provider string
	// Created is when the session was created.
	Created time.Time
	// Warm reports that the session's agent came ready from the warm pool.
	Warm bool

	justFound atomic.Bool // found on the backend with its transcript for the request at hand

	idleTimeout time.Duration // 0 = the manager's
	busy        atomic.Bool
	lastUsed    atomic.Int64 // unix nanos
	turns       atomic.Int64

	mu      sync.Mutex
	inst    *providers.Instance
	client  *agentclient.Client
	asleep  bool
	sleptAt time.Time
	falling chan struct{} // closed when the sleep under way ends (nil: none)

	transcript  transcript // the turns as the client will send them back
	clientNamed bool       // a client's conversation id names the session
	aliases     []Key      // conversation ids bound to the session after it was made
	pending     []string   // client tool calls the agent's turn waits for
}

// Status values of a session.
const (
	StatusRunning  = "running"
	StatusBusy     = "busy"
	StatusSleeping = "sleeping"
)

// Instance is the session's agent as its provider last reported it.
func (s *Session) Instance() *providers.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inst
}

// Client is the session's agent client.
func (s *Session) Client() *agentclient.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// Asleep reports whether the session's agent sleeps (stopped, workspace
// kept): the next turn wakes it.
func (s *Session) Asleep() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asleep
}

// Status is "sleeping", "busy" (a turn runs) or "running".
func (s *Session) Status() string {
	switch {
	case s.Asleep():
		return StatusSleeping
	case s.Busy():
		return StatusBusy
	}
	return StatusRunning
}

// fallingAsleep returns a channel closed when the sleep under way ends, or
// nil when none is.
func (s *Session) fallingAsleep() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.falling
}

// learnTurns takes the agent's own turn count when it knows of more turns
// than the session (a session found after a restart counts from zero).
func (s *Session) learnTurns(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := s.Client().Stats(ctx); err == nil {
		for cur := s.turns.Load(); st.Turns > cur && !s.turns.CompareAndSwap(cur, st.Turns); cur = s.turns.Load() {
		}
	}
}

// setInstance records the agent as its provider now reports it.
func (s *Session) setInstance(inst *providers.Instance, asleep bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inst, s.client = inst, inst.Client()
	if asleep && !s.asleep {
		s.sleptAt = time.Now()
	}
	s.asleep = asleep
}

// restartSleep counts the session's sleep (toward the retention) from
// now.
func (s *Session) restartSleep() {
	s.mu.Lock()
	s.sleptAt = time.Now()
	s.mu.Unlock()
}

// LastUsed is when the last turn ended (or the session was created).
func (s *Session) LastUsed() time.Time { return time.Unix(0, s.lastUsed.Load()) }

// Busy reports whether a turn runs.
func (s *Session) Busy() bool { return s.busy.Load() }

// Turns counts finished turns.
func (s *Session) Turns() int64 { return s.turns.Load() }

// entry is a session, or a pending creation others wait for.
type entry struct {
	ready   chan struct{} // closed when creation ended
	session *Session      // set on success
	err     error         // set on failure
}

// Manager owns the sessions.
type Manager struct {
	opts Options

	mu            sync.Mutex
	byKey         map[Key]*entry
	byID          map[string]*Session
	byFP          map[string]*Session // owner + "\x00" + a transcript fingerprint of the session
	pending       int                 // creations in progress
	waking        int                 // wakes in progress
	perOwner      map[string]int      // sessions, awake or asleep, and creations in progress
	ownerPending  map[string]int      // creations and wakes in progress
	ownerCreating map[string]int      // creations in progress
	died          map[Key]time.Time   // conversations whose agent was lost, until their next session
	closed        bool
	synced        time.Time // the latest Sync

	idleTimeout atomic.Int64  // time.Duration; changed by Reconfigure
	retention   atomic.Int64  // time.Duration; changed by Reconfigure
	creating    chan struct{} // a slot per creation in progress
	rearm       chan struct{} // tells the reaper its timeouts changed
	stop        chan struct{}
	wg          sync.WaitGroup
}

// NewManager returns a manager and starts its idle reaper.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.CreateTimeout <= 0 {
		opts.CreateTimeout = 15 * time.Minute
	}
	if opts.MaxConcurrentCreates <= 0 {
		opts.MaxConcurrentCreates = 4
	}
	m := &Manager{
		opts:          opts,
		byKey:         map[Key]*entry{},
		byID:          map[string]*Session{},
		byFP:          map[string]*Session{},
		perOwner:      map[string]int{},
		ownerPending:  map[string]int{},
		ownerCreating: map[string]int{},
		died:          map[Key]time.Time{},
		stop:          make(chan struct{}),
		rearm:         make(chan struct{}, 1),
		creating:      make(chan struct{}, opts.MaxConcurrentCreates),
	}
	m.idleTimeout.Store(int64(opts.IdleTimeout))
	m.retention.Store(int64(opts.Retention))
	m.wg.Add(1)
	go m.reapLoop()
	return m
}

// Launch creates a session for req (its Conversation is ignored: a
// launched session is its own conversation) without starting a turn, and
// returns it.
func (m *Manager) Launch(ctx context.Context, req Request) (*Session, error) {
	req.Conversation = "launch_" + randomID()
	req.SessionID, req.Prefixes = "", nil
	l, err := m.Acquire(ctx, req)
	if err != nil {
		return nil, err
	}
	s := l.Session
	l.end(false) // no turn ran
	return s, nil
}

// Reconfigure applies new limits, idle timeout and retention; the source,
// provider lookup and logger stay. Live and sleeping sessions are kept.
func (m *Manager) Reconfigure(opts Options) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opts.MaxSessions = opts.MaxSessions
	m.opts.MaxSessionsPerOwner = opts.MaxSessionsPerOwner
	m.opts.MaxConversations = opts.MaxConversations
	m.opts.MaxConversationsPerOwner = opts.MaxConversationsPerOwner
	if opts.CreateTimeout > 0 {
		m.opts.CreateTimeout = opts.CreateTimeout
	}
	m.idleTimeout.Store(int64(opts.IdleTimeout))
	m.retention.Store(int64(opts.Retention))
	select {
	case m.rearm <- struct{}{}:
	default:
	}
}

// Adopt registers instances found by the providers (after a restart) as
// sessions, asleep when their agent is stopped, and returns how many it
// took. Instances without a session id, owner or conversation, or already
// known, are skipped.
func (m *Manager) Adopt(insts []*providers.Instance) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, inst := range insts {
		key := Key{Owner: inst.Owner, Conversation: inst.Conversation}
		if inst.SessionID == "" || key.Owner == "" || key.Conversation == "" {
			continue
		}
		if _, ok := m.byID[inst.SessionID]; ok {
			continue
		}
		if _, ok := m.byKey[key]; ok {
			continue
		}
		s := foundSession(inst, key)
		if inst.State != providers.StateStopped {
			go func() {
				s.learnTurns(context.Background())
				m.loadTranscript(context.Background(), s)
			}()
		}
		e := &entry{ready: make(chan struct{}), session: s}
		close(e.ready)
		m.byKey[key] = e
		m.byID[s.ID] = s
		m.perOwner[key.Owner]++
		n++
	}
	return n
}

// Request asks for a conversation's agent.
type Request struct {
	// Owner is the caller's opaque id.
	Owner string
	// Conversation is the client's conversation id; empty to look the
	// conversation up by its history (Prefixes) or start a new one.
	Conversation string
	// SessionID continues a session by its id (X-Session-ID).
	SessionID string
	// Prefixes are the fingerprints of every prefix of the history the
	// client sent before its new message (openai.PrefixFingerprints). A
	// request without a conversation id continues the session whose
	// transcript matches the longest of them; one with an id new to the
	// gateway adopts such a session if no client id names it yet.
	Prefixes []string
	// Opening is how the conversation opened (openai.OpeningFingerprint of
	// the request's messages): a request without a conversation id that no
	// gateway placed by its history is named by it, so that any gateway
	// finds the conversation again.
	Opening string
	// Provider names the provider for a new session's agent.
	Provider string
	// ConfigID and Config describe the agent to create if none exists.
	ConfigID string
	// Config is the agent configuration for a new session.
	Config *agent.Config
	// Image overrides the provider's agent image for a new session.
	Image string
	// Limits override the provider's resource limits for a new session.
	Limits providers.Limits
	// IdleTimeout overrides the manager's idle timeout for a new session
	// (0 = the manager's).
	IdleTimeout time.Duration
	// Admit, when set, is asked before an agent is created for a new
	// conversation (such as the owner's quota of conversations), without
	// the manager's lock: it may do I/O. An agent that replaces a lost one
	// (Lease.Restarted) is not asked about: its conversation started
	// before. Its error refuses the request as a limit does (Acquire
	// returns it as is) and no agent is created.
	Admit func(ctx context.Context) error
}

// generatedConversation prefixes the conversation ids the gateway makes
// for conversations the client sent no id for.
const generatedConversation = "conv_"

// Lease is exclusive use of a session for one turn.
type Lease struct {
	// Session is the conversation's session.
	Session *Session
	// New reports that the session was created for this request, so the
	// agent has not seen the conversation's earlier messages.
	New bool
	// Restarted reports that the conversation's previous agent was lost
	// (its workspace is gone) and this one replaces it.
	Restarted bool
	// Woke reports that the session's agent was asleep and was woken for
	// this request; it resumes the conversation with its files.
	Woke bool
	m    *Manager
	ok   atomic.Bool
}

// Acquire finds or creates the conversation's session, wakes its agent if
// it sleeps, and reserves it for one turn. A conversation this gateway has
// not seen is looked up on its provider's backend first (another gateway
// may serve it); concurrent first requests for one conversation, on this
// gateway or several, create a single agent. A request for a session that
// is running a turn (or waking) gets ErrBusy.
func (m *Manager) Acquire(ctx context.Context, req Request) (*Lease, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if req.SessionID != "" {
		s, ok := m.byID[req.SessionID]
		m.mu.Unlock()
		if !ok || s.Key.Owner != req.Owner {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, req.SessionID)
		}
		return m.leaseAwake(ctx, s, req)
	}
	key := Key{Owner: req.Owner, Conversation: req.Conversation}
	if _, known := m.byKey[key]; !known {
		if s := m.byHistoryLocked(req.Owner, req.Prefixes); s != nil {
			if key.Conversation == "" {
				key = s.Key
			} else if m.bindLocked(s, key) {
				m.opts.Logger.Info("conversation id bound to the session its history continues",
					zap.String("session_id", s.ID), zap.String("conversation", key.Conversation))
			}
		}
	}
	if key.Conversation != "" {
		if e, ok := m.byKey[key]; ok {
			m.mu.Unlock()
			return m.leaseEntry(ctx, e, req)
		}
	}
	m.mu.Unlock()
	if key.Conversation == "" {
		return m.acquireUnnamed(ctx, req)
	}
	return m.acquireNamed(ctx, key, req)
}

// leaseEntry waits for e's creation (or lookup) to end and leases its
// session.
func (m *Manager) leaseEntry(ctx context.Context, e *entry, req Request) (*Lease, error) {
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.err != nil {
		return nil, e.err
	}
	return m.leaseAwake(ctx, e.session, req)
}

// reserve claims key on this gateway for a lookup or creation that others
// wait for. It returns nil and the existing entry when key is taken.
func (m *Manager) reserve(key Key) (mine, existing *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.byKey[key]; ok {
		return nil, e
	}
	e := &entry{ready: make(chan struct{})}
	m.byKey[key] = e
	return e, nil
}

// settle ends the reservation e of key: with s registered under key (and
// counted in its owner's conversations), or with err for whoever waits on
// e.
func (m *Manager) settle(e *entry, key Key, s *Session, err error) *Session {
	m.mu.Lock()
	if err != nil {
		delete(m.byKey, key)
		e.err = err
	} else {
		if known, ok := m.byID[s.ID]; ok {
			s = known // found meanwhile under another of its ids
		} else {
			m.byID[s.ID] = s
			m.perOwner[s.Key.Owner]++
			for _, fp := range s.transcriptFingerprints() {
				m.byFP[s.Key.Owner+"\x00"+fp] = s
			}
			if s.Key != key {
				if se, ok := m.byKey[s.Key]; !ok || se == e {
					m.byKey[s.Key] = e
				}
			}
		}
		e.session = s
	}
	m.mu.Unlock()
	close(e.ready)
	return s
}

// acquireNamed serves a conversation id this gateway does not know: its
// agent on the backend (by the id's session name, else, for a client that
// names its conversation from the second message on, by how it opened),
// else a new one. A creation that loses a race with another gateway
// adopts the winner's agent.
func (m *Manager) acquireNamed(ctx context.Context, key Key, req Request) (*Lease, error) {
	e, existing := m.reserve(key)
	if e == nil {
		return m.leaseEntry(ctx, existing, req)
	}
	id := IDFor(key)
	lostRace := false // a creation failed: another gateway made the agent
	for attempt := 0; ; attempt++ {
		s, err := m.findOnBackend(ctx, req.Provider, id, key)
		if err == nil && s == nil && len(req.Prefixes) > 1 && !lostRace {
			s, err = m.findByOpening(ctx, key, req)
		}
		if lostRace && err == nil && (s == nil || s.Asleep()) && attempt < maxRaceWaits {
			// The winner's agent is not all there yet (its objects made,
			// not started): it shows as missing or stopped meanwhile.
			if werr := raceWait(ctx, attempt); werr != nil {
				m.settle(e, key, nil, werr)
				return nil, werr
			}
			continue
		}
		if err != nil || s != nil {
			if s = m.settle(e, key, s, err); err != nil {
				return nil, err
			}
			if s.Key != key {
				s.mu.Lock()
				s.aliasLocked(key)
				s.clientNamed = true
				s.mu.Unlock()
			}
			return m.leaseAwake(ctx, s, req)
		}
		l, err := m.createReserved(ctx, e, key, id, req)
		if errors.Is(err, providers.ErrExists) && attempt < maxRaceWaits {
			lostRace = true
			if werr := raceWait(ctx, attempt); werr != nil {
				m.settle(e, key, nil, werr)
				return nil, werr
			}
			continue
		}
		if errors.Is(err, providers.ErrExists) {
			m.settle(e, key, nil, err)
		}
		return l, err
	}
}

// maxRaceWaits bounds how often a gateway that lost a creation race looks
// for the winner's agent (about 10 s in all, see raceWait).
const maxRaceWaits = 15

// raceWait waits before the attempt-th look for the agent another gateway
// is making: a little longer each time, at most a second.
func raceWait(ctx context.Context, attempt int) error {
	select {
	case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second)):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acquireUnnamed serves a request without a conversation id that this
// gateway cannot place by its history: the conversation another gateway
// serves (found by how it opened), or a new one named by its opening
// (openingConversation), so that any gateway finds it again.
func (m *Manager) acquireUnnamed(ctx context.Context, req Request) (*Lease, error) {
	if req.Opening == "" {
		return m.acquireNew(ctx, Key{Owner: req.Owner, Conversation: generatedConversation + randomID()}, req)
	}
	start := 0
	if len(req.Prefixes) > 1 {
		s, n, err := m.probeOpenings(ctx, req.Owner, req, func(s *Session) bool { return s.continues(req.Prefixes) })
		if err != nil {
			return nil, err
		}
		if s != nil {
			return m.leaseAwake(ctx, s, req)
		}
		start = n
	}
	for n := start; n < maxOpenings; n++ {
		key := Key{Owner: req.Owner, Conversation: openingConversation(req.Opening, n)}
		l, err := m.acquireNew(ctx, key, req)
		if errors.Is(err, errTaken) || errors.Is(err, providers.ErrExists) {
			continue // another conversation opened the same way
		}
		return l, err
	}
	return m.acquireNew(ctx, Key{Owner: req.Owner, Conversation: generatedConversation + randomID()}, req)
}

// errTaken: the key is in use on this gateway.
var errTaken = errors.New("conversation id in use")

// acquireNew creates key's conversation, unless this gateway has it
// (errTaken) or the backend does (providers.ErrExists).
func (m *Manager) acquireNew(ctx context.Context, key Key, req Request) (*Lease, error) {
	e, _ := m.reserve(key)
	if e == nil {
		return nil, errTaken
	}
	l, err := m.createReserved(ctx, e, key, IDFor(key), req)
	if errors.Is(err, providers.ErrExists) {
		m.settle(e, key, nil, err)
	}
	return l, err
}

// findByOpening finds the conversation a client that now names it (key)
// opened without an id, on another gateway: the agent whose transcript
// names key, or continues the request's history and has no client id yet.
func (m *Manager) findByOpening(ctx context.Context, key Key, req Request) (*Session, error) {
	if req.Opening == "" {
		return nil, nil
	}
	s, _, err := m.probeOpenings(ctx, key.Owner, req, func(s *Session) bool {
		return s.named(key.Conversation) || (!s.isClientNamed() && s.continues(req.Prefixes))
	})
	return s, err
}

// probeOpenings looks on the backend at the owner's conversations named
// by req's opening, in order, for the first that match accepts (woken if
// asleep, to read its transcript). It returns that session, or nil and the
// index of the first name no agent has.
func (m *Manager) probeOpenings(ctx context.Context, owner string, req Request, match func(*Session) bool) (*Session, int, error) {
	for n := 0; n < maxOpenings; n++ {
		key := Key{Owner: owner, Conversation: openingConversation(req.Opening, n)}
		m.mu.Lock()
		e, local := m.byKey[key]
		m.mu.Unlock()
		if local {
			continue // this gateway's own, and not a match by history
		}
		s, err := m.findOnBackend(ctx, req.Provider, IDFor(key), key)
		if err != nil {
			return nil, 0, err
		}
		if s == nil {
			return nil, n, nil
		}
		if s.Asleep() {
			if err := m.wakeFound(ctx, s); err != nil {
				continue
			}
			m.loadTranscript(ctx, s)
		}
		if !match(s) {
			continue
		}
		if e, _ = m.reserve(key); e == nil {
			continue
		}
		return m.settle(e, key, s, nil), 0, nil
	}
	return nil, maxOpenings, nil
}

// createReserved creates the agent of key (reserved as e on this gateway)
// as session id and leases it for the first turn. When the backend has an
// agent of that id already (providers.ErrExists) the reservation is left
// to the caller.
func (m *Manager) createReserved(ctx context.Context, e *entry, key Key, id string, req Request) (*Lease, error) {
	if err := m.admit(ctx, key, req); err != nil {
		m.settle(e, key, nil, err)
		return nil, err
	}
	m.mu.Lock()
	if err := m.checkCreateLimitsLocked(req.Owner); err != nil {
		m.mu.Unlock()
		m.settle(e, key, nil, err)
		return nil, err
	}
	m.pending++
	m.ownerPending[req.Owner]++
	m.ownerCreating[req.Owner]++
	timeout := m.opts.CreateTimeout
	m.mu.Unlock()

	s, err := m.create(ctx, key, id, req, timeout)

	m.mu.Lock()
	m.pending--
	m.decOwnerLocked(m.ownerPending, req.Owner)
	m.decOwnerLocked(m.ownerCreating, req.Owner)
	closed := m.closed
	m.mu.Unlock()
	if errors.Is(err, providers.ErrExists) {
		return nil, err // the caller decides: adopt the agent, or another name
	}
	if err != nil {
		m.settle(e, key, nil, err)
		return nil, err
	}
	s.clientNamed = !strings.HasPrefix(key.Conversation, generatedConversation)
	m.settle(e, key, s, nil)
	if closed {
		m.destroy(s, "shutdown")
		return nil, ErrClosed
	}
	// The creator takes the first turn; a request that raced it waits on
	// e.ready above and then finds the session busy.
	l, err := m.lease(ctx, s, true)
	if err == nil {
		m.mu.Lock()
		if _, ok := m.died[key]; ok {
			l.Restarted = true
			delete(m.died, key)
		}
		m.mu.Unlock()
	}
	return l, err
}

// admit asks req.Admit, if set, whether key's new conversation may have an
// agent; the replacement of a lost agent is not a new conversation.
func (m *Manager) admit(ctx context.Context, key Key, req Request) error {
	if req.Admit == nil {
		return nil
	}
	m.mu.Lock()
	_, replacing := m.died[key]
	m.mu.Unlock()
	if replacing {
		return nil
	}
	return req.Admit(ctx)
}

// leaseAwake reserves s and wakes its agent if it sleeps. When the agent
// is gone for good the session is dropped and req starts the conversation
// over (a new agent, marked Restarted), unless req named the session by id.
func (m *Manager) leaseAwake(ctx context.Context, s *Session, req Request) (*Lease, error) {
	l, err := m.lease(ctx, s, false)
	if err != nil {
		return l, err
	}
	if !s.Asleep() {
		if !s.justFound.Swap(false) { // else its transcript was read just now
			l.Woke = m.refresh(ctx, s)
		}
		return l, nil
	}
	err = m.wakeFound(ctx, s)
	if err == nil {
		l.Woke = true
		m.loadTranscript(ctx, s)
		return l, nil
	}
	l.end(false)
	if !errors.Is(err, providers.ErrGone) {
		return nil, err
	}
	m.lose(s, err)
	if req.SessionID != "" {
		return nil, fmt.Errorf("%w: %q: its agent and workspace are gone", ErrNotFound, req.SessionID)
	}
	req.Conversation = s.Key.Conversation
	return m.Acquire(ctx, req)
}

// lose forgets s, whose agent and workspace are gone (err tells how that
// was found), and removes what is left of it: the conversation's next
// Acquire starts over in a new agent, with Lease.Restarted.
func (m *Manager) lose(s *Session, err error) {
	m.mu.Lock()
	m.forgetLocked(s)
	m.died[s.Key] = time.Now()
	m.mu.Unlock()
	m.opts.Logger.Warn("session agent is gone; the conversation starts over in a new agent",
		zap.String("session_id", s.ID), zap.String("instance_id", s.Instance().ID), zap.Error(err))
	// Before the conversation's next agent is made: it takes the same name.
	m.destroy(s, "gone")
}

// Wake wakes the session's agent if it sleeps, for calls that need the
// agent but are not turns (its files). A session running a turn is awake
// already; one being woken by another request gets ErrBusy.
func (m *Manager) Wake(ctx context.Context, s *Session) error {
	if !s.Asleep() {
		return nil
	}
	l, err := m.lease(ctx, s, false)
	if err != nil {
		return err
	}
	defer l.end(false)
	if !s.Asleep() {
		return nil
	}
	return m.wakeFound(ctx, s)
}

// wake starts a sleeping session's agent through its provider. The
// session is leased by the caller, so no turn and no other wake runs.
func (m *Manager) wake(ctx context.Context, s *Session) error {
	sl, err := m.sleeper(s.Provider)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if err := m.checkLiveLimitsLocked(s.Key.Owner); err != nil {
		m.mu.Unlock()
		return err
	}
	m.waking++
	m.ownerPending[s.Key.Owner]++
	timeout := m.opts.CreateTimeout
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.waking--
		m.decOwnerLocked(m.ownerPending, s.Key.Owner)
		m.mu.Unlock()
	}()

	// Like a creation, a wake must not fail because the requester left.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	start := time.Now()
	inst, err := sl.Wake(wctx, s.Instance().ID)
	took := time.Since(start)
	if m.opts.OnWake != nil {
		outcome := WakeOK
		switch {
		case errors.Is(err, providers.ErrGone):
			outcome = WakeGone
		case err != nil:
			outcome = WakeFailed
		}
		m.opts.OnWake(s.Provider, took, outcome)
	}
	if err != nil {
		if !errors.Is(err, providers.ErrGone) {
			m.opts.Logger.Warn("session wake failed", zap.String("session_id", s.ID),
				zap.String("instance_id", s.Instance().ID), zap.Duration("after", took), zap.Error(err))
		}
		return fmt.Errorf("wake agent of session %s: %w", s.ID, err)
	}
	s.setInstance(inst, false)
	// A suspended agent resumes with its memory: a sleep claim it held
	// would refuse turns until it expired.
	if err := inst.Client().ReleaseSleep(wctx); err != nil {
		m.opts.Logger.Debug("sleep claim not released after a wake", zap.String("session_id", s.ID), zap.Error(err))
	}
	s.learnTurns(wctx)
	m.opts.Logger.Info("session woke", zap.String("session_id", s.ID),
		zap.String("instance_id", inst.ID), zap.Duration("wake_duration", took))
	return nil
}

// Wake outcomes (Options.OnWake).
const (
	WakeOK     = "ok"
	WakeGone   = "gone"
	WakeFailed = "error"
)

// sleeper returns the provider named name as a Sleeper.
func (m *Manager) sleeper(name string) (providers.Sleeper, error) {
	if m.opts.Providers == nil {
		return nil, fmt.Errorf("provider %q: %w", name, providers.ErrUnsupported)
	}
	p, ok := m.opts.Providers(name)
	if !ok {
		return nil, fmt.Errorf("provider %q is not configured: %w", name, providers.ErrUnavailable)
	}
	sl, ok := p.(providers.Sleeper)
	if !ok {
		return nil, fmt.Errorf("provider %q cannot put agents to sleep: %w", name, providers.ErrUnsupported)
	}
	return sl, nil
}

// InstanceStopped is told that an instance stopped: it died, was killed,
// expired, or was put to sleep (by the gateway itself or by its
// platform). A session whose provider can wake agents is marked asleep:
// its workspace and CLI session survive, and the next turn wakes it.
// Otherwise the session is dropped and its leftovers removed; the
// conversation's next request gets a new agent, marked Restarted. It
// reports whether a session had the instance.
func (m *Manager) InstanceStopped(instanceID string, reason providers.EventReason) bool {
	m.mu.Lock()
	var dead *Session
	for _, s := range m.byID {
		if s.Instance().ID == instanceID {
			dead = s
			break
		}
	}
	if dead == nil {
		m.mu.Unlock()
		return false
	}
	if _, err := m.sleeper(dead.Provider); err == nil {
		m.mu.Unlock()
		if dead.Asleep() {
			// Stopped again: another gateway woke and used it meanwhile.
			dead.restartSleep()
			return true
		}
		dead.setInstance(stopped(dead.Instance()), true)
		if reason != providers.ReasonSlept {
			m.opts.Logger.Warn("session agent stopped; the next turn wakes it", zap.String("session_id", dead.ID),
				zap.String("instance_id", instanceID), zap.String("reason", string(reason)))
		}
		return true
	}
	m.forgetLocked(dead)
	m.died[dead.Key] = time.Now()
	m.mu.Unlock()
	m.opts.Logger.Warn("session agent died", zap.String("session_id", dead.ID), zap.String("instance_id", instanceID),
		zap.String("reason", string(reason)))
	m.destroy(dead, "died")
	return true
}

// Reconcile compares provider's agents as the backend lists them with the
// sessions' view, after a gap in the provider's events (an engine
// restart): awake sessions of that provider whose agent is stopped or
// missing are marked asleep, so their next turn wakes (or replaces) them.
// It returns how many it marked.
func (m *Manager) Reconcile(provider string, insts []*providers.Instance) int {
	running := map[string]bool{}
	for _, i := range insts {
		running[i.ID] = i.State != providers.StateStopped
	}
	var marked []*Session
	m.mu.Lock()
	for _, s := range m.byID {
		if s.Provider == provider && !s.Busy() && !s.Asleep() && !running[s.Instance().ID] {
			marked = append(marked, s)
		}
	}
	m.mu.Unlock()
	for _, s := range marked {
		s.setInstance(stopped(s.Instance()), true)
		m.opts.Logger.Warn("session agent found stopped; the next turn wakes it",
			zap.String("session_id", s.ID), zap.String("instance_id", s.Instance().ID))
	}
	return len(marked)
}

func stopped(inst *providers.Instance) *providers.Instance {
	out := *inst
	out.State = providers.StateStopped
	return &out
}

// checkCreateLimitsLocked applies every limit to a new conversation.
func (m *Manager) checkCreateLimitsLocked(owner string) error {
	// m.opts is read under m.mu: Reconfigure changes the limits.
	if n := m.opts.MaxConversations; n > 0 && len(m.byID)+m.pending >= n {
		return fmt.Errorf("%w: all %d conversations are in use; delete one or try again later", ErrLimit, n)
	}
	if n := m.opts.MaxConversationsPerOwner; n > 0 && m.perOwner[owner]+m.ownerCreating[owner] >= n {
		return fmt.Errorf("%w: you already have %d conversations, the most allowed; delete one to start another", ErrLimit, n)
	}
	return m.checkLiveLimitsLocked(owner)
}

// checkLiveLimitsLocked applies the limits on awake agents (a creation or
// a wake).
func (m *Manager) checkLiveLimitsLocked(owner string) error {
	live, ownerLive := m.waking+m.pending, m.ownerPending[owner]
	for _, s := range m.byID {
		if !s.Asleep() {
			live++
			if s.Key.Owner == owner {
				ownerLive++
			}
		}
	}
	if n := m.opts.MaxSessions; n > 0 && live >= n {
		return fmt.Errorf("%w: all %d agents are in use; try again when one ends or falls asleep", ErrLimit, n)
	}
	if n := m.opts.MaxSessionsPerOwner; n > 0 && ownerLive >= n {
		return fmt.Errorf("%w: you already have %d live agents, the most allowed; end one or wait for it to fall asleep", ErrLimit, n)
	}
	return nil
}

func (m *Manager) decOwnerLocked(counts map[string]int, owner string) {
	counts[owner]--
	if counts[owner] <= 0 {
		delete(counts, owner)
	}
}

func (m *Manager) create(ctx context.Context, key Key, id string, req Request, timeout time.Duration) (*Session, error) {
	// A creation may be shared by several requests: it must not fail
	// because the first requester went away.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	start := time.Now()
	spec := providers.Spec{
		Provider:     req.Provider,
		SessionID:    id,
		Owner:        key.Owner,
		Conversation: key.Conversation,
		ConfigID:     req.ConfigID,
		Config:       req.Config,
		Image:        req.Image,
		Limits:       req.Limits,
	}
	inst, warm, err := m.instance(cctx, spec)
	if err != nil {
		m.opts.Logger.Warn("session creation failed", zap.String("session_id", id),
			zap.Duration("after", time.Since(start)), zap.Error(err))
		return nil, fmt.Errorf("create agent for session %s: %w", id, err)
	}
	s := &Session{
		ID:          id,
		Key:         key,
		ConfigID:    req.ConfigID,
		Provider:    inst.Provider,
		Created:     time.Now(),
		Warm:        warm,
		idleTimeout: req.IdleTimeout,
	}
	s.setInstance(inst, false)
	s.lastUsed.Store(s.Created.UnixNano())
	m.opts.Logger.Info("session created",
		zap.String("session_id", id),
		zap.String("config_id", req.ConfigID),
		zap.String("provider", inst.Provider),
		zap.String("instance_id", inst.ID),
		zap.Bool("warm", warm),
		zap.Duration("create_duration", time.Since(start)))
	return s, nil
}

// instance takes a warm agent for spec if the source has one at hand, and
// otherwise creates one when a creation slot is free.
func (m *Manager) instance(ctx context.Context, spec providers.Spec) (_ *providers.Instance, warm bool, _ error) {
	if ws, ok := m.opts.Source.(WarmSource); ok {
		if inst, err := ws.Take(ctx, spec); inst != nil || err != nil {
			return inst, true, err
		}
	}
	select {
	case m.creating <- struct{}{}:
		defer func() { <-m.creating }()
	case <-ctx.Done():
		return nil, false, fmt.Errorf("waiting for a creation slot: %w", ctx.Err())
	}
	inst, err := m.opts.Source.Get(ctx, spec)
	return inst, false, err
}

// Headroom is how many more live agents max_sessions allows (-1 = no cap).
func (m *Manager) Headroom() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.opts.MaxSessions <= 0 {
		return -1
	}
	live := m.pending + m.waking
	for _, s := range m.byID {
		if !s.Asleep() {
			live++
		}
	}
	return max(0, m.opts.MaxSessions-live)
}

// Counts are a provider's sessions by state.
type Counts struct {
	// Live counts sessions whose agent is awake.
	Live int `json:"live"`
	// Sleeping counts sessions whose agent sleeps.
	Sleeping int `json:"sleeping"`
}

// Counts returns the sessions per provider name.
func (m *Manager) Counts() map[string]Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Counts{}
	for _, s := range m.byID {
		c := out[s.Provider]
		if s.Asleep() {
			c.Sleeping++
		} else {
			c.Live++
		}
		out[s.Provider] = c
	}
	return out
}

// lease reserves s for one turn. A session being put to sleep is waited
// for (the turn then wakes it): a message that arrives as the idle
// timeout strikes is not refused as busy.
func (m *Manager) lease(ctx context.Context, s *Session, created bool) (*Lease, error) {
	if !s.busy.CompareAndSwap(false, true) {
		if falling := s.fallingAsleep(); falling != nil {
			select {
			case <-falling:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if !s.busy.CompareAndSwap(false, true) {
			return nil, fmt.Errorf("%w: a turn is already running in this conversation; wait for it to finish", ErrBusy)
		}
	}
	l := &Lease{Session: s, New: created, m: m}
	l.ok.Store(true)
	return l, nil
}

// end frees the session for the next turn, once; countTurn says whether
// a turn ran under the lease.
func (l *Lease) end(countTurn bool) {
	if !l.ok.CompareAndSwap(true, false) {
		return
	}
	if countTurn {
		l.Session.turns.Add(1)
	}
	l.Session.lastUsed.Store(time.Now().UnixNano())
	l.Session.busy.Store(false)
}

// Query starts a turn with a text prompt; see [Lease.Turn].
func (l *Lease) Query(ctx context.Context, prompt, apiKey string) (*agentclient.Stream, error) {
	return l.Turn(ctx, agent.QueryRequest{Prompt: prompt, APIKey: apiKey})
}

// Turn starts the turn on the session's agent. Client tool calls the
// agent still waited for are dropped: the agent ends them itself.
func (l *Lease) Turn(ctx context.Context, q agent.QueryRequest) (*agentclient.Stream, error) {
	l.Session.takePending()
	return l.call(ctx, func(c *agentclient.Client) (*agentclient.Stream, error) { return c.Turn(ctx, q) })
}

// ToolResults hands the client's tool results to the turn that waits for
// them and returns the rest of the turn's stream.
func (l *Lease) ToolResults(ctx context.Context, tr agent.ToolResultsRequest) (*agentclient.Stream, error) {
	l.Session.takePending()
	return l.Session.Client().ToolResults(ctx, tr)
}

// call runs start on the session's agent. When the agent cannot be
// reached (it stopped behind the gateway's back and the provider's event
// has not arrived yet), its provider is asked to wake it and start runs
// once more; when the provider finds it gone, the lease ends and the
// error matches ErrAgentLost.
func (l *Lease) call(ctx context.Context, start func(*agentclient.Client) (*agentclient.Stream, error)) (*agentclient.Stream, error) {
	s := l.Session
	st, err := start(s.Client())
	var apiErr *agentclient.APIError
	sleeping := errors.As(err, &apiErr) && apiErr.Code == agent.CodeSleeping
	if !sleeping && (err == nil || ctx.Err() != nil || errors.As(err, &apiErr)) {
		return st, err
	}
	if sleeping {
		// Another gateway is putting the agent to sleep: wait for that,
		// then wake it.
		if werr := l.m.awaitSleep(ctx, s); werr != nil {
			return nil, errors.Join(err, werr)
		}
	}
	if _, serr := l.m.sleeper(s.Provider); serr != nil {
		return nil, err
	}
	l.m.logWaking(s, err)
	if werr := l.m.wakeFound(ctx, s); werr != nil {
		if errors.Is(werr, providers.ErrGone) {
			l.end(false)
			l.m.lose(s, werr)
			return nil, fmt.Errorf("%w: %w", ErrAgentLost, err)
		}
		return nil, errors.Join(err, werr)
	}
	l.Woke = true
	return start(s.Client())
}

// Release ends the turn: the session takes the next turn at once. Call it
// as soon as the agent's turn is over, before the last bytes reach the
// client, so a client that sends its next message the moment it reads the
// end of this one is never told the conversation is busy.
func (l *Lease) Release() { l.end(true) }

// TurnEnd is what a turn leaves for the next request to find.
type TurnEnd struct {
	// Fingerprint identifies the transcript as the client will send it
	// next time (its messages plus the answer), so that a follow-up finds
	// the session (without a conversation id) and where it continues.
	// Empty records nothing.
	Fingerprint string
	// TurnID is the agent's id for the turn (agent.Result.TurnID); a later
	// request whose history ends here branches off after it.
	TurnID string
	// PendingCalls are the ids of the client tool calls the agent's turn
	// waits for; the client's next request carries their results.
	PendingCalls []string
	// SentHistory tells that the request came with the conversation's
	// earlier messages. From then on an empty history is an edit of the
	// first message; from a client that never sent one, it is just the
	// next message (the client relies on the conversation id).
	SentHistory bool
}

// Done ends the turn (if Release has not) and records end. A turn with
// an id but no fingerprint (run through the management API) moved the
// agent's conversation somewhere no chat transcript names: the next chat
// request is then matched against earlier turns only.
func (l *Lease) Done(end TurnEnd) {
	l.Release()
	if end.Fingerprint == "" && end.TurnID == "" {
		return
	}
	s := l.Session
	l.m.mu.Lock()
	s.mu.Lock()
	if old := s.transcript.tip; old != "" {
		if _, kept := s.transcript.turns[old]; !kept {
			delete(l.m.byFP, s.Key.Owner+"\x00"+old)
		}
	}
	s.transcript.record(end.Fingerprint, end.TurnID, end.SentHistory)
	s.pending = end.PendingCalls
	s.mu.Unlock()
	if _, live := l.m.byID[s.ID]; live && end.Fingerprint != "" {
		l.m.byFP[s.Key.Owner+"\x00"+end.Fingerprint] = s
	}
	l.m.mu.Unlock()
	l.m.saveTranscript(context.Background(), s)
}

// PendingCalls are the client tool calls the session's agent waits for.
func (s *Session) PendingCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// takePending forgets the client tool calls the agent waited for: they
// are answered now, or dropped by a new turn.
func (s *Session) takePending() {
	s.mu.Lock()
	s.pending = nil
	s.mu.Unlock()
}

// byHistoryLocked finds the owner's session whose transcript matches the
// longest of prefixes (see Request.Prefixes).
func (m *Manager) byHistoryLocked(owner string, prefixes []string) *Session {
	for i := len(prefixes) - 1; i >= 1; i-- {
		if s, ok := m.byFP[owner+"\x00"+prefixes[i]]; ok {
			return s
		}
	}
	return nil
}

// bindLocked binds the conversation id of key to s, unless another
// client id names s already: two chats that open with the same exchange
// must not become one. LibreChat sends its conversation id from a chat's
// second message on; this keeps its first turn's agent.
func (m *Manager) bindLocked(s *Session, key Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clientNamed {
		return false
	}
	e, ok := m.byKey[s.Key]
	if !ok || e.session != s {
		return false
	}
	m.byKey[key] = e
	s.aliasLocked(key)
	s.clientNamed = true
	return true
}

// aliasLocked names s by the client conversation id key too, unless it
// does already; the caller holds s.mu.
func (s *Session) aliasLocked(key Key) bool {
	if key == s.Key || slices.Contains(s.aliases, key) {
		return false
	}
	s.aliases = append(s.aliases, key)
	return true
}

// Get returns the owner's session by id.
func (m *Manager) Get(owner, id string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.byID[id]
	if !ok || s.Key.Owner != owner {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s, nil
}

// List returns the owner's sessions ("" = all owners).
func (m *Manager) List(owner string) []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Session, 0, len(m.byID))
	for _, s := range m.byID {
		if owner == "" || s.Key.Owner == owner {
			out = append(out, s)
		}
	}
	return out
}

// Delete removes the owner's session and its instance, asleep or not.
func (m *Manager) Delete(owner, id string) error {
	m.mu.Lock()
	s, ok := m.byID[id]
	if !ok || s.Key.Owner != owner {
		m.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	m.forgetLocked(s)
	m.mu.Unlock()
	m.destroy(s, "deleted")
	return nil
}

func (m *Manager) forgetLocked(s *Session) {
	if _, ok := m.byID[s.ID]; !ok {
		return
	}
	delete(m.byID, s.ID)
	s.mu.Lock()
	for _, k := range append([]Key{s.Key}, s.aliases...) {
		if e, ok := m.byKey[k]; ok && e.session == s {
			delete(m.byKey, k)
		}
	}
	for _, fp := range s.transcript.fingerprints() {
		if m.byFP[s.Key.Owner+"\x00"+fp] == s {
			delete(m.byFP, s.Key.Owner+"\x00"+fp)
		}
	}
	s.mu.Unlock()
	m.decOwnerLocked(m.perOwner, s.Key.Owner)
}

func (m *Manager) destroy(s *Session, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst := s.Instance()
	if err := m.opts.Source.Release(ctx, inst); err != nil {
		m.opts.Logger.Error("session instance removal failed",
			zap.String("session_id", s.ID), zap.String("instance_id", inst.ID), zap.Error(err))
		return
	}
	m.opts.Logger.Info("session removed", zap.String("session_id", s.ID), zap.String("reason", reason),
		zap.Int64("turns", s.turns.Load()))
}

// ReapIdle puts sessions idle for longer than their idle timeout to sleep
// (or destroys them when their provider cannot sleep), destroys sessions
// asleep for longer than the retention, and returns how many sessions it
// put to sleep or removed.
func (m *Manager) ReapIdle(now time.Time) int {
	retention := time.Duration(m.retention.Load())
	var sleepers, expired, retired []*Session
	m.mu.Lock()
	for _, s := range m.byID {
		s.mu.Lock()
		asleep, sleptAt := s.asleep, s.sleptAt
		s.mu.Unlock()
		limit := m.idleLimit(s)
		switch {
		case asleep && retention > 0 && now.Sub(sleptAt) >= retention:
		case !asleep && now.Sub(s.LastUsed()) >= limit:
		default:
			continue
		}
		// Take the session out of service first so no turn can start
		// on it meanwhile.
		if !s.busy.CompareAndSwap(false, true) {
			continue
		}
		if _, err := m.sleeper(s.Provider); asleep {
			retired = append(retired, s)
		} else if err != nil {
			m.forgetLocked(s)
			expired = append(expired, s)
		} else {
			s.mu.Lock()
			s.falling = make(chan struct{})
			s.mu.Unlock()
			sleepers = append(sleepers, s)
		}
	}
	for k, at := range m.died {
		if now.Sub(at) > 24*time.Hour {
			delete(m.died, k)
		}
	}
	m.mu.Unlock()
	forEach(expired, 4, func(s *Session) { m.destroy(s, "idle") })
	forEach(retired, 4, m.retire)
	forEach(sleepers, 4, m.sleep)
	return len(expired) + len(retired) + len(sleepers)
}

// retire removes a session asleep past the retention, unless its agent is
// not asleep on the backend after all (another gateway woke it): then the
// session is marked awake and used now. The caller holds the session
// (busy), which retire frees.
func (m *Manager) retire(s *Session) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if p := m.provider(s.Provider); p != nil {
		inst, err := providers.Find(ctx, p, s.ID)
		if err == nil && (inst.State != providers.StateStopped || inst.ID != s.Instance().ID) {
			s.setInstance(inst, inst.State == providers.StateStopped)
			s.lastUsed.Store(time.Now().UnixNano())
			s.busy.Store(false)
			m.opts.Logger.Info("session kept: another gateway used it since it slept", zap.String("session_id", s.ID))
			return
		}
	}
	m.mu.Lock()
	m.forgetLocked(s)
	m.mu.Unlock()
	m.destroy(s, "retention")
}

// idleLimit is how long s may stay idle before it sleeps: its own idle
// timeout, else the manager's, else for ever.
func (m *Manager) idleLimit(s *Session) time.Duration {
	if s.idleTimeout > 0 {
		return s.idleTimeout
	}
	if idle := time.Duration(m.idleTimeout.Load()); idle > 0 {
		return idle
	}
	return 1<<63 - 1
}

// sleep puts a session's agent to sleep; the caller holds the session
// (busy) and made s.falling, which sleep frees and closes.
func (m *Manager) sleep(s *Session) {
	defer func() {
		s.busy.Store(false)
		s.mu.Lock()
		close(s.falling)
		s.falling = nil
		s.mu.Unlock()
	}()
	sl, err := m.sleeper(s.Provider)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Gateways sharing the agent ask it: one of them puts it to sleep,
	// once it has been idle long enough for all of them. An agent that
	// does not answer is asleep already or stopped: the sleep below is
	// then what records it.
	claim, cerr := s.Client().ClaimSleep(ctx, m.idleLimit(s))
	if cerr == nil && !claim.Granted {
		s.lastUsed.Store(time.Now().Add(-time.Duration(claim.IdleSeconds * float64(time.Second))).UnixNano())
		m.opts.Logger.Debug("session not put to sleep: its agent says no", zap.String("session_id", s.ID),
			zap.String("reason", claim.Reason))
		return
	}
	var claimRefused *agentclient.APIError // an agent without sleep claims (an older image)
	if cerr != nil && !errors.As(cerr, &claimRefused) && m.foundAsleep(ctx, s) {
		return
	}
	start := time.Now()
	inst, err := sl.Sleep(ctx, s.Instance())
	if errors.Is(err, providers.ErrGone) && m.relocate(ctx, s) {
		inst, err = sl.Sleep(ctx, s.Instance()) // re-created by another gateway
	}
	if err != nil && cerr == nil {
		if rerr := s.Client().ReleaseSleep(ctx); rerr != nil {
			m.opts.Logger.Warn("could not release the sleep claim; the agent takes turns again in two minutes",
				zap.String("session_id", s.ID), zap.Error(rerr))
		}
	}
	if err != nil {
		m.opts.Logger.Error("session sleep failed; it stays awake", zap.String("session_id", s.ID),
			zap.String("instance_id", s.Instance().ID), zap.Error(err))
		s.lastUsed.Store(time.Now().UnixNano()) // try again after another idle timeout
		return
	}
	s.setInstance(inst, true)
	m.opts.Logger.Info("session asleep", zap.String("session_id", s.ID), zap.String("instance_id", inst.ID),
		zap.Duration("sleep_duration", time.Since(start)))
}

// forEach runs fn on every item, at most n at a time, and waits.
func forEach[T any](items []T, n int, fn func(T)) {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(it)
		}()
	}
	wg.Wait()
}

func (m *Manager) reapLoop() {
	defer m.wg.Done()
	for {
		// Check four times per idle timeout, between 50ms and a minute
		// apart, so a session outlives its timeout by at most a quarter.
		every := time.Minute
		if idle := time.Duration(m.idleTimeout.Load()); idle > 0 {
			every = min(max(idle/4, 50*time.Millisecond), time.Minute)
		}
		if r := time.Duration(m.retention.Load()); r > 0 {
			every = min(every, max(r/4, 50*time.Millisecond))
		}
		select {
		case <-m.stop:
			return
		case <-m.rearm: // new timeouts: wait by them from now on
		case <-time.After(every):
			m.ReapIdle(time.Now())
		}
	}
}

// Close stops the reaper. With destroy, every session's instance is
// removed too, asleep or not; without, they stay for a successor to
// rediscover.
func (m *Manager) Close(destroy bool) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	var all []*Session
	for _, s := range m.byID {
		all = append(all, s)
	}
	if destroy {
		for _, s := range all {
			m.forgetLocked(s)
		}
	}
	m.mu.Unlock()
	close(m.stop)
	m.wg.Wait()
	if destroy {
		forEach(all, 8, func(s *Session) { m.destroy(s, "shutdown") })
	}
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
