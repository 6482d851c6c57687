package module

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/configs"
	"github.com/agcluster/caddy-agcluster/internal/relay"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/session"
)

// chat serves one chat completion: validate, find the conversation's
// agent and where the request continues it, run the turn (or the rest of
// a turn that waited for the client's tool results), translate its events.
func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	req, perr := openai.ParseRequest(r.Body, h.parseOptions())
	if perr != nil {
		h.refuse(w, perr)
		return
	}
	caller, oerr := h.identify(r, "")
	if oerr != nil {
		h.refuse(w, oerr)
		return
	}
	if h.isTask(r, req) {
		h.task(w, r, req, caller.Key)
		return
	}
	cfg, ok := h.app.Config(req.Model)
	if !ok {
		h.refuse(w, openai.ModelNotFound(req.Model))
		return
	}
	if missing := configs.MissingMCPEnv(cfg); len(missing) > 0 {
		h.refuse(w, openai.BadRequest(fmt.Sprintf("model %q needs credentials for its MCP servers (%s): launch it with POST /api/agents/launch and mcp_env, then continue with X-Session-ID",
			req.Model, strings.Join(missing, ", ")), "model"))
		return
	}
	sreq, serr := agentsapi.SessionRequest(caller.Owner, cfg)
	if serr != nil {
		h.refuse(w, serr)
		return
	}
	if sreq.Conversation, serr = h.conversationID(r); serr != nil {
		h.refuse(w, serr)
		return
	}
	if sreq.Provider, serr = h.app.ResolveProvider("", cfg); serr != nil {
		h.refuse(w, serr)
		return
	}
	t := &chatTurn{h: h, w: w, r: r, req: req, key: caller.Key, results: req.ToolResults()}
	sreq.Prefixes = openai.PrefixFingerprints(t.known())
	sreq.Opening = openai.OpeningFingerprint(req.Messages)
	if id := strings.TrimSpace(r.Header.Get("X-Session-ID")); id != "" {
		if _, err := h.app.Manager().Find(r.Context(), caller.Owner, id); err == nil {
			// A launched session, continued by its id.
			sreq.SessionID = id
		}
	}
	// A new conversation's quotas (its conversations among them) are
	// asked only when an agent is to be made for it, before it is; not
	// when an agent replaces a lost one.
	sreq.Admit = func(context.Context) error {
		if oerr := t.quota.admit(true); oerr != nil {
			return oerr
		}
		return nil
	}
	t.sreq = sreq
	t.quota = h.app.quotaCheck(caller.Owner, sreq.ConfigID)
	// Quotas are checked before a turn starts. Tool results for the calls
	// a turn waits on continue that turn, which a quota never cuts off:
	// whether they do is known once the session is found.
	if t.results == nil {
		if oerr := t.quota.admit(false); oerr != nil {
			h.refuse(w, oerr)
			return
		}
	}
	// The agent is held from here: creating or waking it counts
	// (usage.Totals.AgentSeconds).
	t.started = time.Now()
	if oerr := t.acquire(); oerr != nil {
		h.refuse(w, oerr)
		return
	}
	if t.results != nil && !t.continuesCalls() {
		if oerr := t.quota.admit(false); oerr != nil {
			t.lease.Done(session.TurnEnd{})
			h.refuse(w, oerr)
			return
		}
	}
	t.run()
}

// acquire leases the request's session.
func (t *chatTurn) acquire() *openai.Error {
	lease, err := t.h.app.Manager().Acquire(t.r.Context(), t.sreq)
	if err != nil {
		return t.h.acquireError(t.r, err)
	}
	t.h.app.countConversation(lease, t.sreq.Owner)
	t.lease = lease
	t.w.Header().Set("X-Session-ID", lease.Session.ID)
	return nil
}

