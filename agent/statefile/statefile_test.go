package statefile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/statefile"
)

const (
	sessionID = "0b8f6a8e-3c1d-4e6f-9a2b-7c5d4e3f2a1b"
	forkID    = "1c9f6a8e-3c1d-4e6f-9a2b-7c5d4e3f2a1b"
	turnA     = "2d0f6a8e-3c1d-4e6f-9a2b-7c5d4e3f2a1b"
	turnB     = "3e1f6a8e-3c1d-4e6f-9a2b-7c5d4e3f2a1b"
)

// tree renders a state file with the given tree JSON and tip.
func tree(turns, tip string) *string {
	return ptr(`{"version":1,"tree":` + turns + `,"tip":"` + tip + `"}`)
}

func turnJSON(id, parent string) string {
	return `{"id":"` + id + `","parent":"` + parent + `","session":"` + sessionID + `"}`
}

func TestSaveLoadRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		state statefile.State
	}{
		{"fresh", statefile.State{}},
		{"session before its first turn", statefile.State{SessionID: sessionID}},
		{"session with turns", statefile.State{SessionID: sessionID, HasSession: true, Turns: 7}},
		{"bound", statefile.State{SessionID: sessionID, HasSession: true, Turns: 1,
			Binding: &agent.Binding{SessionID: "sess_1", Owner: "owner-hash", Conversation: "conv-1"}}},
		{"turn tree", statefile.State{SessionID: forkID, Turns: 2, ForkFrom: sessionID, ForkAt: turnA, Tip: turnA,
			Tree: []statefile.Turn{
				{ID: turnA, Session: sessionID, End: forkID, Files: []string{"/w/a.txt"},
					Saved: &statefile.Saved{Files: []statefile.SavedFile{{Path: "/w/a.txt", Copy: "0"}, {Path: "/w/gone"}}}},
				{ID: turnB, Parent: turnA, Session: sessionID, Irreversible: []statefile.Effect{{Tool: "Bash", Detail: "make"}}},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), statefile.Name)
			require.NoError(t, statefile.Save(path, tt.state))
			got, err := statefile.Load(path)
			require.NoError(t, err)
			want := tt.state
			want.Version = statefile.Version
			assert.Equal(t, want, got)
			info, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the state is the agent's alone")
		})
	}
}

// TestSaveReplacesAtomically: a save puts a new file in place by rename; the
// old file is never rewritten in place (a link to it keeps the old state),
// and no temporary file is left behind.
func TestSaveReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, statefile.Name)
	old := statefile.State{SessionID: sessionID, HasSession: true, Turns: 1}
	require.NoError(t, statefile.Save(path, old))
	before := filepath.Join(dir, "before.json")
	require.NoError(t, os.Link(path, before))

	next := statefile.State{SessionID: sessionID, HasSession: true, Turns: 2,
		Binding: &agent.Binding{SessionID: "s", Owner: "o", Conversation: "c"}}
	require.NoError(t, statefile.Save(path, next))

	got, err := statefile.Load(path)
	require.NoError(t, err)
	assert.Equal(t, int64(2), got.Turns)
	assert.Equal(t, next.Binding, got.Binding)
	kept, err := statefile.Load(before)
	require.NoError(t, err)
	assert.Equal(t, int64(1), kept.Turns, "the old file was replaced, not rewritten")
	assert.Nil(t, kept.Binding)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{statefile.Name, "before.json"}, names, "no temporary file is left")
}

func TestLoadMissingAndCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		content *string // nil: no file
		corrupt bool
	}{
		{name: "missing file", content: nil},
		{name: "empty file", content: ptr(""), corrupt: true},
		{name: "not JSON", content: ptr("\x00\x01garbage"), corrupt: true},
		{name: "truncated JSON", content: ptr(`{"version":1,"session_id":"` + sessionID), corrupt: true},
		{name: "wrong type", content: ptr(`{"version":1,"turns":"many"}`), corrupt: true},
		{name: "unknown version", content: ptr(`{"version":2,"session_id":"` + sessionID + `","has_session":true}`), corrupt: true},
		{name: "no version", content: ptr(`{"session_id":"` + sessionID + `","has_session":true}`), corrupt: true},
		{name: "session id not a UUID", content: ptr(`{"version":1,"session_id":"--help","has_session":true}`), corrupt: true},
		{name: "session without id", content: ptr(`{"version":1,"has_session":true}`), corrupt: true},
		{name: "negative turns", content: ptr(`{"version":1,"turns":-1}`), corrupt: true},
		{name: "binding without owner", content: ptr(`{"version":1,"binding":{"session_id":"s","conversation":"c"}}`), corrupt: true},
		{name: "fork without its point", content: ptr(`{"version":1,"fork_from":"` + sessionID + `"}`), corrupt: true},
		{name: "fork point not a UUID", content: ptr(`{"version":1,"fork_from":"` + sessionID + `","fork_at":"--help"}`), corrupt: true},
		{name: "turn id not a UUID", content: tree(`[`+turnJSON("x", "")+`]`, ""), corrupt: true},
		{name: "turn repeated", content: tree(`[`+turnJSON(turnA, "")+`,`+turnJSON(turnA, "")+`]`, ""), corrupt: true},
		{name: "child before its parent", content: tree(`[`+turnJSON(turnB, turnA)+`,`+turnJSON(turnA, "")+`]`, ""), corrupt: true},
		{name: "turn without session", content: tree(`[{"id":"`+turnA+`"}]`, ""), corrupt: true},
		{name: "tip not a turn", content: tree(`[`+turnJSON(turnA, "")+`]`, turnB), corrupt: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, statefile.Name)
			if tt.content != nil {
				require.NoError(t, os.WriteFile(path, []byte(*tt.content), 0o600))
			}
			got, err := statefile.Load(path)
			if tt.corrupt {
				require.ErrorIs(t, err, statefile.ErrCorrupt)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, statefile.State{Version: statefile.Version}, got, "a fresh state")

			// Open gives a usable store either way: a fresh state that
			// replaces the file on its first change.
			st, err := statefile.Open(dir)
			require.NotNil(t, st)
			if tt.corrupt {
				require.ErrorIs(t, err, statefile.ErrCorrupt)
			} else {
				require.NoError(t, err)
			}
			assert.False(t, st.Get().HasSession)
			require.NoError(t, st.Update(func(s *statefile.State) { s.Turns = 3 }))
			reloaded, err := statefile.Load(path)
			require.NoError(t, err)
			assert.Equal(t, int64(3), reloaded.Turns)
		})
	}
}

func TestStoreUpdate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st, err := statefile.Open(dir)
	require.NoError(t, err, "the directory is created")
	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	_, err = os.Stat(st.Path())
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing is written before a change")

	binding := agent.Binding{SessionID: "s", Owner: "o", Conversation: "c"}
	require.NoError(t, st.Update(func(s *statefile.State) {
		s.SessionID, s.HasSession, s.Turns, s.Binding = sessionID, true, 1, &binding
	}))
	first, err := os.Stat(st.Path())
	require.NoError(t, err)

	// The same values again: no write (the file is not replaced).
	require.NoError(t, st.Update(func(s *statefile.State) {
		s.Turns = 1
		s.Binding = &agent.Binding{SessionID: "s", Owner: "o", Conversation: "c"}
	}))
	same, err := os.Stat(st.Path())
	require.NoError(t, err)
	assert.True(t, os.SameFile(first, same), "an unchanged state is not rewritten")

	// Get hands out copies.
	got := st.Get()
	got.Binding.Owner = "changed"
	assert.Equal(t, "o", st.Get().Binding.Owner)
	require.NoError(t, st.Update(func(s *statefile.State) {
		s.Tree = []statefile.Turn{{ID: turnA, Session: sessionID, Files: []string{"/w/a"}}}
	}))
	got = st.Get()
	got.Tree[0].Files[0] = "/w/changed"
	assert.Equal(t, "/w/a", st.Get().Tree[0].Files[0], "turns are copied too")
	require.NoError(t, st.Update(func(s *statefile.State) { s.Tree[0].Files[0] = "/w/b" }))
	assert.Equal(t, "/w/b", st.Get().Tree[0].Files[0])
	require.NoError(t, st.Update(func(s *statefile.State) { s.Tree = nil }))

	// A new Store on the same directory sees everything.
	again, err := statefile.Open(dir)
	require.NoError(t, err)
	assert.Equal(t, statefile.State{Version: statefile.Version, SessionID: sessionID, HasSession: true, Turns: 1, Binding: &binding}, again.Get())

	// A failed save changes nothing.
	require.NoError(t, os.RemoveAll(dir))
	require.Error(t, st.Update(func(s *statefile.State) { s.Turns = 2 }))
	assert.Equal(t, int64(1), st.Get().Turns)
}

func TestNilStoreKeepsNothing(t *testing.T) {
	var st *statefile.Store
	require.NoError(t, st.Update(func(s *statefile.State) { s.Turns = 5 }))
	assert.Equal(t, statefile.State{Version: statefile.Version}, st.Get())
	assert.Empty(t, st.Path())
}

func ptr[T any](v T) *T { return &v }
