package claude

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/clienttools"
)

// The client's own functions (agent.QueryRequest.Tools) in a turn. The CLI
// calls them through the process's MCP server (clienttools.Server), which
// holds each call until the turn answers it. When the main agent's message
// has called some, the turn emits one client_tool_calls event, lets its
// listener go (the client's stream ends there) and waits: POST
// /tool_results (Runner.Waiting, Turn.Continue) answers the calls and
// attaches the stream that receives the rest of the turn, beginning with
// the events that came meanwhile. A turn that waits longer than
// Options.ToolResultTimeout, or that a new query abandons, answers the
// calls with error results and runs to its end unattended.

// ErrNoPendingToolCalls is returned by Runner.Waiting when no turn waits
// for the results of the client's function calls.
var ErrNoPendingToolCalls = errors.New("no turn is waiting for client tool results")

// toolsListTimeout bounds the wait for the CLI to list the client's
// functions again after they changed.
const toolsListTimeout = 10 * time.Second

// resumption is one POST /tool_results, for the turn's goroutine.
type resumption struct {
	l       *listener
	results []agent.ToolResult
}

// Waiting claims the turn that waits for the results of the client's
// function calls, for one POST /tool_results; the caller must then call
// Turn.Continue once. Between the two the turn waits on (no timeout, no
// other claim), so the caller can set the API key the rest of the turn
// uses first.
func (r *Runner) Waiting() (*Turn, error) {
	r.turnMu.Lock()
	t := r.current
	r.turnMu.Unlock()
	if t == nil || !t.claim() {
		return nil, ErrNoPendingToolCalls
	}
	return t, nil
}

// claim moves a waiting turn to resuming, and reports whether it waited.
func (t *Turn) claim() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateWaiting {
		return false
	}
	t.state = stateResuming
	return true
}

// Continue answers the waiting calls with results (by id; a call left out
// gets an error result saying the client did not run it) and emits the
// rest of the turn like Run: the events kept while the turn waited, then
// the new ones, until the turn's result or error event or the next
// client_tool_calls event. A client that leaves interrupts the turn. It
// returns an error only when the turn ended before the results reached it.
func (t *Turn) Continue(ctx context.Context, results []agent.ToolResult, emit func(agent.Event) error) error {
	l := newListener(ctx, emit)
	t.resumeCh <- resumption{l: l, results: results}
	select {
	case <-l.done:
		return nil
	case <-t.done:
		select {
		case <-l.done:
			return nil
		default:
			return errors.New("the turn ended before the tool results reached it")
		}
	}
}

// offerTools makes the turn's functions those that p's MCP server lists,
// and when they changed since the CLI last listed them, tells the CLI and
// waits until it has listed them again, so the turn's message is built
// with them.
func (t *Turn) offerTools(ctx context.Context, p *process) {
	if !p.tools.SetTools(t.q.Tools) {
		return
	}
	err := p.toolsChanged()
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, toolsListTimeout)
		err = p.tools.WaitListed(wctx)
		cancel()
	}
	if err != nil {
		t.r.opts.Logger.Warn("client functions not updated in the cli", zap.Error(err))
	}
}

// announce hands the client's function calls of one message to the
// listener and ends its stream: the turn waits for the results. Without a
// listener the calls get their error result at once.
func (t *Turn) announce(e agent.Event) {
	ids := make([]string, len(e.Calls))
	for i, c := range e.Calls {
		ids[i] = c.ID
	}
	t.mu.Lock()
	state, why, l := t.state, t.why, t.listener
	switch state {
	case stateWaiting, stateResuming:
		// Not expected (the CLI waits for the earlier calls): the stream
		// that brings their results gets these too.
		t.kept = append(t.kept, e)
		t.waiting = append(t.waiting, ids...)
	case stateAttached:
		// Waiting before the event goes out: its client may post the
		// results the moment it reads it.
		t.listener, t.state = nil, stateWaiting
	}
	t.mu.Unlock()
	switch {
	case state == stateWaiting || state == stateResuming:
		return
	case l == nil:
		t.answerAll(ids, why)
		return
	}
	t.waiting = ids
	t.waitTimer = time.NewTimer(t.r.opts.ToolResultTimeout)
	t.clock.pause()
	err := l.emit(e)
	close(l.done)
	if err != nil {
		t.clientGone = true
		t.abandon(clienttools.ClientLeft)
		return
	}
	t.r.opts.Logger.Info("turn waits for client tool results", zap.Int("calls", len(ids)))
}

// waitC fires when the client took too long to send the results.
func (t *Turn) waitC() <-chan time.Time {
	if t.waitTimer == nil {
		return nil
	}
	return t.waitTimer.C
}