// chatTurn is one chat completion request on its leased session.
type chatTurn struct {
	h         *Handler
	w         http.ResponseWriter
	r         *http.Request
	req       *openai.ChatCompletionRequest
	key       string
	results   *openai.ToolResults // the client's results for tool calls, if the request ends with them
	sreq      session.Request     // the session request, kept to acquire the conversation anew
	lease     *session.Lease
	quota     *quotaCheck // the owner's quotas, read once for the request
	continues string      // what the request continued (continuesNext, ...), once started
	started   time.Time   // when the request began to hold the agent: before it was acquired
}

// known is what the client sent before its new input: the messages before
// the last user message, or before the tool results it ends with.
func (t *chatTurn) known() []openai.Message {
	if t.results != nil {
		return t.req.Messages[:t.results.Assistant+1]
	}
	return t.req.History()
}

// run starts the agent's part, relays it, and records where the
// conversation now ends.
func (t *chatTurn) run() {
	h := t.h
	st, oerr := t.startOrRestart()
	lease := t.lease
	opts := openai.Options{
		Model:        t.req.Model,
		IncludeUsage: t.req.IncludeUsage(),
		Reasoning:    h.Reasoning == nil || *h.Reasoning,
		Tools:        h.tools,
		KeepContent:  true,
	}
	var preamble []agent.Event
	if lease.Restarted {
		preamble = []agent.Event{{Type: agent.EventNotice, Code: agent.CodeRestarted,
			Message: "The conversation's agent stopped and was replaced; it was given this conversation's messages, but files from before are gone."}}
	}
	var end turnEnd
	if oerr != nil {
		lease.Done(session.TurnEnd{})
		t.h.refuse(t.w, oerr)
		end.outcome = outcomeError
	} else {
		defer st.Close()
		relayed := relayedTurn{release: lease.Release, done: t.done, opts: opts, preamble: preamble}
		if t.req.Stream {
			end = h.streamTurn(t.w, t.r, st, relayed)
		} else {
			end = h.completeTurn(t.w, t.r, st, relayed)
		}
	}
	isNew, provider := strconv.FormatBool(lease.New), lease.Session.Provider
	metrics.turns.WithLabelValues(end.outcome, isNew, t.continues, provider).Inc()
	metrics.turnSeconds.WithLabelValues(isNew, provider).Observe(time.Since(t.started).Seconds())
}

// What a request continued, for metrics.
const (
	continuesNext        = "next"         // the latest turn (or a new conversation)
	continuesBranch      = "branch"       // an earlier turn: regenerate, edit, a switch of branch
	continuesToolResults = "tool_results" // the turn that waited for the client's function results
)

// done records where the conversation now ends: the transcript the client
// will send next (its messages plus the answer), the agent's turn id and
// the tool calls it waits for. It runs before the answer's last bytes
// leave, so the client's next request always finds it.
func (t *chatTurn) done(end turnEnd) {
	next := append(t.req.Messages[:len(t.req.Messages):len(t.req.Messages)],
		openai.AssistantMessage(end.content, end.toolCalls))
	t.lease.Done(session.TurnEnd{Fingerprint: openai.Fingerprint(next), TurnID: end.turnID, PendingCalls: end.calls,
		SentHistory: len(t.known()) > 0})
	// Recorded before the answer's last bytes leave too: the client that
	// asks for its usage next finds this turn in it.
	t.h.app.record(turnUsage{owner: t.sreq.Owner, config: t.lease.Session.ConfigID, provider: t.lease.Session.Provider,
		turn: true, result: end.result, held: time.Since(t.started)})
}

// startOrRestart starts the agent's part of the request. When the start
// finds the conversation's agent gone (before its provider said so: a
// machine lost behind the gateway's back), the conversation is acquired
// anew, in a new agent given its history, and started there.
func (t *chatTurn) startOrRestart() (*agentclient.Stream, *openai.Error) {
	st, err := t.start()
	if errors.Is(err, session.ErrAgentLost) {
		t.h.logger.Warn("conversation's agent lost at the start of a turn; starting over in a new agent",
			zap.String("session_id", t.lease.Session.ID), zap.Error(err))
		if oerr := t.acquire(); oerr != nil {
			return nil, oerr
		}
		st, err = t.start()
	}
	var oerr *openai.Error
	if errors.As(err, &oerr) {
		return nil, oerr // the request's own fault, already a client error
	}
	if err != nil {
		return nil, t.h.queryError(t.r, err)
	}
	return st, nil
}

