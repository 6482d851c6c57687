// Package statefile keeps the agent's own state in <AGENT_STATE_DIR>/agent.json
// so that an agent whose container was stopped and started again carries on
// where it was: the same CLI session (resumed with --resume), the same turn
// count, the same turn tree (the branches of the conversation) and the same
// warm-pool binding.
//
// The file is small and rewritten atomically on every change: a temporary
// file in the same directory is written, synced and renamed over it, and the
// directory is synced, so a stop at any moment leaves either the old or the
// new state, never a torn one.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sync"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Name is the state file's name inside the state directory.
const Name = "agent.json"

// Version is the format version written to, and accepted from, the file.
const Version = 1

// ErrCorrupt marks a state file that exists but cannot be used. The agent
// then starts fresh (and overwrites the file on its first change).
var ErrCorrupt = errors.New("agent state file is unusable")

// State is the content of agent.json.
type State struct {
	// Version is the format version ([Version]).
	Version int `json:"version"`
	// SessionID is the Claude Code CLI session id.
	SessionID string `json:"session_id,omitempty"`
	// HasSession tells that a turn was sent on SessionID, so the CLI has
	// saved the session and a new process must resume it.
	HasSession bool `json:"has_session"`
	// Turns counts the agent's finished turns.
	Turns int64 `json:"turns"`
	// Binding is the warm-pool binding (PUT /binding), once made.
	Binding *agent.Binding `json:"binding,omitempty"`

	// ForkFrom, when set, is the CLI session the next CLI process starts
	// from as a fork (--resume ForkFrom --resume-session-at ForkAt
	// --fork-session --session-id SessionID): a branch was made and its
	// first turn has not reached the CLI yet, so the fork does not exist
	// on disk yet (the CLI writes a session file with its first turn).
	ForkFrom string `json:"fork_from,omitempty"`
	// ForkAt is the chain entry (a message uuid of ForkFrom) the fork ends
	// at; set with ForkFrom.
	ForkAt string `json:"fork_at,omitempty"`
	// Tree is the turn tree, parents before their children.
	Tree []Turn `json:"tree,omitempty"`
	// Tip is the turn the conversation is at: the next turn follows it
	// unless the query branches off elsewhere. Empty before the first
	// turn and when the conversation was started over.
	Tip string `json:"tip,omitempty"`
	// Transcript is the gateways' record of the conversation (PUT
	// /transcript), kept for any gateway that serves it next.
	Transcript *agent.Transcript `json:"transcript,omitempty"`
}

// Turn is one turn of the conversation: a user message and the agent's
// work on it, up to its result.
type Turn struct {
	// ID identifies the turn (agent.Result.TurnID). It is also the uuid
	// the agent gave the turn's user message in the CLI session, which is
	// the CLI's file checkpoint of the workspace as it was before the turn
	// (the rewind_files control request restores it).
	ID string `json:"id"`
	// Parent is the turn this one follows; empty for a first turn.
	Parent string `json:"parent,omitempty"`
	// Session is the CLI session the turn ran in.
	Session string `json:"session"`
	// End is the uuid of the turn's last entry in the session's message
	// chain: --resume-session-at End continues the conversation right
	// after this turn.
	End string `json:"end,omitempty"`
	// Files are the paths the turn's file tools (Write, Edit,
	// NotebookEdit) changed; the CLI's checkpoints cover them.
	Files []string `json:"files,omitempty"`
	// Irreversible are the turn's tool calls whose effects on the
	// workspace checkpoints do not cover (Bash and other tools that are
	// neither file tools nor read-only).
	Irreversible []Effect `json:"irreversible,omitempty"`
	// Saved, when set, holds the workspace files as they were after this
	// turn, saved when the conversation branched away from it, so that a
	// branch back to it can put them back.
	Saved *Saved `json:"saved,omitempty"`
}

// Effect is a tool call whose workspace changes cannot be undone.
type Effect struct {
	// Tool is the tool's name ("Bash", "mcp__server__tool", ...).
	Tool string `json:"tool"`
	// Detail says what it did: a command line for Bash, else empty.
	Detail string `json:"detail,omitempty"`
}

// Saved is a copy of the files a branch had changed, taken when the
// conversation left it.
type Saved struct {
	// Base is the turn whose workspace the files were compared with: the
	// files are what differed between the state after Base and after the
	// saved turn ("" for the state before the first turn).
	Base string `json:"base,omitempty"`
	// Files are the saved files.
	Files []SavedFile `json:"files"`
}

// SavedFile is one saved file.
type SavedFile struct {
	// Path is the file's absolute path.
	Path string `json:"path"`
	// Copy is the copy's name in the saves directory; empty when the file
	// did not exist.
	Copy string `json:"copy,omitempty"`
}

// equal reports whether s and o hold the same state.
func (s State) equal(o State) bool { return reflect.DeepEqual(s, o) }

