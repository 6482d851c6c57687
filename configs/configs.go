// Package configs holds agent configuration templates: the five presets
// shipped with agcluster (code-assistant, research-agent, data-analysis,
// fullstack-team and github-code-review), embedded from presets/*.json,
// and custom configurations loaded from a directory of JSON files.
//
// Every configuration is an [agent.Config] and is validated by
// [agent.ParseConfig] when it is loaded. A [Store] hands out deep copies,
// so callers may change what they get without affecting the store.
//
// MCP servers may declare environment variables with empty values (such as
// GITHUB_PERSONAL_ACCESS_TOKEN of github-code-review): these must be given
// when a session is launched, through mcp_env; see [ApplyMCPEnv] and
// [MissingMCPEnv].
package configs

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/agcluster/caddy-agcluster/agent"
)

//go:embed presets/*.json
var presetFS embed.FS

// presets parses the embedded presets once.
var presets = sync.OnceValues(func() (map[string]*agent.Config, error) {
	entries, err := fs.ReadDir(presetFS, "presets")
	if err != nil {
		return nil, err
	}
	out := make(map[string]*agent.Config, len(entries))
	var errs []error
	for _, e := range entries {
		name := path.Join("presets", e.Name())
		data, err := presetFS.ReadFile(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c, ferrs := parseFile(name, e.Name(), data)
		if len(ferrs) > 0 {
			errs = append(errs, ferrs...)
			continue
		}
		out[c.ID] = c
	}
	return out, errors.Join(errs...)
})

// Store holds agent configurations by id: the presets, then custom ones.
// A Store is not changed after it is built, so it is safe for concurrent
// use.
type Store struct {
	configs map[string]*agent.Config
	preset  map[string]bool
}

// New returns a Store holding only the shipped presets. It panics if a
// preset is invalid, which the package's tests rule out.
func New() *Store {
	p, err := presets()
	if err != nil {
		panic("configs: invalid embedded preset: " + err.Error())
	}
	s := &Store{
		configs: make(map[string]*agent.Config, len(p)),
		preset:  make(map[string]bool, len(p)),
	}
	for id, c := range p {
		s.configs[id] = clone(c)
		s.preset[id] = true
	}
	return s
}

// Load returns a Store holding the presets and every custom configuration
// in dir: each regular file whose name ends in ".json" (subdirectories and
// names starting with "." are skipped). A file's id is required and must
// equal its name without ".json", and may not be a preset's id. An empty
// dir loads only the presets.
//
// Every bad file is reported, joined with [errors.Join]; each problem is a
// [*LoadError] naming the file, the field and the reason. On error Load
// returns a nil Store.
func Load(dir string) (*Store, error) {
	s := New()
	if dir == "" {
		return s, nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, &LoadError{File: dir, Reason: "cannot read config directory: " + pathErrReason(err), Err: err}
	}
	if !fi.IsDir() {
		return nil, &LoadError{File: dir, Reason: "not a directory"}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &LoadError{File: dir, Reason: "cannot read config directory: " + pathErrReason(err), Err: err}
	}
	var errs []error
	owner := make(map[string]string) // custom id -> file
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || filepath.Ext(name) != ".json" {
			continue
		}
		file := filepath.Join(dir, name)
		fi, err := os.Stat(file) // follows symbolic links
		if err != nil {
			errs = append(errs, &LoadError{File: file, Reason: pathErrReason(err), Err: err})
			continue
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, &LoadError{File: file, Reason: pathErrReason(err), Err: err})
			continue
		}
		c, ferrs := parseFile(file, name, data)
		if len(ferrs) > 0 {
			errs = append(errs, ferrs...)
			continue
		}
		if err := s.addCustom(file, c, owner); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// addCustom adds a parsed custom configuration read from file; owner maps
// the custom ids added so far to their files.
func (s *Store) addCustom(file string, c *agent.Config, owner map[string]string) error {
	if s.preset[c.ID] {
		return &LoadError{File: file, Field: "id", Reason: fmt.Sprintf("%q is the id of a shipped preset; choose another id (and file name)", c.ID)}
	}
	if other, ok := owner[c.ID]; ok {
		return &LoadError{File: file, Field: "id", Reason: fmt.Sprintf("%q is also the id of %s", c.ID, other)}
	}
	owner[c.ID] = file
	s.configs[c.ID] = c
	return nil
}

// parseFile parses and validates one configuration file called name (its
// base name), reporting problems under file. The id must match the name.
func parseFile(file, name string, data []byte) (*agent.Config, []error) {
	c, err := agent.ParseConfig(data)
	if err != nil {
		return nil, fileErrors(file, data, err)
	}
	want := strings.TrimSuffix(name, ".json")
	switch {
	case c.ID == "":
		return nil, []error{&LoadError{File: file, Field: "id", Reason: fmt.Sprintf("is required and must be %q, the file name without .json", want)}}
	case c.ID != want:
		return nil, []error{&LoadError{File: file, Field: "id", Reason: fmt.Sprintf("%q does not match the file name: it must be %q", c.ID, want)}}
	}
	return c, nil
}

// Get returns a deep copy of the configuration with the given id.
func (s *Store) Get(id string) (*agent.Config, bool) {
	c, ok := s.configs[id]
	if !ok {
		return nil, false
	}
	return clone(c), true
}

// List returns deep copies of all configurations, sorted by id.
func (s *Store) List() []*agent.Config {
	ids := s.IDs()
	out := make([]*agent.Config, len(ids))
	for i, id := range ids {
		out[i] = clone(s.configs[id])
	}
	return out
}

// IDs returns the ids of all configurations, sorted.
func (s *Store) IDs() []string {
	ids := make([]string, 0, len(s.configs))
	for id := range s.configs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Preset reports whether id is a shipped preset.
func (s *Store) Preset(id string) bool {
	return s.preset[id]
}

// LoadError reports one problem with one configuration file (or with the
// configuration directory itself).
type LoadError struct {
	// File is the path of the file (or directory) as Load saw it, e.g.
	// "custom/bad.json".
	File string
	// Line and Column locate a JSON syntax error (1-based; 0 if unknown).
	Line, Column int
	// Field is the JSON path of the bad field, e.g. "allowed_tools[0]" or
	// "mcp_servers.github.command"; empty when the problem is not with one
	// field (a syntax error, an unreadable file).
	Field string
	// Reason says what is wrong.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

// Error returns "configs: FILE[:LINE:COLUMN]: [FIELD: ]REASON".
func (e *LoadError) Error() string {
	var b strings.Builder
	b.WriteString("configs: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns the underlying error.
func (e *LoadError) Unwrap() error { return e.Err }

// pathErrReason drops the path from an *fs.PathError, which LoadError
// already names.
func pathErrReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	if errors.Is(err, io.EOF) {
		return "unexpected end of file"
	}
	return err.Error()
}