// start starts the agent's part of the request: the rest of the turn that
// waits for this request's tool results, or a new turn.
func (t *chatTurn) start() (*agentclient.Stream, error) {
	ctx := t.r.Context()
	t.continues = continuesNext
	if t.continuesCalls() {
		t.continues = continuesToolResults
		st, err := t.lease.ToolResults(ctx, agent.ToolResultsRequest{Results: t.results.Results, APIKey: t.key})
		var ae *agentclient.APIError
		if err == nil || !errors.As(err, &ae) || ae.Code != "no_pending_tool_calls" {
			return st, err
		}
		// The turn ended meanwhile (its wait timed out, or its agent
		// slept): the results go to a new turn as text.
		t.continues = continuesNext
		t.h.logger.Info("tool results arrived after their turn ended", zap.String("session_id", t.lease.Session.ID))
	}
	q, oerr := t.query()
	if oerr != nil {
		return nil, oerr
	}
	return t.lease.Turn(ctx, q)
}

// continuesCalls tells whether the request answers the very tool calls
// its session's agent waits for.
func (t *chatTurn) continuesCalls() bool {
	if t.results == nil || t.lease.New {
		return false
	}
	pending := t.lease.Session.PendingCalls()
	return len(pending) > 0 && slices.Equal(pending, callIDs(t.results.Calls)) &&
		t.lease.Session.Continuation(t.sreq.Prefixes).Branch == nil
}

// query builds a new turn: the user's new message (or tool results as
// text) after whatever the agent has not seen of the conversation, its
// images and attached files, the client's tools, and the point of the
// conversation the turn continues.
func (t *chatTurn) query() (agent.QueryRequest, *openai.Error) {
	req := t.req
	q := agent.QueryRequest{APIKey: t.key}
	req.ApplyTools(&q)
	message := req.LastUserText()
	if t.results != nil {
		message = resultsText(t.results)
	}
	known := t.known()
	var system string
	if t.lease.New {
		system = req.SystemText()
	} else {
		c := t.lease.Session.Continuation(t.sreq.Prefixes)
		q.Branch, known = c.Branch, known[c.Seen:]
		if c.Branch != nil {
			t.continues = continuesBranch
		}
		if c.Branch != nil && c.Branch.After == "" {
			system = req.SystemText() // the agent starts over
		}
	}
	if t.results == nil {
		att := req.Attachments()
		images, oerr := t.h.images(t.r.Context(), att.Images)
		if oerr != nil {
			return q, oerr
		}
		q.Images = images
		saved, oerr := t.upload(att.Files)
		if oerr != nil {
			return q, oerr
		}
		message += saved
	}
	q.Prompt = seedPrompt(system, known, message)
	return q, nil
}

// callIDs lists the ids of calls.
func callIDs(calls []openai.ToolCall) []string {
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.ID
	}
	return ids
}

// resultsText gives tool results to a turn that did not wait for them (its
// wait ended, or its agent slept), as text.
func resultsText(tr *openai.ToolResults) string {
	var b strings.Builder
	b.WriteString("Results of the functions you called (they arrived after your turn ended):")
	names := make(map[string]string, len(tr.Calls))
	for _, c := range tr.Calls {
		names[c.ID] = c.Function.Name
	}
	for _, r := range tr.Results {
		fmt.Fprintf(&b, "\n%s (%s): %s", names[r.ID], r.ID, r.Content)
	}
	return b.String()
}

// uploadDir is where attached files land in the workspace.
const uploadDir = "uploads/"

