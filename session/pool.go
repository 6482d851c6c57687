package session

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/providers"
)

// WarmSource is a Source that may have a ready instance at hand. The
// manager asks it first, without waiting for a creation slot.
type WarmSource interface {
	Source
	// Take hands out a ready instance for spec, bound to spec's session,
	// owner and conversation, or returns nil when none is at hand. An
	// error wrapping providers.ErrExists means the session has an agent
	// already (another gateway made it).
	Take(ctx context.Context, spec providers.Spec) (*providers.Instance, error)
	// Pooling reports whether any warm pool is configured.
	Pooling() bool
}

// PoolEntry keeps agents of one configuration warm.
type PoolEntry struct {
	// Spec is what every agent of the entry is made from; its SessionID,
	// Owner, Conversation and Pool are ignored. A session whose spec has
	// the same ConfigID, Config, Image, Limits and Env is served from it.
	Spec providers.Spec
	// Size is how many ready agents to keep.
	Size int
}

// PoolOptions configure a [Pool].
type PoolOptions struct {
	// Source creates the agents (warm and, on a miss, cold) and destroys them.
	Source Source
	// Providers finds a provider by name: a stopped warm agent found after
	// a restart is woken through it to learn its binding.
	Providers func(name string) (providers.Provider, bool)
	// Entries are the configurations kept warm.
	Entries []PoolEntry
	// Max caps ready agents over all entries (0 = the sum of the sizes).
	Max int
	// Generation is folded into every entry's key: agents made under
	// another generation (another provider setup or turn timeout) are not
	// handed out but replaced.
	Generation string
	// MinFreeMemory: while the host has less memory available than this,
	// the pool makes no agents and gives one back per check (0 = no check).
	MinFreeMemory int64
	// FreeMemory reports the memory available for new agents; default: the
	// host's MemAvailable from /proc/meminfo.
	FreeMemory func() (int64, error)
	// Headroom reports how many more agents the session limits allow
	// (negative = no limit); nil means no limit. The pool never holds more.
	Headroom func() int
	// CheckInterval is how often ready agents' health and the memory are
	// checked (default 5s).
	CheckInterval time.Duration
	// RefillDelay holds back refills for this long after a hand-out
	// (default 250ms; negative = none): starting a container takes a core
	// for a while, and the conversation that just took its agent is
	// starting its first turn.
	RefillDelay time.Duration
	// Logger receives the pool's logs; nil discards them.
	Logger *zap.Logger
}

// PoolStats describe one entry of the pool.
type PoolStats struct {
	// ConfigID names the configuration.
	ConfigID string `json:"config_id"`
	// Size is the configured number of ready agents.
	Size int `json:"size"`
	// Target is how many the pool aims for now (less than Size under the
	// global cap, session limits or memory pressure).
	Target int `json:"target"`
	// Ready counts agents ready to hand out.
	Ready int `json:"ready"`
	// Creating counts agents being made.
	Creating int `json:"creating"`
	// Hits counts sessions served from the pool.
	Hits int64 `json:"hits"`
	// Misses counts sessions of this configuration that found it empty.
	Misses int64 `json:"misses"`
}

// Pool keeps ready agents per configuration, so a new conversation starts
// on an agent whose CLI is already running. Agents are never shared: one
// is bound to a single session when handed out (recorded in the agent, so
// a restarted control plane knows it) and destroyed when that session
// ends, like any other. Ready agents that fail their health check or die
// are replaced; the pool shrinks when memory runs short or the session
// limits leave no room.
type Pool struct {
	opts PoolOptions

	mu       sync.Mutex
	entries  map[string]*poolEntry // by key
	byConfig map[string]string     // config id -> key
	total    int                   // ready + creating over all entries
	pressure bool                  // memory below MinFreeMemory at the last check
	lastTake time.Time             // when an agent was last handed out
	started  bool
	closed   bool

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

type poolEntry struct {
	PoolEntry
	key      string
	ready    []*providers.Instance // oldest first
	creating int
	hits     int64
	misses   int64
}

// Pooling reports whether any warm pool is configured.
func (p *Pool) Pooling() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries) > 0
}

// NewPool returns a pool; Start begins filling it.
func NewPool(opts PoolOptions) *Pool {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 5 * time.Second
	}
	if opts.FreeMemory == nil {
		opts.FreeMemory = HostAvailableMemory
	}
	if opts.RefillDelay == 0 {
		opts.RefillDelay = 250 * time.Millisecond
	}
	p := &Pool{kick: make(chan struct{}, 1), stop: make(chan struct{})}
	p.opts = opts
	p.entries, p.byConfig = buildEntries(opts)
	return p
}

