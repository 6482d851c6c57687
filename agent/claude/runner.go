package claude

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/clienttools"
	"github.com/agcluster/caddy-agcluster/agent/statefile"
)

// ErrBusy is returned by Begin while another turn runs with a client
// listening, or another turn already waits for the CLI.
var ErrBusy = errors.New("a turn is already running in this agent")

// State is the CLI supervisor's state.
type State string

// Supervisor states.
const (
	// StateStarting: the first CLI process is loading.
	StateStarting State = "starting"
	// StateReady: a CLI process is initialised and waiting for turns.
	StateReady State = "ready"
	// StateRestarting: the CLI exited and a new one is loading.
	StateRestarting State = "restarting"
	// StateStopped: Close was called.
	StateStopped State = "stopped"
)

// Options configure a [Runner].
type Options struct {
	// Bin is the claude executable.
	Bin string
	// Config is the agent configuration turned into CLI flags.
	Config *agent.Config
	// Dir is the CLI's working directory (the workspace).
	Dir string
	// Env is the CLI's complete environment.
	Env []string
	// Logger receives lifecycle logs; nil discards them.
	Logger *zap.Logger
	// InitTimeout bounds CLI start-up (default 10m). A CLI that is merely
	// slow to start on a busy host is waited for, not killed: restarting it
	// would throw away its progress and make the host busier still.
	InitTimeout time.Duration
	// InterruptGrace is how long an interrupted turn may take to wind
	// down before the CLI is killed and restarted (default 10s).
	InterruptGrace time.Duration
	// TurnTimeout interrupts a turn that runs longer (0 = no limit). The
	// time a turn waits for the client's tool results does not count.
	TurnTimeout time.Duration
	// ToolResultTimeout is how long a turn waits for the results of the
	// client's function calls (POST /tool_results) before the calls get
	// error results and the turn goes on without a listener (default 10m).
	ToolResultTimeout time.Duration
	// WarmUp runs a first turn on the first CLI process before it is
	// reported ready, answered by the credential proxy itself (SetWarmUp),
	// then clears the conversation with /clear: the CLI loads much of
	// itself lazily on its first turn, and a warm-pool agent should have
	// done that before a user waits. The user's first message then follows
	// a note that /clear was run, and nothing of the warm-up.
	WarmUp bool
	// SetWarmUp switches the credential proxy's warm-up answers on and off
	// (required with WarmUp).
	SetWarmUp func(on bool)
	// State, if not nil, keeps the CLI session id, whether it has a
	// session, the turn count and the turn tree across restarts of the
	// agent: they are saved on every change, and a runner started on a
	// saved session resumes it (without warm-up or notice). The CLI's own
	// session files must then be kept too (CLAUDE_CONFIG_DIR on the same
	// volume).
	State *statefile.Store
	// SavesDir keeps copies of the files of branches the conversation
	// left, to put them back on a branch back (see saves.go). Default:
	// <state dir>/branches with State, else a temporary directory that
	// Close removes.
	SavesDir string
}

// Runner supervises the CLI process and runs one turn at a time on it.
type Runner struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	proc       *process
	state      State
	startErr   error
	changed    chan struct{} // closed and replaced on every state change
	sessionID  string
	hasSession bool   // a turn was sent, so the CLI has saved the session
	notice     string // told to the client at the start of the next turn
	warmedUp   bool   // the warm-up ran (or failed and is not retried)
	fromSaved  bool   // sessionID is a saved session no process has resumed yet
	resumed    bool   // the first CLI process resumed the saved session

	// The client's functions (turn_tools.go).
	toolNotice string // a tool_timeout notice for the next turn
	toolsSig   string // the previous turn's functions (clienttools.Signature)

	// Branches (under mu).
	forkFrom    string // with forkAt: the next process forks this session (Launch.ForkFrom)
	forkAt      string
	relaunching bool  // the process is being replaced for a branch, not lost
	tree        *tree // the turn tree
	tempSaves   bool  // opts.SavesDir is a temporary directory of ours

	turns    atomic.Int64
	restarts atomic.Int64

	turnMu    sync.Mutex
	current   *Turn     // the turn that holds the CLI: running, waiting for tool results or finishing unattended
	queued    *Turn     // a turn begun while current waited: it runs once current has ended
	freeSince time.Time // when the last turn released the CLI (the runner's start, before any)
}

