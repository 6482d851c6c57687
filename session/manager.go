// Package session maps conversations to agent containers: who owns which
// session, creating each container once however many requests race for it,
// one turn at a time per session, idle reaping, and limits.
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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
	// IdleTimeout removes sessions unused this long (0 = never).
	IdleTimeout time.Duration
	// MaxSessions caps live sessions in total (0 = no cap).
	MaxSessions int
	// MaxSessionsPerOwner caps live sessions per owner (0 = no cap).
	MaxSessionsPerOwner int
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
	// Instance is the agent container.
	Instance *providers.Instance
	// Created is when the session was created.
	Created time.Time
	// Warm reports that the session's agent came ready from the warm pool.
	Warm bool

	client      *agentclient.Client
	idleTimeout time.Duration // 0 = the manager's
	busy        atomic.Bool
	lastUsed    atomic.Int64 // unix nanos
	turns       atomic.Int64
	mu          sync.Mutex
	fp          string // fingerprint of the transcript after the last turn
}

// Client is the session's agent client.
func (s *Session) Client() *agentclient.Client { return s.client }

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

	mu       sync.Mutex
	byKey    map[Key]*entry
	byID     map[string]*Session
	byFP     map[string]*Session // owner + "\x00" + fingerprint
	pending  int
	perOwner map[string]int
	died     map[Key]time.Time // conversations whose agent died, until their next session
	closed   bool

	idleTimeout atomic.Int64  // time.Duration; changed by Reconfigure
	creating    chan struct{} // a slot per creation in progress
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
		opts:     opts,
		byKey:    map[Key]*entry{},
		byID:     map[string]*Session{},
		byFP:     map[string]*Session{},
		perOwner: map[string]int{},
		died:     map[Key]time.Time{},
		stop:     make(chan struct{}),
		creating: make(chan struct{}, opts.MaxConcurrentCreates),
	}
	m.idleTimeout.Store(int64(opts.IdleTimeout))
	m.wg.Add(1)
	go m.reapLoop()
	return m
}

// Launch creates a session for req (its Conversation is ignored: a
// launched session is its own conversation) without starting a turn, and
// returns it.
func (m *Manager) Launch(ctx context.Context, req Request) (*Session, error) {
	req.Conversation = "launch_" + randomID()
	req.SessionID, req.Fingerprint = "", ""
	l, err := m.Acquire(ctx, req)
	if err != nil {
		return nil, err
	}
	s := l.Session
	l.end(false) // no turn ran
	return s, nil
}

// Reconfigure applies new limits and idle timeout; the source and logger
// stay. Live sessions are kept.
func (m *Manager) Reconfigure(opts Options) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opts.MaxSessions = opts.MaxSessions
	m.opts.MaxSessionsPerOwner = opts.MaxSessionsPerOwner
	if opts.CreateTimeout > 0 {
		m.opts.CreateTimeout = opts.CreateTimeout
	}
	m.idleTimeout.Store(int64(opts.IdleTimeout))
}

// Adopt registers running instances found by the provider (after a
// restart) as sessions and returns how many it took. Instances without a
// session id, owner or conversation, or already known, are skipped.
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
		s := &Session{
			ID:       inst.SessionID,
			Key:      key,
			ConfigID: inst.ConfigID,
			Instance: inst,
			Created:  inst.CreatedAt,
			client:   inst.Client(),
		}
		s.lastUsed.Store(time.Now().UnixNano())
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
	// conversation up by Fingerprint or start a new one.
	Conversation string
	// SessionID continues a session by its id (X-Session-ID).
	SessionID string
	// Fingerprint identifies the transcript the client sent before its new
	// message, to continue a conversation that has no id.
	Fingerprint string
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
}

// Lease is exclusive use of a session for one turn.
type Lease struct {
	// Session is the conversation's session.
	Session *Session
	// New reports that the session was created for this request, so the
	// agent has not seen the conversation's earlier messages.
	New bool
	// Restarted reports that the conversation's previous agent died (its
	// container stopped or was killed) and this one replaces it.
	Restarted bool
	m         *Manager
	ok        atomic.Bool
}

