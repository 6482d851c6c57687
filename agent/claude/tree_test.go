package claude

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent/statefile"
)

// testTree is
//
//	a ─ b ─ c      (session s1; c is the tip)
//	│   └── d      (s2: a fork of s1 after b)
//	└── e          (s3: a fork of s1 after a)
//	f              (s4: started over)
//	└── g          (s4)
func testTree() *tree {
	return newTree([]statefile.Turn{
		{ID: "a", Session: "s1"},
		{ID: "b", Parent: "a", Session: "s1"},
		{ID: "c", Parent: "b", Session: "s1"},
		{ID: "d", Parent: "b", Session: "s2"},
		{ID: "e", Parent: "a", Session: "s3"},
		{ID: "f", Session: "s4"},
		{ID: "g", Parent: "f", Session: "s4"},
	}, "c")
}

func ids(turns []*statefile.Turn) []string {
	out := []string{}
	for _, t := range turns {
		out = append(out, t.ID)
	}
	return out
}

func TestTreePlan(t *testing.T) {
	tests := []struct {
		name      string
		tip       string
		after     string
		ancestor  string
		abandoned []string // tip first
		entered   []string // after last
	}{
		{name: "the tip: a plain turn", tip: "c", after: "c", ancestor: "c", abandoned: []string{}, entered: []string{}},
		{name: "regenerate the last answer", tip: "c", after: "b", ancestor: "b", abandoned: []string{"c"}, entered: []string{}},
		{name: "back two turns", tip: "c", after: "a", ancestor: "a", abandoned: []string{"c", "b"}, entered: []string{}},
		{name: "to a sibling branch", tip: "c", after: "d", ancestor: "b", abandoned: []string{"c"}, entered: []string{"d"}},
		{name: "to a cousin branch", tip: "c", after: "e", ancestor: "a", abandoned: []string{"c", "b"}, entered: []string{"e"}},
		{name: "from a sibling back", tip: "d", after: "c", ancestor: "b", abandoned: []string{"d"}, entered: []string{"c"}},
		{name: "start over", tip: "c", after: "", ancestor: "", abandoned: []string{"c", "b", "a"}, entered: []string{}},
		{name: "to another first turn's branch", tip: "c", after: "g", ancestor: "", abandoned: []string{"c", "b", "a"}, entered: []string{"f", "g"}},
		{name: "down from a tip that has children", tip: "a", after: "c", ancestor: "a", abandoned: []string{}, entered: []string{"b", "c"}},
		{name: "fresh conversation", tip: "", after: "", ancestor: "", abandoned: []string{}, entered: []string{}},
		{name: "from the start to a turn", tip: "", after: "b", ancestor: "", abandoned: []string{}, entered: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := testTree()
			tr.tip = tt.tip
			p, err := tr.plan(tt.after)
			require.NoError(t, err)
			assert.Equal(t, tt.after, p.after)
			assert.Equal(t, tt.ancestor, p.ancestor, "common ancestor")
			assert.Equal(t, tt.abandoned, ids(p.abandoned), "abandoned")
			assert.Equal(t, tt.entered, ids(p.entered), "entered")
			assert.Equal(t, len(tt.abandoned)+len(tt.entered) == 0, p.noop())
		})
	}
}

func TestTreeUnknownTurn(t *testing.T) {
	_, err := testTree().plan("nope")
	require.ErrorIs(t, err, ErrUnknownTurn)
	assert.Contains(t, err.Error(), `"nope"`)
}