// NewRunner starts supervising the CLI: the first process is spawned and
// initialised in the background at once.
func NewRunner(opts Options) *Runner {
	if opts.InitTimeout == 0 {
		opts.InitTimeout = 10 * time.Minute
	}
	if opts.InterruptGrace == 0 {
		opts.InterruptGrace = 10 * time.Second
	}
	if opts.ToolResultTimeout == 0 {
		opts.ToolResultTimeout = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.SavesDir == "" && opts.State != nil {
		opts.SavesDir = filepath.Join(opts.State.Dir(), "branches")
	}
	opts.Env = withCheckpoints(opts.Env)
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{
		opts:      opts,
		ctx:       ctx,
		cancel:    cancel,
		state:     StateStarting,
		changed:   make(chan struct{}),
		sessionID: newUUID(),
		freeSince: time.Now(),
	}
	saved := opts.State.Get()
	if saved.HasSession {
		r.sessionID, r.hasSession, r.fromSaved = saved.SessionID, true, true
	} else if saved.ForkFrom != "" {
		r.sessionID, r.forkFrom, r.forkAt, r.fromSaved = saved.SessionID, saved.ForkFrom, saved.ForkAt, true
	}
	r.tree = newTree(saved.Tree, saved.Tip)
	r.turns.Store(saved.Turns)
	r.wg.Add(1)
	go r.supervise()
	return r
}

// Status reports the supervisor state, the CLI session id and the last
// start-up error.
func (r *Runner) Status() (State, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state, r.sessionID, r.startErr
}

// Resumed reports whether the agent resumed a saved session (Options.State)
// when it started: its conversation goes on from before the restart.
func (r *Runner) Resumed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resumed
}

// withCheckpoints adds CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING=1 to the
// CLI's environment (nil: the agent's own) unless it is set: the CLI keeps
// file checkpoints in print mode only with it (claude 2.1.328; the SDK
// sets it for its enableFileCheckpointing option), and branches rewind
// files to them. CLAUDE_CODE_DISABLE_FILE_CHECKPOINTING still wins.
func withCheckpoints(env []string) []string {
	const name = "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING"
	if env == nil {
		env = os.Environ()
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return env
		}
	}
	return append(env[:len(env):len(env)], name+"=1")
}

// persist saves the session, the turn count and the turn tree to
// Options.State if they changed; a failure is logged, never fatal to a
// turn.
func (r *Runner) persist() {
	err := r.opts.State.Update(func(s *statefile.State) {
		r.mu.Lock()
		s.SessionID, s.HasSession = r.sessionID, r.hasSession
		s.ForkFrom, s.ForkAt = r.forkFrom, r.forkAt
		s.Tree, s.Tip = r.tree.list(), r.tree.tip
		r.mu.Unlock()
		s.Turns = r.turns.Load()
	})
	if err != nil {
		r.opts.Logger.Warn("agent state not saved", zap.Error(err))
	}
}

// Busy reports whether a turn holds the CLI: one that runs (with or
// without a client listening), one that waits for the client's tool
// results, or one queued behind such a turn.
func (r *Runner) Busy() bool {
	r.turnMu.Lock()
	defer r.turnMu.Unlock()
	return r.current != nil || r.queued != nil
}

// Idle reports how long no turn has held the CLI: since the last one
// released it, or since the runner started; false while a turn holds it.
func (r *Runner) Idle(now time.Time) (time.Duration, bool) {
	r.turnMu.Lock()
	defer r.turnMu.Unlock()
	if r.current != nil || r.queued != nil {
		return 0, false
	}
	return now.Sub(r.freeSince), true
}

// Turns counts finished turns.
func (r *Runner) Turns() int64 { return r.turns.Load() }

// Restarts counts CLI restarts.
func (r *Runner) Restarts() int64 { return r.restarts.Load() }

// PID is the current CLI process id, 0 if none runs.
func (r *Runner) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil || !r.proc.alive() {
		return 0
	}
	return r.proc.pid()
}