// Acquire finds or creates the conversation's session and reserves it for
// one turn. Concurrent first requests for one conversation create a single
// instance; a request for a session that is running a turn gets ErrBusy.
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
		return m.lease(s, false)
	}
	key := Key{Owner: req.Owner, Conversation: req.Conversation}
	if key.Conversation == "" && req.Fingerprint != "" {
		if s, ok := m.byFP[req.Owner+"\x00"+req.Fingerprint]; ok {
			key = s.Key
		}
	}
	if key.Conversation == "" {
		key.Conversation = "conv_" + randomID()
	}
	if e, ok := m.byKey[key]; ok {
		m.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err != nil {
			return nil, e.err
		}
		return m.lease(e.session, false)
	}
	if err := m.checkLimitsLocked(req.Owner); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	e := &entry{ready: make(chan struct{})}
	m.byKey[key] = e
	m.pending++
	m.perOwner[req.Owner]++
	timeout := m.opts.CreateTimeout
	m.mu.Unlock()

	s, err := m.create(ctx, key, req, timeout)

	m.mu.Lock()
	m.pending--
	if err != nil {
		delete(m.byKey, key)
		m.perOwner[req.Owner]--
		if m.perOwner[req.Owner] == 0 {
			delete(m.perOwner, req.Owner)
		}
		e.err = err
	} else {
		e.session = s
		m.byID[s.ID] = s
	}
	closed := m.closed
	m.mu.Unlock()
	close(e.ready)
	if err != nil {
		return nil, err
	}
	if closed {
		m.destroy(s, "shutdown")
		return nil, ErrClosed
	}
	// The creator takes the first turn; a request that raced it waits on
	// e.ready above and then finds the session busy.
	l, err := m.lease(s, true)
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

// InstanceDied is told that an instance stopped on its own (the provider
// saw it die or be OOM-killed). Its session is dropped and its leftovers
// removed; the conversation's next request gets a new agent, marked
// Restarted. Instances the manager removes itself are already unknown.
func (m *Manager) InstanceDied(instanceID string) bool {
	m.mu.Lock()
	var dead *Session
	for _, s := range m.byID {
		if s.Instance.ID == instanceID {
			dead = s
			break
		}
	}
	if dead == nil {
		m.mu.Unlock()
		return false
	}
	m.forgetLocked(dead)
	m.died[dead.Key] = time.Now()
	m.mu.Unlock()
	m.opts.Logger.Warn("session agent died", zap.String("session_id", dead.ID), zap.String("instance_id", instanceID))
	m.destroy(dead, "died")
	return true
}

func (m *Manager) checkLimitsLocked(owner string) error {
	// m.opts is read under m.mu: Reconfigure changes the limits.
	total := len(m.byID) + m.pending
	if m.opts.MaxSessions > 0 && total >= m.opts.MaxSessions {
		return fmt.Errorf("%w: all %d sessions are in use; try again when one ends", ErrLimit, m.opts.MaxSessions)
	}
	if m.opts.MaxSessionsPerOwner > 0 && m.perOwner[owner] >= m.opts.MaxSessionsPerOwner {
		return fmt.Errorf("%w: you already have %d live sessions, the most allowed; end one or wait for it to idle out",
			ErrLimit, m.opts.MaxSessionsPerOwner)
	}
	return nil
}

func (m *Manager) create(ctx context.Context, key Key, req Request, timeout time.Duration) (*Session, error) {
	// A creation may be shared by several requests: it must not fail
	// because the first requester went away.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	id := "sess_" + randomID()
	start := time.Now()
	spec := providers.Spec{
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
		Instance:    inst,
		Created:     time.Now(),
		Warm:        warm,
		idleTimeout: req.IdleTimeout,
		client:      inst.Client(),
	}
	s.lastUsed.Store(s.Created.UnixNano())
	m.opts.Logger.Info("session created",
		zap.String("session_id", id),
		zap.String("config_id", req.ConfigID),
		zap.String("instance_id", inst.ID),
		zap.Bool("warm", warm),
		zap.Duration("create_duration", time.Since(start)))
	return s, nil
}