// upload writes the request's attached files into the agent's workspace
// and returns a note for the prompt naming them.
func (t *chatTurn) upload(files []openai.File) (string, *openai.Error) {
	if len(files) == 0 {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("\n\n(The user attached files; they are in the workspace:")
	for _, f := range files {
		data, err := f.Bytes()
		if err == nil {
			var path string
			path, err = t.lease.Session.Client().WriteFile(t.r.Context(), uploadDir+f.Filename, data)
			fmt.Fprintf(&b, " %s (%d bytes)", path, len(data))
		}
		if err != nil {
			return "", t.h.queryError(t.r, fmt.Errorf("upload %s: %w", f.Filename, err))
		}
	}
	b.WriteString(")")
	return b.String(), nil
}

// seedPrompt puts what the agent has not seen of the conversation before
// the user's new message: the client's instructions (system) and earlier
// messages, as text.
func seedPrompt(system string, unseen []openai.Message, message string) string {
	var b strings.Builder
	if system != "" {
		b.WriteString("Instructions from the client application:\n")
		b.WriteString(system)
		b.WriteString("\n\n")
	}
	if hist := openai.FormatHistory(unseen); hist != "" {
		b.WriteString(hist)
		b.WriteString("\n\n")
	}
	if b.Len() == 0 {
		return message
	}
	b.WriteString("The user's new message:\n")
	b.WriteString(message)
	return b.String()
}

// Turn outcomes for metrics.
const (
	outcomeOK         = "ok"
	outcomeError      = "error"
	outcomeClientGone = "client_gone"
)

// turnEnd is what a relayed turn leaves: the content sent, the outcome,
// the agent's turn id when it finished, and the client tool calls it
// waits for when it stopped for them.
type turnEnd struct {
	content   string
	toolCalls []openai.ToolCall // the client tool calls sent, as the client sends them back
	outcome   string
	turnID    string
	calls     []string      // their ids, which the agent's turn waits on
	result    *agent.Result // the turn's result (usage, cost), when it reported one
}

// relayedTurn is how a turn's events are relayed: release frees the
// session as soon as the turn's end is seen; done (if set) gets the turn's
// end before the answer's last bytes are written, and frees the session if
// release did not.
type relayedTurn struct {
	release  func()
	done     func(turnEnd)
	opts     openai.Options
	preamble []agent.Event
}

func (rt relayedTurn) finish(end turnEnd) {
	if rt.done != nil {
		rt.done(end)
	}
}

// streamTurn relays the turn's events from st to the client as chunks.
func (h *Handler) streamTurn(w http.ResponseWriter, r *http.Request, st relay.Source[agent.Event], rt relayedTurn) turnEnd {
	openai.SetStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	sw := openai.NewStreamWriter(w, rc.Flush, rt.opts)
	if err := sw.Start(); err != nil {
		end := turnEnd{outcome: outcomeClientGone}
		rt.finish(end)
		return end
	}
	for _, e := range rt.preamble {
		_ = sw.Event(e)
	}
	// The stream's last bytes go out with the turn's terminal event: the
	// turn's end is recorded before that event is written.
	sink := &turnSink{h: h, r: r, release: rt.release, sw: sw, finish: func(end turnEnd) {
		end.content, end.toolCalls = sw.Content(), sw.ToolCalls()
		rt.finish(end)
	}}
	err := relay.Copy[agent.Event](r.Context(), sink, st, relay.Options{KeepAlive: time.Duration(h.KeepAlive)})
	end := sink.end()
	var we *relay.WriteError
	switch {
	case err == nil:
	case errors.As(err, &we) || r.Context().Err() != nil:
		// The client is gone; Copy closed the agent stream, which
		// interrupts the turn.
		end.outcome = outcomeClientGone
	default:
		rid := sink.requestID()
		h.logger.Warn("agent stream broke", zap.String("request_id", rid), zap.Error(err))
		_ = sw.Fail(agentsapi.StreamBroke(rid))
	}
	end.content, end.toolCalls = sw.Content(), sw.ToolCalls()
	if !sink.finished {
		rt.finish(end)
	}
	_ = sw.Finish()
	return end
}

// completeTurn collects the turn's events from st and answers with one
// chat.completion.
func (h *Handler) completeTurn(w http.ResponseWriter, r *http.Request, st relay.Source[agent.Event], rt relayedTurn) turnEnd {
	col := openai.NewCollector(rt.opts)
	for _, e := range rt.preamble {
		col.Event(e)
	}
	sink := &turnSink{h: h, r: r, release: rt.release, col: col}
	if err := relay.Copy[agent.Event](r.Context(), sink, st, relay.Options{}); err != nil {
		rid := sink.requestID()
		if r.Context().Err() == nil {
			h.logger.Warn("agent stream broke", zap.String("request_id", rid), zap.Error(err))
		}
		col.Fail(agentsapi.StreamBroke(rid))
	}
	rt.release()
	end := sink.end()
	if e := col.Err(); e != nil {
		end.outcome = outcomeError
		if !col.HasOutput() {
			rt.finish(end)
			oe := openai.FromAgentError(*e)
			oe.RequestID = sink.rid // set when the error was concealed
			oe.Write(w)
			return end
		}
	}
	comp := col.Completion()
	if len(comp.Choices) > 0 {
		end.content, end.toolCalls = comp.Choices[0].Message.Content, comp.Choices[0].Message.ToolCalls
	}
	rt.finish(end)
	openai.WriteCompletion(w, comp)
	return end
}

// turnSink takes a turn's agent events from the relay: as chunks of a
// stream (sw) or into a completion (col). It frees the session for the
// next turn as soon as the turn's end is seen (its result, its error, or
// client tool calls it waits on), before the client reads it, and
// conceals the detail of internal agent errors.
type turnSink struct {
	h       *Handler
	r       *http.Request
	release func()
	sw      *openai.StreamWriter
	col     *openai.Collector
	ok      bool          // the turn's result (or its tool calls) was seen
	turnID  string        // the finished turn's id
	calls   []string      // the client tool calls the turn waits for
	rid     string        // the request id, once needed
	result  *agent.Result // the turn's result, with its usage

	finish   func(turnEnd) // told of the turn's end before its terminal event is written (streams)
	finished bool          // finish ran
}

// requestID is the request's id, the same for every use.
func (s *turnSink) requestID() string {
	if s.rid == "" {
		s.rid = agentsapi.RequestID(s.r)
	}
	return s.rid
}

// end is the turn's end as the sink saw it.
func (s *turnSink) end() turnEnd {
	e := turnEnd{outcome: outcomeError, turnID: s.turnID, calls: s.calls, result: s.result}
	if s.ok {
		e.outcome = outcomeOK
	}
	return e
}

func (s *turnSink) Write(e agent.Event) error {
	if c := s.h.logger.Check(zapcore.DebugLevel, "agent event"); c != nil {
		c.Write(zap.String("type", string(e.Type)))
	}
	if terminal(e.Type) {
		s.ok = e.Type != agent.EventError
		if e.Result != nil {
			s.turnID, s.result = e.Result.TurnID, e.Result
		}
		for _, c := range e.Calls {
			s.calls = append(s.calls, c.ID)
		}
		s.release() // the agent is free before the client reads the end
		agentsapi.ConcealAgentError(s.h.logger, s.requestID, &e)
	}
	if s.col != nil {
		s.col.Event(e)
		return nil
	}
	err := s.sw.Buffer(e) // written when the relay flushes, after this
	if terminal(e.Type) && s.finish != nil && !s.finished {
		s.finished = true
		s.finish(s.end())
	}
	return err
}

// terminal reports whether an event of type t ends the agent's part of a
// turn (for now: its tool calls wait for the client).
func terminal(t agent.EventType) bool {
	return t == agent.EventResult || t == agent.EventError || t == agent.EventClientToolCalls
}

func (s *turnSink) KeepAlive() error {
	if s.col != nil {
		return nil
	}
	return s.sw.BufferKeepAlive()
}

func (s *turnSink) Flush() error {
	if s.col != nil {
		return nil
	}
	return s.sw.Flush()
}