func buildEntries(opts PoolOptions) (map[string]*poolEntry, map[string]string) {
	entries, byConfig := map[string]*poolEntry{}, map[string]string{}
	for _, e := range opts.Entries {
		if e.Size <= 0 {
			continue
		}
		key := poolKey(e.Spec, opts.Generation)
		entries[key] = &poolEntry{PoolEntry: e, key: key}
		byConfig[configKey(e.Spec)] = key
	}
	return entries, byConfig
}

// configKey is what a session asks the pool for: a configuration on a
// provider.
func configKey(spec providers.Spec) string { return spec.ConfigID + "\x00" + spec.Provider }

// poolKey names an entry: its config id and a hash of everything that
// shapes its agents, the provider included.
func poolKey(spec providers.Spec, generation string) string {
	b, _ := json.Marshal(struct {
		Provider   string
		Config     *agent.Config
		Image      string
		Limits     providers.Limits
		Env        map[string]string
		Generation string
	}{spec.Provider, spec.Config, spec.Image, spec.Limits, spec.Env, generation})
	sum := sha256.Sum256(b)
	return spec.ConfigID + "@" + hex.EncodeToString(sum[:6])
}

// Reconfigure applies new entries and limits (a config reload). Ready
// agents whose entry is gone or changed are destroyed; the rest stay.
func (p *Pool) Reconfigure(opts PoolOptions) {
	entries, byConfig := buildEntries(opts)
	p.mu.Lock()
	var drop []*providers.Instance
	for key, old := range p.entries {
		if ne, ok := entries[key]; ok {
			// The same entry: keep its agents, counts and the creations
			// in flight for it.
			old.Size = ne.Size
			entries[key] = old
			continue
		}
		drop = append(drop, old.ready...)
		p.total -= len(old.ready)
		// Agents still being made for it are dropped when they arrive.
	}
	p.entries, p.byConfig = entries, byConfig
	p.opts.Entries, p.opts.Max, p.opts.Generation = opts.Entries, opts.Max, opts.Generation
	p.opts.MinFreeMemory = opts.MinFreeMemory
	if opts.CheckInterval > 0 {
		p.opts.CheckInterval = opts.CheckInterval
	}
	if opts.Headroom != nil {
		p.opts.Headroom = opts.Headroom
	}
	p.mu.Unlock()
	p.destroyAll(drop, "pool entry changed")
	p.wake()
}

// Get creates an instance (a miss); Release destroys one.
func (p *Pool) Get(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	return p.opts.Source.Get(ctx, spec)
}

// Release destroys an instance.
func (p *Pool) Release(ctx context.Context, inst *providers.Instance) error {
	return p.opts.Source.Release(ctx, inst)
}

// Take hands out the oldest ready agent of spec's entry, bound to spec's
// session, or nil when the entry is empty or spec matches no entry.
func (p *Pool) Take(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	p.mu.Lock()
	key, ok := p.byConfig[configKey(spec)]
	e := p.entries[key]
	if !ok || e == nil || poolKey(spec, p.opts.Generation) != key {
		p.mu.Unlock()
		return nil, nil // another shape than the pool's (own image, limits, MCP env...)
	}
	defer p.wake()
	for {
		if len(e.ready) == 0 {
			e.misses++
			p.mu.Unlock()
			return nil, nil
		}
		inst := e.ready[0]
		e.ready = e.ready[1:]
		p.total--
		p.mu.Unlock()

		bound, err := p.bind(ctx, inst, spec)
		if err == nil {
			p.mu.Lock()
			e.hits++
			p.lastTake = time.Now()
			p.mu.Unlock()
			return bound, nil
		}
		switch {
		case errors.Is(err, providers.ErrExists):
			// The agent is bound to the session, which has another agent:
			// this one is of no use to anyone.
			go p.destroyAll([]*providers.Instance{inst}, "session has an agent already")
			return nil, err
		case errors.Is(err, errBoundElsewhere):
			p.opts.Logger.Info("warm agent was handed out by another gateway", zap.String("instance_id", inst.ID))
		default:
			p.opts.Logger.Warn("warm agent could not be handed out; destroying it",
				zap.String("instance_id", inst.ID), zap.String("config_id", spec.ConfigID), zap.Error(err))
			go p.destroyAll([]*providers.Instance{inst}, "bind failed")
		}
		p.mu.Lock()
	}
}