// stopWaiting ends the wait for the client's results (the turn timeout
// runs again).
func (t *Turn) stopWaiting() {
	if t.waitTimer == nil {
		return
	}
	t.waitTimer.Stop()
	t.waitTimer = nil
	t.clock.resume()
}

// resume attaches the stream of POST /tool_results, emits to it what the
// turn kept while it waited, and answers the calls with the client's
// results.
func (t *Turn) resume(res resumption) {
	t.mu.Lock()
	kept := t.kept
	t.kept, t.listener, t.state = nil, res.l, stateAttached
	t.mu.Unlock()
	t.stopWaiting()
	for _, e := range kept {
		t.send(e)
	}
	byID := make(map[string]agent.ToolResult, len(res.results))
	for _, r := range res.results {
		if _, dup := byID[r.ID]; !dup {
			byID[r.ID] = r
		}
	}
	for _, id := range t.waiting {
		r, ok := byID[id]
		delete(byID, id)
		if !ok {
			t.p.tools.Answer(id, clienttools.Result{Content: clienttools.NotRun, IsError: true})
			continue
		}
		t.p.tools.Answer(id, clienttools.Result{Content: r.Content, IsError: r.IsError})
	}
	t.waiting = nil
	for id := range byID {
		t.r.opts.Logger.Warn("tool result for a call the turn does not wait on", zap.String("id", id))
	}
}

// toolTimeout gives up on the client's results: the calls get error
// results, the next turn's stream is told (a tool_timeout notice) and the
// turn runs to its end unattended.
func (t *Turn) toolTimeout() {
	t.mu.Lock()
	if t.state != stateWaiting {
		t.mu.Unlock()
		return // the results came just in time
	}
	t.mu.Unlock()
	limit := t.r.opts.ToolResultTimeout
	t.detach(stateUnattended, fmt.Sprintf(clienttools.TimedOut, limit))
	t.stopWaiting()
	t.answerAll(t.waiting, fmt.Sprintf(clienttools.TimedOut, limit))
	t.waiting = nil
	r := t.r
	r.mu.Lock()
	r.toolNotice = fmt.Sprintf("The client did not send the results of its function calls within %s: the model was told so, and the previous turn went on without them (its answer was not delivered).", limit)
	r.mu.Unlock()
	r.opts.Logger.Warn("client tool results timed out", zap.Duration("timeout", limit))
}

// abandon gives up on the client's results because a new query came: the
// turn runs to its end unattended (the loop answers the calls). It reports
// false when a client listens to the turn (the new query must wait).
func (t *Turn) abandon(why string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case stateWaiting:
		t.state, t.why, t.kept = stateUnattended, why, nil
		select {
		case t.abandonCh <- struct{}{}:
		default:
		}
		return true
	case stateUnattended, stateEnded:
		return true
	}
	return false
}

// abandoned answers the calls of a turn a new query abandoned.
func (t *Turn) abandoned() {
	t.mu.Lock()
	why := t.why
	t.mu.Unlock()
	t.stopWaiting()
	t.answerAll(t.waiting, why)
	t.waiting = nil
}

// answerAll answers the calls ids with the error result why.
func (t *Turn) answerAll(ids []string, why string) {
	for _, id := range ids {
		t.p.tools.Answer(id, clienttools.Result{Content: why, IsError: true})
	}
}

// refuseSubAgentCall answers a sub-agent's call of a client function with
// an error: only the main agent's calls go to the client.
func (t *Turn) refuseSubAgentCall(e agent.Event) {
	if e.Type != agent.EventToolUse || e.ParentToolUseID == "" {
		return
	}
	if _, ok := t.clientTool(e.Name); ok {
		t.p.tools.Answer(e.ToolUseID, clienttools.Result{Content: clienttools.SubAgent, IsError: true})
	}
}

// turnClock is the turn timeout (Options.TurnTimeout), stopped while the
// turn waits for the client.
type turnClock struct {
	// C fires when the time is up (nil without a timeout).
	C     <-chan time.Time
	timer *time.Timer
	left  time.Duration // what is left, from since
	since time.Time
}

func (c *turnClock) start(d time.Duration) {
	if d <= 0 {
		return
	}
	c.left, c.since = d, time.Now()
	c.timer = time.NewTimer(d)
	c.C = c.timer.C
}

func (c *turnClock) pause() {
	if c.timer != nil && c.timer.Stop() {
		c.left -= time.Since(c.since)
	}
}

func (c *turnClock) resume() {
	if c.timer != nil {
		c.since = time.Now()
		c.timer.Reset(max(c.left, 0))
	}
}

func (c *turnClock) stop() {
	if c.timer != nil {
		c.timer.Stop()
	}
}
