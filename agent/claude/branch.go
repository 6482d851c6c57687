package claude

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/statefile"
)

// Branches.
//
// Every turn's user message is sent with a uuid of the agent's choosing,
// which is also the turn's id: the CLI keeps it as the message's uuid in
// its session and keys the turn's file checkpoint by it (the workspace as
// the turn found it; CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING=1 switches
// checkpoints on in print mode). The turn's last message uuid (Translator.
// End) is where a fork made later continues after it.
//
// A branch after turn X, from the tip T:
//  1. the files of the abandoned turns (T back to the common ancestor A)
//     are rewound, on the running CLI, to the checkpoint of the first
//     abandoned turn; the files that changed are copied first
//     (Turn.Saved), so that a branch back to T can put them back;
//  2. the CLI is restarted at X: X the last turn of its session, plain
//     --resume (switching back to a branch continues it exactly); else a
//     fork of X's session cut after X (--resume-session-at X.End
//     --fork-session), a new session; "" a fresh session;
//  3. the files of the entered turns (A down to X) are put back: to the
//     checkpoint of the turn that followed X in its session if there is
//     one (the workspace as X left it), else from the copies saved when
//     the conversation left X.
//
// What checkpoints do not cover (Bash and other tools that are neither
// file tools nor read-only, or files that could not be restored) is told
// in a "branch" notice first in the turn.

// fileTools change files through the CLI, which checkpoints them.
var fileTools = map[string]bool{"Write": true, "Edit": true, "MultiEdit": true, "NotebookEdit": true}

// harmlessTools change no workspace file. Any tool in neither list (Bash,
// MCP tools, ...) may have changed the workspace in ways checkpoints do not
// see. Sub-agent tools (Task, Agent) are judged by the calls their
// sub-agents make, which the stream shows too.
var harmlessTools = map[string]bool{
	"Read": true, "Glob": true, "Grep": true, "LS": true, "WebFetch": true, "WebSearch": true,
	"TodoWrite": true, "TodoRead": true, "ToolSearch": true, "Task": true, "Agent": true, "Skill": true,
	"ExitPlanMode": true, "BashOutput": true, "TaskOutput": true, "ListMcpResources": true,
	"ReadMcpResource": true, "ListAgents": true, "CronList": true,
}

