// Package usage records what every turn cost, per owner, configuration,
// provider and UTC day, in an embedded bbolt database that survives
// restarts, and checks owners' daily quotas against it. A record holds
// counts only: owner ids are the gateway's opaque hashes, and no API key
// or prompt text is ever written.
package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dayLayout is how a day is written in keys and queries (UTC).
const dayLayout = "2006-01-02"

// bucket holds one Totals per (day, owner, config, provider).
var bucket = []byte("usage_v1")

// Totals are the summed usage of one or more turns.
type Totals struct {
	// InputTokens are uncached input tokens.
	InputTokens int64 `json:"input_tokens"`
	// OutputTokens are generated tokens.
	OutputTokens int64 `json:"output_tokens"`
	// CacheReadTokens are input tokens read from the prompt cache.
	CacheReadTokens int64 `json:"cache_read_tokens"`
	// CacheWriteTokens are input tokens written to the prompt cache.
	CacheWriteTokens int64 `json:"cache_write_tokens"`
	// CostUSD is the cost in US dollars as the Claude Code CLI estimates
	// it: its result line's model_usage_since_last_result costUSD, summed
	// over the models (agent.Result.CostUSD); the result's usage object
	// counts the turn's model calls only, not the session's.
	CostUSD float64 `json:"cost_usd"`
	// Turns counts the turns run, however they ended (a result, an
	// error, their client gone).
	Turns int64 `json:"turns"`
	// Conversations counts conversations started (a new session: a first
	// turn, a launch, or a lost agent replaced).
	Conversations int64 `json:"conversations"`
	// TurnSeconds is the turns' duration as the CLI reports it
	// (duration_ms): the time the model and tools worked.
	TurnSeconds float64 `json:"turn_seconds"`
	// AgentSeconds is the time the gateway held an agent for the turns:
	// from the request's start, including creating or waking the agent,
	// until the turn's end. Idle time between turns is not counted.
	AgentSeconds float64 `json:"agent_seconds"`
}

// Tokens is every token counted: input, output, cache reads and writes.
func (t Totals) Tokens() int64 {
	return t.InputTokens + t.OutputTokens + t.CacheReadTokens + t.CacheWriteTokens
}

// Add sums o into t.
func (t *Totals) Add(o Totals) {
	t.InputTokens += o.InputTokens
	t.OutputTokens += o.OutputTokens
	t.CacheReadTokens += o.CacheReadTokens
	t.CacheWriteTokens += o.CacheWriteTokens
	t.CostUSD += o.CostUSD
	t.Turns += o.Turns
	t.Conversations += o.Conversations
	t.TurnSeconds += o.TurnSeconds
	t.AgentSeconds += o.AgentSeconds
}

// Key is what a record is kept by.
type Key struct {
	// Day is the UTC day, YYYY-MM-DD.
	Day string
	// Owner is the gateway's opaque owner hash.
	Owner string
	// Config is the configuration id.
	Config string
	// Provider is the provider's name.
	Provider string
}

func (k Key) bytes() []byte {
	return []byte(k.Day + "\x00" + k.Owner + "\x00" + k.Config + "\x00" + k.Provider)
}

func parseKey(b []byte) (Key, bool) {
	p := strings.Split(string(b), "\x00")
	if len(p) != 4 {
		return Key{}, false
	}
	return Key{Day: p[0], Owner: p[1], Config: p[2], Provider: p[3]}, true
}

// Day is t's UTC day as keys write it.
func Day(t time.Time) string { return t.UTC().Format(dayLayout) }

// Store is the usage database.
type Store struct {
	db *bolt.DB
}

// Open opens (creating it and its directory if needed) the database at
// path. It fails rather than waits when another process holds the file.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("usage store directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("usage store %s is in use by another process", path)
		}
		return nil, fmt.Errorf("opening usage store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("preparing usage store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Destruct closes the database (caddy.Destructor).
func (s *Store) Destruct() error { return s.Close() }

// Add adds t to the record of k. Its read and write are one bbolt write
// transaction, and bbolt runs one at a time: concurrent Adds sum.
func (s *Store) Add(k Key, t Totals) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var cur Totals
		if v := b.Get(k.bytes()); v != nil {
			if err := json.Unmarshal(v, &cur); err != nil {
				return fmt.Errorf("record %q: %w", k.Day, err)
			}
		}
		cur.Add(t)
		v, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		return b.Put(k.bytes(), v)
	})
	if err != nil {
		return fmt.Errorf("recording usage: %w", err)
	}
	return nil
}

// Filter selects records; empty fields match everything.
type Filter struct {
	// From and To are the first and last UTC days, YYYY-MM-DD, inclusive.
	From, To string
	// Owner, Config and Provider restrict the records to theirs.
	Owner, Config, Provider string
}

func (f Filter) match(k Key) bool {
	return (f.Owner == "" || k.Owner == f.Owner) && (f.Config == "" || k.Config == f.Config) &&
		(f.Provider == "" || k.Provider == f.Provider) && (f.To == "" || k.Day <= f.To)
}

// scan is where the records f selects begin in key order, and the prefix
// they all share (nil for none): keys lead with the day, then the owner
// and the configuration, so one day's records of an owner (and of one of
// its configurations) are one range.
func (f Filter) scan() (from, prefix []byte) {
	if f.From == "" || f.From != f.To {
		return []byte(f.From), nil
	}
	p := f.From + "\x00"
	if f.Owner != "" {
		p += f.Owner + "\x00"
		if f.Config != "" {
			p += f.Config + "\x00"
		}
	}
	return []byte(p), []byte(p)
}

// Each calls fn for every record f selects, in key order (by day).
func (s *Store) Each(f Filter, fn func(Key, Totals)) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		from, prefix := f.scan()
		for k, v := c.Seek(from); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			key, ok := parseKey(k)
			if !ok {
				continue
			}
			if f.To != "" && key.Day > f.To {
				break
			}
			if !f.match(key) {
				continue
			}
			var t Totals
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("record %q: %w", key.Day, err)
			}
			fn(key, t)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading usage: %w", err)
	}
	return nil
}

// Sum adds up the records f selects.
func (s *Store) Sum(f Filter) (Totals, error) {
	var sum Totals
	err := s.Each(f, func(_ Key, t Totals) { sum.Add(t) })
	return sum, err
}