// clone returns a deep copy of s, so that a change to the copy never
// reaches s.
func (s State) clone() State {
	c := s
	if s.Binding != nil {
		b := *s.Binding
		c.Binding = &b
	}
	if s.Transcript != nil {
		c.Transcript = s.Transcript.Clone()
	}
	if s.Tree != nil {
		c.Tree = make([]Turn, len(s.Tree))
		for i, t := range s.Tree {
			c.Tree[i] = t.Clone()
		}
	}
	return c
}

// Clone returns a deep copy of t.
func (t Turn) Clone() Turn {
	c := t
	c.Files = append([]string(nil), t.Files...)
	c.Irreversible = append([]Effect(nil), t.Irreversible...)
	if t.Saved != nil {
		sv := *t.Saved
		sv.Files = append([]SavedFile(nil), t.Saved.Files...)
		c.Saved = &sv
	}
	return c
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (s *State) validate() error {
	switch {
	case s.Version != Version:
		return fmt.Errorf("version %d, want %d", s.Version, Version)
	case s.SessionID != "" && !uuidRE.MatchString(s.SessionID):
		return fmt.Errorf("session_id %q is not a UUID", s.SessionID)
	case s.HasSession && s.SessionID == "":
		return errors.New("has_session without a session_id")
	case s.Turns < 0:
		return fmt.Errorf("turns %d is negative", s.Turns)
	case s.Binding != nil && (s.Binding.SessionID == "" || s.Binding.Owner == "" || s.Binding.Conversation == ""):
		return errors.New("binding without session_id, owner or conversation")
	case (s.ForkFrom == "") != (s.ForkAt == ""):
		return errors.New("fork_from and fork_at must be set together")
	case s.ForkFrom != "" && (!uuidRE.MatchString(s.ForkFrom) || !uuidRE.MatchString(s.ForkAt)):
		return errors.New("fork_from and fork_at must be UUIDs")
	}
	return s.validateTurns()
}

// validateTurns checks the turn tree: UUID ids, each once, parents listed
// before their children, and a tip that is one of the turns.
func (s *State) validateTurns() error {
	seen := make(map[string]bool, len(s.Tree))
	for i, t := range s.Tree {
		switch {
		case !uuidRE.MatchString(t.ID):
			return fmt.Errorf("tree[%d]: id %q is not a UUID", i, t.ID)
		case seen[t.ID]:
			return fmt.Errorf("tree[%d]: id %s repeats", i, t.ID)
		case t.Parent != "" && !seen[t.Parent]:
			return fmt.Errorf("tree[%d]: parent %s is not an earlier turn", i, t.Parent)
		case !uuidRE.MatchString(t.Session):
			return fmt.Errorf("tree[%d]: session %q is not a UUID", i, t.Session)
		}
		seen[t.ID] = true
	}
	if s.Tip != "" && !seen[s.Tip] {
		return fmt.Errorf("tip %s is not a turn", s.Tip)
	}
	return nil
}

// Load reads the state file at path. A missing file is a zero State and no
// error; a file that cannot be parsed or validated is an error wrapping
// [ErrCorrupt].
func Load(path string) (State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return State{Version: Version}, nil
	}
	if err != nil {
		return State{Version: Version}, fmt.Errorf("read %s: %w", path, err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{Version: Version}, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	if err := s.validate(); err != nil {
		return State{Version: Version}, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return s, nil
}

// Save writes s to path atomically: a temporary file in the same directory
// is written, synced and renamed over path, then the directory is synced.
func Save(path string, s State) (err error) {
	s.Version = Version
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode agent state: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // the rename itself reaches the disk
		_ = d.Close()
	}
	return nil
}

// Store is the agent's state, shared by the CLI runner and the HTTP server,
// written to its file on every change. A nil *Store keeps nothing: Get
// returns a zero State and Update does nothing.
type Store struct {
	path string

	mu  sync.Mutex
	cur State
}

// Open loads the state in dir (created, mode 0700, if missing). A missing
// file is a fresh start. A corrupt file also gives a usable Store holding a
// fresh state, together with an error wrapping [ErrCorrupt] for the caller
// to log; any other error means the directory cannot be used.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	path := filepath.Join(dir, Name)
	s, err := Load(path)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return nil, err
	}
	return &Store{path: path, cur: s}, err
}

// Dir is the state directory ("" for a nil Store).
func (st *Store) Dir() string {
	if st == nil {
		return ""
	}
	return filepath.Dir(st.path)
}

// Path is the state file's path ("" for a nil Store).
func (st *Store) Path() string {
	if st == nil {
		return ""
	}
	return st.path
}

// Get returns the current state.
func (st *Store) Get() State {
	if st == nil {
		return State{Version: Version}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.cur.clone()
}

// Update applies change to a copy of the state and, if that changed
// anything, saves it. Updates are serialised, so change may read other
// live values and the last write always holds the newest. On a failed save
// the state is left as it was.
func (st *Store) Update(change func(*State)) error {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	next := st.cur.clone()
	change(&next)
	next.Version = Version
	if next.equal(st.cur) {
		return nil
	}
	if err := Save(st.path, next); err != nil {
		return err
	}
	st.cur = next
	return nil
}