// noteTool records what a tool call of the turn may have changed.
func (t *Turn) noteTool(name string, input json.RawMessage) {
	var in struct {
		FilePath     string `json:"file_path"`
		NotebookPath string `json:"notebook_path"`
		Command      string `json:"command"`
	}
	_ = json.Unmarshal(input, &in) // a tool without these fields leaves them empty
	switch {
	case fileTools[name]:
		path := in.FilePath
		if path == "" {
			path = in.NotebookPath
		}
		if path != "" && !contains(t.files, path) {
			t.files = append(t.files, path)
		}
	case harmlessTools[name]:
	default:
		e := statefile.Effect{Tool: name}
		if name == "Bash" {
			e.Detail = in.Command
		}
		t.effects = append(t.effects, e)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// CheckBranch tells whether a query may branch as b asks: an error
// wrapping ErrUnknownTurn when b names a turn the agent does not know.
// Turns are never removed, so a turn known now stays known.
func (r *Runner) CheckBranch(b *agent.Branch) error {
	if b == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.tree.known(b.After) {
		return fmt.Errorf("%w %q", ErrUnknownTurn, b.After)
	}
	return nil
}

// switchBranch moves the conversation to after b.After (a no-op for nil
// or the tip), on the way emitting a notice of what could not be
// restored. It reports whether the turn goes on; if not, the turn's error
// event was emitted.
func (t *Turn) switchBranch(ctx context.Context, b *agent.Branch) bool {
	if b == nil {
		return true
	}
	r := t.r
	r.mu.Lock()
	plan, err := r.tree.plan(b.After)
	r.mu.Unlock()
	if err == nil && plan.noop() {
		return true
	}
	if err == nil {
		var n branchNotice
		t.undo(ctx, plan, &n)
		var np *process
		if np, err = r.relaunch(ctx, t.p, r.launchAfter(plan.after)); err == nil {
			t.p = np
			t.redo(ctx, plan, &n)
			r.mu.Lock()
			r.tree.tip = plan.after
			r.mu.Unlock()
			r.sessionUsed()
			r.opts.Logger.Info("branched", zap.String("after", plan.after), zap.Int("abandoned", len(plan.abandoned)),
				zap.Int("entered", len(plan.entered)), zap.Int("pid", np.pid()))
			if msg := n.message(r.opts.Dir); msg != "" {
				t.tr.seq++
				t.send(agent.Event{Type: agent.EventNotice, Seq: t.tr.seq, Code: agent.CodeBranch, Message: msg})
			}
			return true
		}
	}
	t.release()
	t.send(agent.Event{Type: agent.EventError, Seq: t.tr.seq + 1, Code: agent.CodeInternal,
		Message: "the conversation could not go back to the earlier turn: " + err.Error()})
	return false
}

// undo rewinds the files the abandoned turns changed, after saving them
// for a later branch back to the tip.
func (t *Turn) undo(ctx context.Context, plan branchPlan, n *branchNotice) {
	if len(plan.abandoned) == 0 {
		return
	}
	for _, turn := range plan.abandoned {
		n.notUndone = append(n.notUndone, turn.Irreversible...)
	}
	first, tip := plan.abandoned[len(plan.abandoned)-1], plan.abandoned[0]
	files := filesOf(plan.abandoned)
	dry, err := t.p.rewindFiles(ctx, first.ID, true)
	if err != nil {
		t.r.opts.Logger.Warn("files not rewound", zap.String("turn", first.ID), zap.Error(err))
		n.filesNotUndone = files
		return
	}
	if len(dry.FilesChanged) == 0 {
		return
	}
	t.r.saveFiles(tip.ID, plan.ancestor, dry.FilesChanged)
	if _, err := t.p.rewindFiles(ctx, first.ID, false); err != nil {
		t.r.opts.Logger.Warn("files not rewound", zap.String("turn", first.ID), zap.Error(err))
		n.filesNotUndone = dry.FilesChanged
	}
}

// redo puts back the files the entered turns changed.
func (t *Turn) redo(ctx context.Context, plan branchPlan, n *branchNotice) {
	for _, turn := range plan.entered {
		n.notRerun = append(n.notRerun, turn.Irreversible...)
	}
	if len(plan.entered) > 0 {
		n.filesNotRestored = t.reach(ctx, plan.after, plan.ancestor)
	}
}

// reach brings the files from the state after turn from (which they are
// in) to the state after turn id, a descendant of from. It returns the
// files it could not restore.
func (t *Turn) reach(ctx context.Context, id, from string) []string {
	r := t.r
	r.mu.Lock()
	seg := r.tree.segment(from, id)
	next := r.tree.continuation(id)
	var saved *statefile.Saved
	if turn := r.tree.get(id); turn != nil && turn.Saved != nil {
		saved = turn.Clone().Saved
	}
	deeper := saved != nil && r.tree.isAncestor(from, saved.Base)
	r.mu.Unlock()
	files := filesOf(seg)
	if len(files) == 0 {
		return nil // the file tools changed nothing on the way
	}
	if next != nil {
		// The turn after id in id's session found the workspace as id
		// left it; the restarted CLI carries that checkpoint.
		_, err := t.p.rewindFiles(ctx, next.ID, false)
		if err == nil {
			return nil
		}
		r.opts.Logger.Warn("files not restored from checkpoint", zap.String("turn", next.ID), zap.Error(err))
	}
	if saved == nil {
		return files
	}
	var failed []string
	if deeper {
		failed = t.reach(ctx, saved.Base, from)
	}
	return append(failed, r.restoreFiles(id, saved)...)
}

// filesOf lists the files the turns' file tools changed, each once.
func filesOf(turns []*statefile.Turn) []string {
	var files []string
	for _, turn := range turns {
		for _, f := range turn.Files {
			if !contains(files, f) {
				files = append(files, f)
			}
		}
	}
	return files
}

// launchAfter is how the CLI starts to continue after turn after.
func (r *Runner) launchAfter(after string) Launch {
	r.mu.Lock()
	defer r.mu.Unlock()
	turn := r.tree.get(after)
	switch {
	case turn == nil:
		return Launch{SessionID: newUUID()}
	case r.tree.continuation(after) == nil:
		return Launch{SessionID: turn.Session, Resume: true}
	default:
		return Launch{SessionID: newUUID(), ForkFrom: turn.Session, ForkAt: turn.End}
	}
}

// relaunch replaces the turn's process p with one started as l says
// (saved to Options.State first) and returns it once it is ready. A
// process already on l's session is kept.
func (r *Runner) relaunch(ctx context.Context, p *process, l Launch) (*process, error) {
	r.mu.Lock()
	if l.Resume && l.SessionID == r.sessionID && r.hasSession && r.forkFrom == "" && p.alive() {
		r.mu.Unlock()
		return p, nil
	}
	r.sessionID, r.hasSession, r.forkFrom, r.forkAt = l.SessionID, l.Resume, l.ForkFrom, l.ForkAt
	r.relaunching = true
	r.mu.Unlock()
	r.persist()
	p.stop(r.opts.InterruptGrace)
	return r.successor(ctx, p)
}

// register adds the turn with id to the tree, after the tip, as the new
// tip.
func (t *Turn) register(id string) {
	r := t.r
	r.mu.Lock()
	r.tree.add(statefile.Turn{ID: id, Parent: r.tree.tip, Session: r.sessionID, End: id})
	r.tree.tip = id
	r.mu.Unlock()
	r.persist()
}

// record stores what the turn learned about itself in its tree node (the
// caller persists).
func (t *Turn) record() {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	turn := r.tree.get(t.tr.TurnID)
	if turn == nil {
		return
	}
	if t.tr.SessionID != "" {
		turn.Session = t.tr.SessionID
	}
	if t.tr.End != "" {
		turn.End = t.tr.End
	}
	turn.Files, turn.Irreversible = t.files, t.effects
}

// branchNotice collects what a branch could not restore.
type branchNotice struct {
	notUndone        []statefile.Effect // tool calls of abandoned turns
	filesNotUndone   []string           // files of abandoned turns not rewound
	notRerun         []statefile.Effect // tool calls of entered turns
	filesNotRestored []string           // files of entered turns not put back
}

// maxListed caps the items a notice names of each kind.
const maxListed = 5

// message is the notice's one-line text, "" when everything was restored.
// Paths in dir are shown relative to it.
func (n *branchNotice) message(dir string) string {
	var parts []string
	if len(n.filesNotUndone) > 0 {
		parts = append(parts, "files changed by the turns left behind could not be restored ("+listFiles(n.filesNotUndone, dir)+")")
	}
	if len(n.notUndone) > 0 {
		parts = append(parts, "what commands in the turns left behind changed could not be restored ("+listEffects(n.notUndone)+")")
	}
	if len(n.filesNotRestored) > 0 {
		parts = append(parts, "files of the branch returned to could not be restored ("+listFiles(n.filesNotRestored, dir)+")")
	}
	if len(n.notRerun) > 0 {
		parts = append(parts, "what commands in the branch returned to changed could not be restored ("+listEffects(n.notRerun)+")")
	}
	if len(parts) == 0 {
		return ""
	}
	return "The workspace may not match this point of the conversation: " + strings.Join(parts, "; ") + "."
}

func listFiles(paths []string, dir string) string {
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = p
		if rel, err := filepath.Rel(dir, p); err == nil && !strings.HasPrefix(rel, "..") {
			names[i] = rel
		}
	}
	return listOf(names)
}

func listEffects(effects []statefile.Effect) string {
	var items []string
	for _, e := range effects {
		item := e.Tool
		if e.Detail != "" {
			item = "`" + shorten(strings.Join(strings.Fields(e.Detail), " "), 60) + "`"
		}
		if !contains(items, item) {
			items = append(items, item)
		}
	}
	return listOf(items)
}

func listOf(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(items)-maxListed)
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