// errBoundElsewhere: a warm agent was bound to another session (by another
// gateway sharing the pool's agents).
var errBoundElsewhere = errors.New("warm agent bound to another session")

// bind records spec's session in the agent (once: the agent refuses a
// second binding, so two gateways never hand out one agent twice) and,
// on a provider that can, names the agent for the session (once: so two
// gateways never hand out two agents for one session). It returns the
// instance as the session's.
func (p *Pool) bind(ctx context.Context, inst *providers.Instance, spec providers.Spec) (*providers.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b := agent.Binding{SessionID: spec.SessionID, Owner: spec.Owner, Conversation: spec.Conversation}
	if err := inst.Client().Bind(ctx, b); err != nil {
		var ae *agentclient.APIError
		if errors.As(err, &ae) && ae.Code == "already_bound" {
			return nil, fmt.Errorf("bind agent %s: %w", inst.ID, errBoundElsewhere)
		}
		return nil, fmt.Errorf("bind agent %s: %w", inst.ID, err)
	}
	out := inst.Bound(b)
	if c, ok := p.claimer(inst.Provider); ok {
		return c.Claim(ctx, out, spec)
	}
	return out, nil
}

// claimer returns the provider named name as a Claimer.
func (p *Pool) claimer(name string) (providers.Claimer, bool) {
	if p.opts.Providers == nil {
		return nil, false
	}
	prov, ok := p.opts.Providers(name)
	if !ok {
		return nil, false
	}
	c, ok := prov.(providers.Claimer)
	return c, ok
}

// Adopt sorts warm-pool instances a previous run left: those handed out
// are returned as sessions (their session, owner and conversation read
// from the agent's binding); unbound ones of a current entry become ready
// agents again; the rest (unreachable, or of an entry that no longer
// exists) are destroyed. Instances without Pool are returned unchanged.
func (p *Pool) Adopt(ctx context.Context, insts []*providers.Instance) []*providers.Instance {
	var sessions, drop []*providers.Instance
	for _, inst := range insts {
		if inst.Pool == "" {
			sessions = append(sessions, inst)
			continue
		}
		if inst.State == providers.StateStopped {
			sessions, drop = p.adoptStopped(ctx, inst, sessions, drop)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := inst.Client().Binding(cctx)
		cancel()
		switch {
		case err != nil:
			p.opts.Logger.Warn("rediscovered warm agent does not answer; destroying it",
				zap.String("instance_id", inst.ID), zap.Error(err))
			drop = append(drop, inst)
		case st.Bound && st.Binding != nil:
			sessions = append(sessions, inst.Bound(*st.Binding))
		default:
			p.mu.Lock()
			e := p.entries[inst.Pool]
			if e != nil && !p.closed {
				e.ready = append(e.ready, inst)
				p.total++
			}
			p.mu.Unlock()
			if e == nil {
				drop = append(drop, inst)
			}
		}
	}
	p.destroyAll(drop, "rediscovered, not reusable")
	p.wake()
	return sessions
}

// adoptStopped sorts a stopped warm agent found after a restart: one that
// was handed out (it stopped before the gateway put it to sleep, so only
// the agent knows its session) is woken to read its binding and put back
// to sleep under its session; an unbound one is destroyed.
func (p *Pool) adoptStopped(ctx context.Context, inst *providers.Instance, sessions, drop []*providers.Instance) ([]*providers.Instance, []*providers.Instance) {
	var sl providers.Sleeper
	if p.opts.Providers != nil {
		if prov, ok := p.opts.Providers(inst.Provider); ok {
			sl, _ = prov.(providers.Sleeper)
		}
	}
	if sl == nil {
		return sessions, append(drop, inst)
	}
	woke, err := sl.Wake(ctx, inst.ID)
	if err != nil {
		p.opts.Logger.Warn("stopped warm agent could not be woken; destroying it", zap.String("instance_id", inst.ID), zap.Error(err))
		return sessions, append(drop, inst)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := woke.Client().Binding(cctx)
	cancel()
	if err != nil || !st.Bound || st.Binding == nil {
		return sessions, append(drop, woke)
	}
	bound := woke.Bound(*st.Binding)
	slept, err := sl.Sleep(ctx, bound)
	if err != nil {
		p.opts.Logger.Warn("rediscovered warm agent could not be put back to sleep; it stays awake",
			zap.String("instance_id", woke.ID), zap.Error(err))
		return append(sessions, bound), drop
	}
	return append(sessions, slept), drop
}

// InstanceDied drops a ready agent that stopped; the pool makes another.
func (p *Pool) InstanceDied(id string) bool {
	found := p.removeReady(id)
	if found == nil {
		return false
	}
	p.opts.Logger.Warn("warm agent died; replacing it", zap.String("instance_id", id))
	p.destroyAll([]*providers.Instance{found}, "died")
	p.wake()
	return true
}

// removeReady takes the ready agent with instance id out of the pool and
// returns it, or nil if no ready agent has that id (any more).
func (p *Pool) removeReady(id string) *providers.Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.entries {
		if i := slices.IndexFunc(e.ready, func(in *providers.Instance) bool { return in.ID == id }); i >= 0 {
			found := e.ready[i]
			e.ready = slices.Delete(e.ready, i, i+1)
			p.total--
			return found
		}
	}
	return nil
}

// Stats describe every entry, by config id.
func (p *Pool) Stats() []PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	targets := p.targetsLocked()
	out := make([]PoolStats, 0, len(p.entries))
	for key, e := range p.entries {
		out = append(out, PoolStats{
			ConfigID: e.Spec.ConfigID, Size: e.Size, Target: targets[key],
			Ready: len(e.ready), Creating: e.creating, Hits: e.hits, Misses: e.misses,
		})
	}
	slices.SortFunc(out, func(a, b PoolStats) int { return cmp.Compare(a.ConfigID, b.ConfigID) })
	return out
}

