package claude

import (
	"errors"
	"fmt"

	"github.com/agcluster/caddy-agcluster/agent/statefile"
)

// ErrUnknownTurn is returned for a branch after a turn the agent does not
// know.
var ErrUnknownTurn = errors.New("unknown turn")

// tree is the conversation's turn tree: every turn the agent ran, each
// after its parent, and the tip the next turn follows. Turns are never
// removed: a branch leaves the turns it abandons in place, so a later
// branch can continue them.
type tree struct {
	turns map[string]*statefile.Turn
	order []string // parents before children, as the state file keeps them
	tip   string
}

// newTree builds the tree from saved turns (parents first) and tip.
func newTree(saved []statefile.Turn, tip string) *tree {
	t := &tree{turns: make(map[string]*statefile.Turn, len(saved)), tip: tip}
	for _, turn := range saved {
		t.add(turn.Clone())
	}
	return t
}

// add appends turn, whose parent must be known (or empty).
func (t *tree) add(turn statefile.Turn) {
	t.turns[turn.ID] = &turn
	t.order = append(t.order, turn.ID)
}

// get returns the turn with id, or nil.
func (t *tree) get(id string) *statefile.Turn { return t.turns[id] }

// known reports whether id is a turn or "" (the start of the conversation).
func (t *tree) known(id string) bool { return id == "" || t.turns[id] != nil }

// list returns copies of the turns, parents first, for the state file.
func (t *tree) list() []statefile.Turn {
	if len(t.order) == 0 {
		return nil
	}
	out := make([]statefile.Turn, len(t.order))
	for i, id := range t.order {
		out[i] = t.turns[id].Clone()
	}
	return out
}

// path returns the turns from the first one down to id, in that order;
// nil for "".
func (t *tree) path(id string) []*statefile.Turn {
	var rev []*statefile.Turn
	for id != "" {
		turn := t.turns[id]
		if turn == nil {
			break
		}
		rev = append(rev, turn)
		id = turn.Parent
	}
	out := make([]*statefile.Turn, len(rev))
	for i, turn := range rev {
		out[len(rev)-1-i] = turn
	}
	return out
}

// commonAncestor returns the deepest turn that is a or an ancestor of a,
// and also b or an ancestor of b; "" when they share none.
func (t *tree) commonAncestor(a, b string) string {
	pa, pb := t.path(a), t.path(b)
	common := ""
	for i := 0; i < len(pa) && i < len(pb) && pa[i] == pb[i]; i++ {
		common = pa[i].ID
	}
	return common
}

// isAncestor reports whether a is a strict ancestor of b ("" is one of
// every turn).
func (t *tree) isAncestor(a, b string) bool {
	if a == b {
		return false
	}
	for _, turn := range t.path(b) {
		if turn.ID == a {
			return true
		}
	}
	return a == "" && b != ""
}

// continuation returns the turn that followed id in id's own CLI session
// (the session went on after it), or nil when id is the last turn of its
// session. "" has none.
func (t *tree) continuation(id string) *statefile.Turn {
	turn := t.turns[id]
	if turn == nil {
		return nil
	}
	for _, cid := range t.order {
		if c := t.turns[cid]; c.Parent == id && c.Session == turn.Session {
			return c
		}
	}
	return nil
}

// branchPlan is what a branch after a turn other than the tip involves.
type branchPlan struct {
	// after is the turn the new turn follows ("" to start over).
	after string
	// ancestor is the deepest turn both the tip and after descend from
	// (or are).
	ancestor string
	// abandoned are the turns from the tip back to the ancestor's child
	// on the tip's side: the tip first. Their file changes are undone.
	abandoned []*statefile.Turn
	// entered are the turns from the ancestor's child on after's side down
	// to after: after last. Their file changes are put back.
	entered []*statefile.Turn
}

// noop reports whether the branch is a plain next turn.
func (p branchPlan) noop() bool { return len(p.abandoned) == 0 && len(p.entered) == 0 }

// plan works out a branch from the tip to after.
func (t *tree) plan(after string) (branchPlan, error) {
	if !t.known(after) {
		return branchPlan{}, fmt.Errorf("%w %q", ErrUnknownTurn, after)
	}
	p := branchPlan{after: after, ancestor: t.commonAncestor(t.tip, after)}
	p.abandoned = below(t.path(t.tip), p.ancestor)
	for i, j := 0, len(p.abandoned)-1; i < j; i, j = i+1, j-1 {
		p.abandoned[i], p.abandoned[j] = p.abandoned[j], p.abandoned[i]
	}
	p.entered = below(t.path(after), p.ancestor)
	return p, nil
}

// below returns the part of path after the turn ancestor (all of it for
// "").
func below(path []*statefile.Turn, ancestor string) []*statefile.Turn {
	if ancestor == "" {
		return path
	}
	for i, turn := range path {
		if turn.ID == ancestor {
			return path[i+1:]
		}
	}
	return path
}

// segment returns the turns of the path to id strictly below from.
func (t *tree) segment(from, id string) []*statefile.Turn { return below(t.path(id), from) }