// instance takes a warm agent for spec if the source has one at hand, and
// otherwise creates one when a creation slot is free.
func (m *Manager) instance(ctx context.Context, spec providers.Spec) (_ *providers.Instance, warm bool, _ error) {
	if ws, ok := m.opts.Source.(WarmSource); ok {
		if inst := ws.Take(ctx, spec); inst != nil {
			return inst, true, nil
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

// Headroom is how many more sessions max_sessions allows (-1 = no cap).
func (m *Manager) Headroom() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.opts.MaxSessions <= 0 {
		return -1
	}
	return max(0, m.opts.MaxSessions-len(m.byID)-m.pending)
}

func (m *Manager) lease(s *Session, created bool) (*Lease, error) {
	if !s.busy.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("%w: a turn is already running in this conversation; wait for it to finish", ErrBusy)
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

// Release ends the turn: the session takes the next turn at once. Call it
// as soon as the agent's turn is over, before the last bytes reach the
// client, so a client that sends its next message the moment it reads the
// end of this one is never told the conversation is busy.
func (l *Lease) Release() { l.end(true) }

// Done ends the turn (if Release has not) and records fingerprint, if not
// empty: it identifies the transcript as the client will send it next time
// (its messages plus the answer), so a follow-up without a conversation id
// finds this session.
func (l *Lease) Done(fingerprint string) {
	l.Release()
	if fingerprint == "" {
		return
	}
	s := l.Session
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	s.mu.Lock()
	if s.fp != "" {
		delete(l.m.byFP, s.Key.Owner+"\x00"+s.fp)
	}
	s.fp = fingerprint
	s.mu.Unlock()
	if _, live := l.m.byID[s.ID]; live {
		l.m.byFP[s.Key.Owner+"\x00"+fingerprint] = s
	}
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

// Delete removes the owner's session and its instance.
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
	delete(m.byID, s.ID)
	if e, ok := m.byKey[s.Key]; ok && e.session == s {
		delete(m.byKey, s.Key)
	}
	s.mu.Lock()
	if s.fp != "" {
		delete(m.byFP, s.Key.Owner+"\x00"+s.fp)
	}
	s.mu.Unlock()
	m.perOwner[s.Key.Owner]--
	if m.perOwner[s.Key.Owner] <= 0 {
		delete(m.perOwner, s.Key.Owner)
	}
}

func (m *Manager) destroy(s *Session, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.opts.Source.Release(ctx, s.Instance); err != nil {
		m.opts.Logger.Error("session instance removal failed",
			zap.String("session_id", s.ID), zap.String("instance_id", s.Instance.ID), zap.Error(err))
		return
	}
	m.opts.Logger.Info("session removed", zap.String("session_id", s.ID), zap.String("reason", reason),
		zap.Int64("turns", s.turns.Load()))
}

// ReapIdle removes sessions idle for longer than the idle timeout and
// returns how many it removed.
func (m *Manager) ReapIdle(now time.Time) int {
	idle := time.Duration(m.idleTimeout.Load())
	if idle <= 0 {
		idle = 1<<63 - 1 // no default timeout; per-session ones still apply
	}
	var victims []*Session
	m.mu.Lock()
	for _, s := range m.byID {
		limit := idle
		if s.idleTimeout > 0 {
			limit = s.idleTimeout
		}
		if !s.busy.Load() && now.Sub(s.LastUsed()) >= limit {
			// Take the session out of service first so no turn can
			// start on it while it is being removed.
			if s.busy.CompareAndSwap(false, true) {
				m.forgetLocked(s)
				victims = append(victims, s)
			}
		}
	}
	for k, at := range m.died {
		if now.Sub(at) > 24*time.Hour {
			delete(m.died, k)
		}
	}
	m.mu.Unlock()
	for _, s := range victims {
		m.destroy(s, "idle")
	}
	return len(victims)
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
		select {
		case <-m.stop:
			return
		case <-time.After(every):
			m.ReapIdle(time.Now())
		}
	}
}

// Close stops the reaper. With destroy, every session's instance is
// removed too; without, they keep running for a successor to rediscover.
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
		var wg sync.WaitGroup
		for _, s := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.destroy(s, "shutdown")
			}()
		}
		wg.Wait()
	}
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