func TestTreeRelations(t *testing.T) {
	tr := testTree()
	for _, tt := range []struct{ a, b, common string }{
		{"c", "d", "b"}, {"d", "c", "b"}, {"c", "e", "a"}, {"c", "c", "c"}, {"b", "c", "b"},
		{"c", "g", ""}, {"", "c", ""}, {"c", "missing", ""},
	} {
		assert.Equal(t, tt.common, tr.commonAncestor(tt.a, tt.b), "commonAncestor(%q, %q)", tt.a, tt.b)
	}
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"a", "c", true}, {"b", "c", true}, {"c", "c", false}, {"c", "b", false}, {"d", "c", false},
		{"", "a", true}, {"", "", false}, {"f", "c", false},
	} {
		assert.Equal(t, tt.want, tr.isAncestor(tt.a, tt.b), "isAncestor(%q, %q)", tt.a, tt.b)
	}
	for _, tt := range []struct{ id, next string }{
		{"a", "b"}, {"b", "c"}, {"c", ""}, {"d", ""}, {"e", ""}, {"f", "g"}, {"", ""},
	} {
		next := ""
		if c := tr.continuation(tt.id); c != nil {
			next = c.ID
		}
		assert.Equal(t, tt.next, next, "continuation(%q): the turn after it in its own session", tt.id)
	}
	assert.Equal(t, []string{"b", "c"}, ids(tr.segment("a", "c")))
	assert.Equal(t, []string{"a", "b", "c"}, ids(tr.segment("", "c")))
	assert.True(t, tr.known("") && tr.known("g") && !tr.known("h"))
}

// TestTreeListIsACopy: what list returns for the state file does not
// change with the tree, nor the tree with it.
func TestTreeListIsACopy(t *testing.T) {
	tr := testTree()
	tr.get("a").Files = []string{"/w/x"}
	list := tr.list()
	require.Len(t, list, 7)
	assert.Equal(t, "a", list[0].ID)
	list[0].Files[0] = "/w/changed"
	assert.Equal(t, "/w/x", tr.get("a").Files[0])
	tr.get("a").Files[0] = "/w/y"
	assert.Equal(t, "/w/changed", list[0].Files[0])
}

func TestBranchNotice(t *testing.T) {
	tests := []struct {
		name string
		n    branchNotice
		want string
	}{
		{name: "everything restored", n: branchNotice{}, want: ""},
		{name: "bash of an abandoned turn",
			n:    branchNotice{notUndone: []statefile.Effect{{Tool: "Bash", Detail: "echo hi >  made.txt"}, {Tool: "mcp__x__y"}}},
			want: "The workspace may not match this point of the conversation: what commands in the turns left behind changed could not be restored (`echo hi > made.txt`, mcp__x__y)."},
		{name: "files both ways",
			n: branchNotice{filesNotUndone: []string{"/w/a.txt", "/elsewhere/b.txt"}, filesNotRestored: []string{"/w/sub/c.txt"},
				notRerun: []statefile.Effect{{Tool: "Bash", Detail: "make"}, {Tool: "Bash", Detail: "make"}}},
			want: "The workspace may not match this point of the conversation: files changed by the turns left behind could not be restored (a.txt, /elsewhere/b.txt); files of the branch returned to could not be restored (sub/c.txt); what commands in the branch returned to changed could not be restored (`make`)."},
		{name: "long lists are cut",
			n:    branchNotice{filesNotUndone: []string{"/w/1", "/w/2", "/w/3", "/w/4", "/w/5", "/w/6", "/w/7"}},
			want: "The workspace may not match this point of the conversation: files changed by the turns left behind could not be restored (1, 2, 3, 4, 5 and 2 more)."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.n.message("/w"))
		})
	}
}

func TestNoteTool(t *testing.T) {
	tr := &Turn{}
	tr.noteTool("Write", []byte(`{"file_path":"/w/a.txt","content":"x"}`))
	tr.noteTool("Edit", []byte(`{"file_path":"/w/a.txt","old_string":"x","new_string":"y"}`))
	tr.noteTool("NotebookEdit", []byte(`{"notebook_path":"/w/n.ipynb"}`))
	tr.noteTool("Read", []byte(`{"file_path":"/w/r.txt"}`))
	tr.noteTool("Bash", []byte(`{"command":"rm -rf build"}`))
	tr.noteTool("mcp__fs__write", []byte(`{"path":"/w/m"}`))
	assert.Equal(t, []string{"/w/a.txt", "/w/n.ipynb"}, tr.files)
	assert.Equal(t, []statefile.Effect{{Tool: "Bash", Detail: "rm -rf build"}, {Tool: "mcp__fs__write"}}, tr.effects)
}