func (r *Runner) setState(s State, p *process, err error) {
	r.mu.Lock()
	r.state, r.proc, r.startErr = s, p, err
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// supervise keeps one initialised CLI process running until Close.
func (r *Runner) supervise() {
	defer r.wg.Done()
	backoff := 250 * time.Millisecond
	for {
		started := time.Now()
		p, err := r.spawn()
		if err != nil {
			r.opts.Logger.Error("claude start failed", zap.Error(err))
			r.setState(StateRestarting, nil, err)
			select {
			case <-r.ctx.Done():
				r.setState(StateStopped, nil, err)
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		r.opts.Logger.Info("claude ready", zap.Int("pid", p.pid()), zap.Duration("start_duration", time.Since(started)))
		r.setState(StateReady, p, nil)
		select {
		case <-p.done:
		case <-r.ctx.Done():
			p.stop(2 * time.Second)
			r.setState(StateStopped, nil, nil)
			return
		}
		r.mu.Lock()
		planned := r.relaunching
		r.relaunching = false
		if !planned && r.hasSession && r.notice == "" {
			r.notice = "The agent process stopped and was restarted; the conversation was resumed from its saved session."
		}
		r.mu.Unlock()
		if planned {
			r.opts.Logger.Info("claude stopped for a branch", zap.Int("pid", p.pid()))
		} else {
			r.restarts.Add(1)
			r.opts.Logger.Warn("claude exited", zap.Int("pid", p.pid()), zap.String("exit", p.exitDescription()))
		}
		r.setState(StateRestarting, nil, nil)
		if time.Since(started) > time.Minute {
			backoff = 250 * time.Millisecond
		}
	}
}

// spawn starts and initialises a CLI process, resuming the conversation
// when one exists. A session that cannot be resumed is replaced by a fresh
// one, and the next turn is told the context was lost.
func (r *Runner) spawn() (*process, error) {
	r.mu.Lock()
	l := Launch{SessionID: r.sessionID, Resume: r.hasSession, ForkFrom: r.forkFrom, ForkAt: r.forkAt}
	r.mu.Unlock()
	p, err := r.spawnWith(l)
	if err == nil {
		r.mu.Lock()
		if r.fromSaved {
			r.resumed, r.fromSaved = true, false
		}
		r.mu.Unlock()
		r.persist()
		return p, nil
	}
	if !l.Resume && l.ForkFrom == "" {
		return nil, err
	}
	r.opts.Logger.Warn("claude resume failed; starting a fresh session", zap.String("session_id", l.SessionID),
		zap.String("fork_from", l.ForkFrom), zap.Error(err))
	fresh := newUUID()
	p, err = r.spawnWith(Launch{SessionID: fresh})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.sessionID, r.hasSession, r.fromSaved = fresh, false, false
	r.forkFrom, r.forkAt = "", ""
	r.notice = "The agent process was restarted and its saved conversation could not be resumed; earlier context is lost."
	r.mu.Unlock()
	r.persist()
	return p, nil
}

func (r *Runner) spawnWith(l Launch) (*process, error) {
	args, err := LaunchArgs(r.opts.Config, l)
	if err != nil {
		return nil, err
	}
	p, err := startProcess(r.opts.Bin, args, r.opts.Dir, r.opts.Env)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.InitTimeout)
	defer cancel()
	if err := p.initialize(ctx); err != nil {
		p.kill()
		<-p.done
		return nil, err
	}
	r.mu.Lock()
	warm := r.opts.WarmUp && r.opts.SetWarmUp != nil && !r.warmedUp && !l.Resume && l.ForkFrom == ""
	r.warmedUp = true
	r.mu.Unlock()
	if !warm {
		return p, nil
	}
	started := time.Now()
	if err := r.warmUp(ctx, p); err != nil {
		// A half-done warm-up could leave its exchange in the
		// conversation: start over with a fresh CLI, without warm-up.
		r.opts.Logger.Warn("claude warm-up failed; starting a fresh process", zap.Error(err))
		p.kill()
		<-p.done
		return r.spawnWith(Launch{SessionID: newUUID()})
	}
	r.mu.Lock()
	r.sessionID = newUUID() // for a restart before the first turn; the live session is the cleared one
	r.mu.Unlock()
	r.opts.Logger.Info("claude warmed up", zap.Duration("duration", time.Since(started)))
	return p, nil
}

// warmUp runs one turn answered by the credential proxy, then /clear, and
// discards their output.
func (r *Runner) warmUp(ctx context.Context, p *process) error {
	r.opts.SetWarmUp(true)
	defer r.opts.SetWarmUp(false)
	for _, prompt := range []string{"Reply with OK.", "/clear"} {
		if err := p.sendUser(prompt); err != nil {
			return fmt.Errorf("send %q: %w", prompt, err)
		}
		tr := &Translator{}
		for !tr.Done() {
			select {
			case raw, ok := <-p.lines:
				if !ok {
					<-p.done
					return fmt.Errorf("claude exited during warm-up (%v): %s", p.err, p.stderr.String())
				}
				events, err := tr.Translate(raw, nil)
				if err != nil {
					return err
				}
				if n := len(events); n > 0 && events[n-1].Type == agent.EventError {
					return fmt.Errorf("warm-up turn %q failed: %s", prompt, events[n-1].Message)
				}
			case <-ctx.Done():
				return fmt.Errorf("warm-up turn %q: %w", prompt, ctx.Err())
			}
		}
	}
	return nil
}

// WaitReady returns when a CLI process is ready for a turn, the agent is
// shutting down, or ctx ends.
func (r *Runner) WaitReady(ctx context.Context) error {
	_, err := r.waitReady(ctx)
	return err
}

// waitReady returns the ready process, waiting while it starts.
func (r *Runner) waitReady(ctx context.Context) (*process, error) {
	for {
		r.mu.Lock()
		state, p, startErr, changed := r.state, r.proc, r.startErr, r.changed
		r.mu.Unlock()
		switch {
		case state == StateReady && p != nil && p.alive():
			return p, nil
		case state == StateStopped:
			return nil, errors.New("agent is shutting down")
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if startErr != nil {
				return nil, fmt.Errorf("claude is not ready (%v): %w", startErr, ctx.Err())
			}
			return nil, fmt.Errorf("claude is not ready: %w", ctx.Err())
		}
	}
}

// Close stops the CLI and the supervisor.
func (r *Runner) Close() {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tempSaves {
		_ = os.RemoveAll(r.opts.SavesDir)
	}
}

// Begin reserves the runner for one turn, or returns ErrBusy. The caller
// must call Turn.Run once, then nothing else. A turn that waits for the
// client's tool results, or runs on with nobody listening, does not make
// the runner busy: the calls it waits on get error results (the client
// sent a new message instead), it runs to its end unattended, and the new
// turn runs after it.
func (r *Runner) Begin() (*Turn, error) {
	r.turnMu.Lock()
	defer r.turnMu.Unlock()
	if r.queued != nil {
		return nil, ErrBusy
	}
	t := &Turn{
		r: r, upstream: make(chan int, 8), interruptCh: make(chan struct{}, 1), done: make(chan struct{}),
		resumeCh: make(chan resumption, 1), abandonCh: make(chan struct{}, 1),
	}
	cur := r.current
	switch {
	case cur == nil:
		r.current = t
	case cur.abandon(clienttools.NewMessage):
		t.after, r.queued = cur.done, t
	default:
		return nil, ErrBusy
	}
	return t, nil
}

// Interrupt asks the running turn, if any, to stop, and a turn queued
// behind it not to start. It reports whether there was such a turn.
func (r *Runner) Interrupt() bool {
	r.turnMu.Lock()
	defer r.turnMu.Unlock()
	for _, t := range []*Turn{r.current, r.queued} {
		if t != nil {
			select {
			case t.interruptCh <- struct{}{}:
			default:
			}
		}
	}
	return r.current != nil || r.queued != nil
}

// ObserveUpstream is told the HTTP status of every Anthropic API response
// the CLI receives; an authentication failure ends the running turn at once
// instead of after the CLI's retries.
func (r *Runner) ObserveUpstream(status int) {
	r.turnMu.Lock()
	t := r.current
	r.turnMu.Unlock()
	if t != nil {
		select {
		case t.upstream <- status:
		default:
		}
	}
}

// Turn is one reserved turn. Once it has started, its own goroutine (loop)
// reads the CLI's output until the turn's result; a listener (the stream of
// POST /query, then of each POST /tool_results) receives the events of one
// part of the turn. Between the parts the turn waits for the client's tool
// results and keeps the events that come meanwhile.
type Turn struct {
	r           *Runner
	upstream    chan int
	interruptCh chan struct{}
	after       <-chan struct{} // the end of the turn this one was queued behind
	done        chan struct{}   // closed when the turn has ended
	resumeCh    chan resumption // the client's tool results, for the loop
	abandonCh   chan struct{}   // a new query abandoned the waiting turn

	mu       sync.Mutex
	state    turnState
	listener *listener     // receives the events while attached
	kept     []agent.Event // events that came while waiting for tool results
	why      string        // unattended: the error result of the client's calls

	// The turn's goroutine's own (Run's, before it starts).
	q          agent.QueryRequest
	prompt     userMessage     // the user's message (with the instructions for the client's functions), its images and its uuid (the turn id)
	names      map[string]bool // the turn's client functions
	p          *process        // the CLI process running the turn
	tr         *Translator     // numbers the events (tr.seq) and sees the turn's end
	events     []agent.Event   // one line's events, reused
	reason     interruptReason // why the turn was interrupted, if it was
	released   bool            // the runner is free for the next turn
	clientGone bool            // the listener failed or left: the turn is interrupted
	resent     bool            // the prompt was given to a restarted process
	gotOutput  bool            // the process printed something during the turn
	waiting    []string        // the client calls the client was asked to run
	waitTimer  *time.Timer     // runs while the turn waits for the client's results
	clock      turnClock       // the turn timeout, stopped while the turn waits

	// What the turn's tools changed, for the turn tree.
	files   []string           // paths the file tools changed
	effects []statefile.Effect // tool calls checkpoints do not undo
}

// turnState says who receives a turn's events.
type turnState int

const (
	// stateAttached: a listener receives them (a new turn is attached).
	stateAttached turnState = iota
	// stateWaiting: the turn waits for the client's tool results; its
	// events are kept for the stream that brings them.
	stateWaiting
	// stateResuming: tool results were posted; the loop is attaching their
	// stream. Events are still kept.
	stateResuming
	// stateUnattended: nobody listens any more; events are dropped and
	// client calls get the error result why.
	stateUnattended
	// stateEnded: the turn is over.
	stateEnded
)

// listener is one client stream of a turn's events.
type listener struct {
	ctx  context.Context
	emit func(agent.Event) error
	done chan struct{} // closed when the stream gets no more events
}

func newListener(ctx context.Context, emit func(agent.Event) error) *listener {
	return &listener{ctx: ctx, emit: emit, done: make(chan struct{})}
}

type interruptReason int

const (
	reasonNone interruptReason = iota
	reasonClient
	reasonAuth
	reasonTimeout
)

// Run sends the query's message to the CLI and calls emit for every event
// of the turn until its result or error event, which is then the last one
// emitted, or until a client_tool_calls event: the turn then waits for
// Runner.Waiting and Turn.Continue, and Run returns. When ctx ends (the
// client left) or emit fails, the turn is interrupted and runs to its end
// without further emits. Run returns an error only when the turn could not
// start; everything after that is reported through events.
//
// A query with a Branch after a turn other than the tip first moves the
// conversation there (see switchBranch). The turn's id, reported in its
// result, is the uuid its user message gets in the CLI session.
func (t *Turn) Run(ctx context.Context, q agent.QueryRequest, emit func(agent.Event) error) error {
	l := newListener(ctx, emit)
	t.mu.Lock()
	t.listener = l
	t.mu.Unlock()
	if ok, err := t.waitPrevious(ctx); !ok {
		t.end()
		return err
	}
	p, err := t.r.waitReady(ctx)
	if err != nil {
		t.end()
		return err
	}
	t.prepare(q)
	t.begin(p)
	if !t.switchBranch(ctx, q.Branch) {
		t.end()
		return nil
	}
	t.sendNotice()
	if !t.sendPrompt(ctx) {
		t.end()
		return nil
	}
	t.register(t.prompt.UUID)
	go t.loop()
	<-l.done
	return nil
}

// waitPrevious waits for the turn this one was queued behind (if any) to
// end, then holds the CLI. It reports false with ctx's error when the
// client left first, and false without an error when the turn was
// interrupted meanwhile (its error event was emitted).
func (t *Turn) waitPrevious(ctx context.Context) (bool, error) {
	if t.after == nil {
		return true, nil
	}
	select {
	case <-t.after:
	case <-ctx.Done():
		return false, fmt.Errorf("the previous turn did not end: %w", ctx.Err())
	case <-t.interruptCh:
		t.release()
		t.send(agent.Event{Type: agent.EventError, Seq: 1, Code: agent.CodeInterrupted, Message: "the turn was interrupted"})
		return false, nil
	}
	r := t.r
	r.turnMu.Lock()
	r.current, r.queued = t, nil
	r.turnMu.Unlock()
	return true, nil
}

// prepare sets the turn up for q: its client functions, and the message
// with the instructions about them (clienttools.Instructions), which say
// which functions can be called when the set differs from the previous
// turn's.
func (t *Turn) prepare(q agent.QueryRequest) {
	r := t.r
	t.q = q
	t.names = make(map[string]bool, len(q.Tools))
	for _, ct := range q.Tools {
		t.names[ct.Name] = true
	}
	sig := clienttools.Signature(q.Tools)
	r.mu.Lock()
	changed := r.toolsSig != "" && r.toolsSig != sig
	r.toolsSig = sig
	r.mu.Unlock()
	t.prompt = userMessage{UUID: newUUID(), Text: q.Prompt + clienttools.Instructions(q, changed), Images: q.Images}
}

// begin sets the turn up on the ready process p: from now on the CLI
// holds a session (saved to Options.State), and pending notices go first.
func (t *Turn) begin(p *process) {
	r := t.r
	t.p = p
	t.tr = &Translator{ClassifyInterrupt: t.classifyInterrupt, TurnID: t.prompt.UUID, OnToolUse: t.noteTool}
	if len(t.names) > 0 {
		t.tr.ClientTool = t.clientTool
	}
	t.events = make([]agent.Event, 0, 4)
	r.sessionUsed()
	r.opts.Logger.Info("turn started", zap.Int("pid", p.pid()), zap.Bool("resumed_session", r.restarts.Load() > 0 || r.Resumed()),
		zap.Int("client_tools", len(t.names)))
}

// sessionUsed records that a turn goes to the CLI session: the CLI saves
// it from now on, and a new process resumes it (saved to Options.State).
func (r *Runner) sessionUsed() {
	r.mu.Lock()
	r.hasSession = true
	r.forkFrom, r.forkAt = "", ""
	r.mu.Unlock()
	r.persist()
}

// clientTool maps a tool name the model used to the client's name of one
// of the turn's functions.
func (t *Turn) clientTool(model string) (string, bool) {
	name, ok := clienttools.ClientName(model)
	return name, ok && t.names[name]
}

// release frees the runner for the next turn (once).
func (t *Turn) release() {
	if t.released {
		return
	}
	t.released = true
	r := t.r
	r.turnMu.Lock()
	if r.current == t {
		r.current = nil
	}
	if r.queued == t {
		r.queued = nil
	}
	if r.current == nil && r.queued == nil {
		r.freeSince = time.Now()
	}
	r.turnMu.Unlock()
}

// end ends the turn: the runner is released, the CLI's calls of client
// functions still waiting get error results, the listener is let go, and
// tool results posted meanwhile get what the turn kept.
func (t *Turn) end() {
	t.release()
	if t.p != nil {
		t.p.tools.End(clienttools.TurnOver)
	}
	if t.waitTimer != nil {
		t.waitTimer.Stop()
	}
	t.mu.Lock()
	l, kept := t.listener, t.kept
	t.listener, t.kept, t.state = nil, nil, stateEnded
	t.mu.Unlock()
	if l != nil {
		close(l.done)
	}
	select {
	case res := <-t.resumeCh:
		for _, e := range kept {
			if res.l.emit(e) != nil {
				break
			}
		}
		close(res.l.done)
	default:
	}
	close(t.done)
}

// send emits e to the listener; while the turn waits for tool results it
// is kept for the stream that brings them, and dropped when nobody will
// listen again. A listener that fails is let go and the turn interrupted.
func (t *Turn) send(e agent.Event) {
	t.mu.Lock()
	l := t.listener
	if l == nil {
		if t.state == stateWaiting || t.state == stateResuming {
			t.kept = append(t.kept, e)
		}
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	if err := l.emit(e); err != nil {
		t.clientLeft()
	}
}

// clientLeft lets the listener go after its stream failed or its client
// left: the turn runs on unattended, and the loop interrupts it.
func (t *Turn) clientLeft() {
	t.clientGone = true
	t.detach(stateUnattended, clienttools.ClientLeft)
}

// detach lets the listener go and puts the turn in state (with why, when
// unattended).
func (t *Turn) detach(state turnState, why string) {
	t.mu.Lock()
	l := t.listener
	t.listener, t.state = nil, state
	if state == stateUnattended {
		t.why, t.kept = why, nil
	}
	t.mu.Unlock()
	if l != nil {
		close(l.done)
	}
}

// leaving is closed when the listener's client goes away (nil without a
// listener).
func (t *Turn) leaving() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.listener == nil {
		return nil
	}
	return t.listener.ctx.Done()
}

// listenerContext is the listener's context, or the runner's without one.
func (t *Turn) listenerContext() context.Context {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.listener == nil {
		return t.r.ctx
	}
	return t.listener.ctx
}

// sendNotice emits the runner's pending notices, if any.
func (t *Turn) sendNotice() {
	r := t.r
	r.mu.Lock()
	note, toolNote := r.notice, r.toolNotice
	r.notice, r.toolNotice = "", ""
	r.mu.Unlock()
	for _, n := range []agent.Event{
		{Type: agent.EventNotice, Code: agent.CodeRestarted, Message: note},
		{Type: agent.EventNotice, Code: agent.CodeToolTimeout, Message: toolNote},
	} {
		if n.Message != "" {
			t.tr.seq++
			n.Seq = t.tr.seq
			t.send(n)
		}
	}
}

// sendPrompt gives the turn's message to the CLI. A process that is dying
// (its stdin is gone) hands it to its successor, which resumes the
// conversation. It reports whether the turn goes on; if not, the turn's
// error event was emitted.
func (t *Turn) sendPrompt(ctx context.Context) bool {
	r := t.r
	err := t.deliver(ctx, t.p)
	if err == nil {
		return true
	}
	t.resent = true
	np, err := r.successor(ctx, t.p)
	if err == nil {
		err = t.deliver(ctx, np)
	}
	if err != nil {
		t.release()
		t.send(agent.Event{Type: agent.EventError, Seq: t.tr.seq + 1, Code: agent.CodeInternal,
			Message: "the Claude Code process could not take the turn: " + err.Error()})
		return false
	}
	r.opts.Logger.Warn("claude exited as the turn began; sent it to the restarted process", zap.Int("pid", np.pid()))
	t.p = np
	t.sendNotice()
	return true
}

// deliver gives p the turn's client functions, then its message.
func (t *Turn) deliver(ctx context.Context, p *process) error {
	t.offerTools(ctx, p)
	return p.send(t.prompt)
}

// loop emits the events of the CLI's output until the turn's result, then
// ends the turn. Meanwhile it interrupts the turn when the client leaves
// or asks to, the API rejects the key or the turn runs too long, kills a
// CLI that does not wind an interrupted turn down within the grace
// period, and waits for the client's tool results (turn_tools.go).
func (t *Turn) loop() {
	defer t.end()
	t.clock.start(t.r.opts.TurnTimeout)
	defer t.clock.stop()
	var grace <-chan time.Time
	lines := t.p.lines
	for {
		select {
		case raw, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			t.noteOutput(raw)
			if t.handle(raw) {
				return
			}
		case <-t.leaving():
			t.clientLeft()
		case <-t.interruptCh:
			grace = t.interruptOnce(reasonClient, grace)
		case status := <-t.upstream:
			if status == 401 || status == 403 {
				grace = t.interruptOnce(reasonAuth, grace)
			}
		case <-t.clock.C:
			grace = t.interruptOnce(reasonTimeout, grace)
		case <-t.waitC():
			t.toolTimeout()
		case res := <-t.resumeCh:
			t.resume(res)
		case <-t.abandonCh:
			t.abandoned()
		case <-grace:
			t.r.opts.Logger.Warn("claude did not end an interrupted turn; killing it", zap.Int("pid", t.p.pid()))
			t.p.kill()
			grace = nil
		case <-t.p.done:
			if !t.processExited() {
				return
			}
			lines = t.p.lines
		}
		if t.clientGone && t.reason == reasonNone {
			grace = t.interruptOnce(reasonClient, grace)
		}
	}
}

// handle translates one line of the CLI's output, emits its events and
// reports whether it ended the turn.
func (t *Turn) handle(raw []byte) bool {
	var err error
	t.events, err = t.tr.Translate(raw, t.events[:0])
	if err != nil {
		t.r.opts.Logger.Warn("claude output not understood", zap.Error(err))
	}
	if t.tr.Done() {
		t.finish()
	}
	for _, e := range t.events {
		if e.Type == agent.EventClientToolCalls {
			t.announce(e)
			continue
		}
		t.refuseSubAgentCall(e)
		t.send(e)
	}
	return t.tr.Done()
}

// finish records the end of the turn (the turn count and the session id
// the CLI reported, saved to Options.State) and releases the runner, before
// the final event is emitted.
func (t *Turn) finish() {
	r := t.r
	r.turns.Add(1)
	r.mu.Lock()
	if t.tr.SessionID != "" {
		r.sessionID = t.tr.SessionID
	}
	r.mu.Unlock()
	t.record()
	r.persist()
	t.release()
}

// interruptOnce interrupts the turn for why unless it is being interrupted
// already, and returns the grace period's end (grace when nothing changed).
func (t *Turn) interruptOnce(why interruptReason, grace <-chan time.Time) <-chan time.Time {
	if t.reason != reasonNone {
		return grace
	}
	t.reason = why
	if _, err := t.p.control("interrupt"); err != nil {
		t.r.opts.Logger.Warn("claude interrupt failed", zap.Error(err))
	}
	return time.After(t.r.opts.InterruptGrace)
}

// classifyInterrupt is the error code and message of an interrupted turn.
func (t *Turn) classifyInterrupt() (string, string) {
	switch t.reason {
	case reasonAuth:
		return agent.CodeAuth, "the Anthropic API rejected the API key (HTTP 401)"
	case reasonTimeout:
		return agent.CodeTimeout, fmt.Sprintf("the turn ran longer than %s and was stopped", t.r.opts.TurnTimeout)
	default:
		return agent.CodeInterrupted, "the turn was interrupted"
	}
}

// lifecycleMarker starts the CLI's command_lifecycle lines.
var lifecycleMarker = []byte(`"type":"command_lifecycle"`)

// noteOutput records that the CLI printed raw for this turn: it had the
// prompt, so a crash now loses the turn rather than resending it. The
// "completed" command_lifecycle line of the previous turn's message comes
// after that turn's result (claude 2.1.328) and is no sign of this one.
func (t *Turn) noteOutput(raw []byte) {
	if bytes.Contains(raw, lifecycleMarker) && !bytes.Contains(raw, []byte(t.prompt.UUID)) {
		return
	}
	t.gotOutput = true
}

// processExited handles the exit of the turn's process: it emits what the
// process printed before it exited; if that did not end the turn and the
// process died before it read the prompt (killed or crashed just as the
// turn began), the prompt goes to its successor, which resumes the
// conversation. Otherwise the turn ends with an error event. It reports
// whether the turn goes on (on the successor, now t.p).
func (t *Turn) processExited() bool {
	r := t.r
	// stdout is closed before done: take what the process printed before
	// it exited.
	for raw := range t.p.lines {
		t.noteOutput(raw)
		if t.handle(raw) {
			return false
		}
	}
	if !t.gotOutput && !t.resent && t.reason == reasonNone {
		t.resent = true
		r.opts.Logger.Warn("claude exited before the turn began; resending it", zap.Int("pid", t.p.pid()))
		ctx := t.listenerContext()
		if np, err := r.waitReady(ctx); err == nil && t.deliver(ctx, np) == nil {
			t.p = np
			t.sendNotice()
			return true
		}
	}
	r.mu.Lock()
	r.notice = "The agent process stopped during the previous turn and was restarted; the conversation was resumed from its saved session."
	r.mu.Unlock()
	t.record()
	r.persist()
	code, msg := agent.CodeInternal, "the Claude Code process exited during the turn ("+t.p.exitDescription()+"); this turn was lost and the next turn resumes the conversation"
	if t.reason != reasonNone {
		code, msg = t.classifyInterrupt()
	}
	t.tr.seq++
	t.release()
	t.send(agent.Event{Type: agent.EventError, Seq: t.tr.seq, Code: code, Message: msg})
	return false
}

// successor waits for p to be gone (briefly: it is already dying) and
// returns the restarted process once it is ready.
func (r *Runner) successor(ctx context.Context, p *process) (*process, error) {
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
		<-p.done
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		np, err := r.waitReady(ctx)
		if err != nil || np != p {
			return np, err
		}
		// The supervisor has not noticed the exit yet.
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
