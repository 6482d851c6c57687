// Package statefile keeps the agent's own state in <AGENT_STATE_DIR>/agent.json
// so that an agent whose container was stopped and started again carries on
// where it was: the same CLI session (resumed with --resume), the same turn
// count and the same warm-pool binding.
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
}

// equal reports whether s and o hold the same state.
func (s State) equal(o State) bool {
	if (s.Binding == nil) != (o.Binding == nil) || (s.Binding != nil && *s.Binding != *o.Binding) {
		return false
	}
	s.Binding, o.Binding = nil, nil
	return s == o
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
	s := st.cur
	if s.Binding != nil {
		b := *s.Binding
		s.Binding = &b
	}
	return s
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
	next := st.cur
	if next.Binding != nil {
		b := *next.Binding
		next.Binding = &b
	}
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