// Start begins filling the pool and checking its agents.
func (p *Pool) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.closed {
		return
	}
	p.started = true
	p.wg.Add(1)
	go p.loop()
}

// Close stops the pool. With destroy its ready agents are removed; without,
// they keep running for the next start to reuse.
func (p *Pool) Close(destroy bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	p.wg.Wait() // no creation is in flight after this
	if !destroy {
		return
	}
	p.mu.Lock()
	var all []*providers.Instance
	for _, e := range p.entries {
		all = append(all, e.ready...)
		e.ready = nil
	}
	p.total = 0
	p.mu.Unlock()
	p.destroyAll(all, "shutdown")
}

// checkInterval is read under the lock: Reconfigure changes it.
func (p *Pool) checkInterval() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opts.CheckInterval
}

func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// loop makes one agent at a time for the entry furthest below its target,
// gives agents back when over target, and checks health and memory.
func (p *Pool) loop() {
	defer p.wg.Done()
	nextCheck := time.Now().Add(p.checkInterval())
	for {
		p.checkMemory()
		p.shrink()
		if e := p.nextToFill(); e != nil {
			p.fill(e)
			continue // look again at once: more may be missing
		}
		wake := time.Until(nextCheck)
		p.mu.Lock()
		if refill := time.Until(p.lastTake.Add(p.opts.RefillDelay)); refill > 0 {
			wake = min(wake, refill)
		}
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-p.kick:
		case <-time.After(wake):
		}
		if time.Now().After(nextCheck) {
			p.checkHealth()
			nextCheck = time.Now().Add(p.checkInterval())
		}
	}
}

// targetsLocked shares the room (the global cap, the session limits'
// headroom, nothing under memory pressure) among the entries, one agent
// at a time in turn, so every configuration gets some.
func (p *Pool) targetsLocked() map[string]int {
	room := 0
	for _, e := range p.entries {
		room += e.Size
	}
	if p.opts.Max > 0 {
		room = min(room, p.opts.Max)
	}
	if p.opts.Headroom != nil {
		if h := p.opts.Headroom(); h >= 0 {
			// Ready agents and sessions together stay within the limit.
			room = min(room, h)
		}
	}
	if p.pressure {
		room = 0
	}
	keys := make([]string, 0, len(p.entries))
	for k := range p.entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	targets := make(map[string]int, len(keys))
	for given := true; given && room > 0; {
		given = false
		for _, k := range keys {
			if room > 0 && targets[k] < p.entries[k].Size {
				targets[k]++
				room--
				given = true
			}
		}
	}
	return targets
}

func (p *Pool) nextToFill() *poolEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	targets := p.targetsLocked()
	if time.Since(p.lastTake) < p.opts.RefillDelay {
		return nil // the loop looks again when the delay is over
	}
	var best *poolEntry
	bestGap := 0
	for key, e := range p.entries {
		if gap := targets[key] - len(e.ready) - e.creating; gap > bestGap {
			best, bestGap = e, gap
		}
	}
	if best != nil {
		best.creating++
		p.total++
	}
	return best
}

// fill makes one agent for e.
func (p *Pool) fill(e *poolEntry) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	spec := e.Spec
	spec.SessionID, spec.Owner, spec.Conversation = "", "", ""
	spec.Pool = e.key
	// The agent runs the CLI's costly first turn before it reports ready,
	// answered by itself; the conversation is cleared after it.
	spec = spec.WithEnv(agent.EnvWarmUp, "1")
	start := time.Now()
	inst, err := p.opts.Source.Get(ctx, spec)

	p.mu.Lock()
	e.creating--
	keep := err == nil && !p.closed && p.entries[e.key] == e
	if keep {
		e.ready = append(e.ready, inst)
	} else {
		p.total--
	}
	p.mu.Unlock()
	switch {
	case err != nil:
		p.opts.Logger.Warn("warm agent creation failed", zap.String("config_id", spec.ConfigID), zap.Error(err))
		// Do not spin on a broken engine or image: wait for the next check.
		select {
		case <-p.stop:
		case <-time.After(p.checkInterval()):
		}
	case !keep:
		p.destroyAll([]*providers.Instance{inst}, "pool entry gone")
	default:
		p.opts.Logger.Info("warm agent ready", zap.String("config_id", spec.ConfigID),
			zap.String("instance_id", inst.ID), zap.Duration("create_duration", time.Since(start)))
	}
}

// shrink gives back ready agents above their entry's target, newest first
// (the oldest are handed out first and kept longest warm).
func (p *Pool) shrink() {
	p.mu.Lock()
	targets := p.targetsLocked()
	var drop []*providers.Instance
	for key, e := range p.entries {
		for over := len(e.ready) + e.creating - targets[key]; over > 0 && len(e.ready) > 0; over-- {
			last := len(e.ready) - 1
			drop = append(drop, e.ready[last])
			e.ready = e.ready[:last]
			p.total--
			if p.pressure {
				break // under memory pressure: one per check
			}
		}
	}
	pressure := p.pressure
	p.mu.Unlock()
	reason := "over target"
	if pressure {
		reason = "memory pressure"
	}
	p.destroyAll(drop, reason)
}

func (p *Pool) checkMemory() {
	p.mu.Lock()
	minFree := p.opts.MinFreeMemory
	p.mu.Unlock()
	if minFree <= 0 {
		p.mu.Lock()
		p.pressure = false
		p.mu.Unlock()
		return
	}
	free, err := p.opts.FreeMemory()
	if err != nil {
		p.opts.Logger.Warn("available memory unknown; the pool ignores memory pressure", zap.Error(err))
		return
	}
	pressure := free < minFree
	p.mu.Lock()
	changed := pressure != p.pressure
	p.pressure = pressure
	p.mu.Unlock()
	if changed {
		p.opts.Logger.Info("warm pool memory pressure changed", zap.Bool("pressure", pressure),
			zap.Int64("available_bytes", free), zap.Int64("min_free_bytes", minFree))
	}
}

// checkHealth replaces ready agents whose /health does not answer ready.
func (p *Pool) checkHealth() {
	p.mu.Lock()
	var all []*providers.Instance
	for _, e := range p.entries {
		all = append(all, e.ready...)
	}
	p.mu.Unlock()
	for _, inst := range all {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		h, status, err := inst.Client().Health(ctx)
		cancel()
		if err == nil && status == http.StatusOK {
			continue
		}
		if p.removeReady(inst.ID) != nil { // not handed out meanwhile
			p.opts.Logger.Warn("warm agent unhealthy; replacing it", zap.String("instance_id", inst.ID),
				zap.Int("status", status), zap.String("agent_status", h.Status), zap.Error(err))
			p.destroyAll([]*providers.Instance{inst}, "unhealthy")
		}
	}
}

func (p *Pool) destroyAll(insts []*providers.Instance, reason string) {
	for _, inst := range insts {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := p.opts.Source.Release(ctx, inst)
		cancel()
		if err != nil {
			p.opts.Logger.Error("warm agent removal failed", zap.String("instance_id", inst.ID), zap.Error(err))
			continue
		}
		p.opts.Logger.Info("warm agent removed", zap.String("instance_id", inst.ID), zap.String("reason", reason))
	}
}

// HostAvailableMemory reads MemAvailable from /proc/meminfo: the memory
// the machine can give new processes without swapping.
func HostAvailableMemory() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read /proc/meminfo: %w", err)
	}
	return parseMemAvailable(b)
}

func parseMemAvailable(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("MemAvailable:"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) == 0 {
			break
		}
		kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("meminfo: MemAvailable %q: %w", fields[0], err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("meminfo: no MemAvailable line")
}

// Interface guard.
var _ WarmSource = (*Pool)(nil)
