package module

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/session"
	"github.com/agcluster/caddy-agcluster/usage"
)

// meteredApp is an app recording into a fresh usage store.
func meteredApp(t *testing.T) *App {
	t.Helper()
	store, err := usage.Open(filepath.Join(t.TempDir(), "usage.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	a := &App{logger: zap.NewNop()}
	a.meter.Store(&usage.Meter{Store: store})
	return a
}

func TestRecordCountsEveryTurn(t *testing.T) {
	result := &agent.Result{Usage: agent.Usage{InputTokens: 10, OutputTokens: 5, CacheReadInputTokens: 3, CacheCreationInputTokens: 2},
		CostUSD: 0.25, DurationMS: 1500}
	tests := []struct {
		name string
		u    turnUsage
		want usage.Totals
	}{
		{"a turn with its result", turnUsage{turn: true, result: result, held: 2 * time.Second},
			usage.Totals{InputTokens: 10, OutputTokens: 5, CacheReadTokens: 3, CacheWriteTokens: 2, CostUSD: 0.25,
				Turns: 1, TurnSeconds: 1.5, AgentSeconds: 2}},
		// The client left, or the turn failed: no result, but the agent
		// was held for it all the same.
		{"a turn without a result", turnUsage{turn: true, held: 3 * time.Second}, usage.Totals{Turns: 1, AgentSeconds: 3}},
		{"a new conversation's first turn", turnUsage{turn: true, held: time.Second, newConversation: true},
			usage.Totals{Turns: 1, AgentSeconds: 1, Conversations: 1}},
		{"a launch", turnUsage{newConversation: true}, usage.Totals{Conversations: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := meteredApp(t)
			tt.u.owner, tt.u.config, tt.u.provider = "alice", "agent", "docker"
			a.record(tt.u)
			got, err := a.metered().Store.Sum(usage.Filter{Owner: "alice"})
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestOwnerUsageErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	// A record that cannot be read back: the store's fault, not the client's.
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("usage_v1"))
		if err != nil {
			return err
		}
		return b.Put([]byte(usage.Day(time.Now())+"\x00alice\x00agent\x00docker"), []byte("{not json"))
	}))
	require.NoError(t, db.Close())
	store, err := usage.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	core, logs := observer.New(zap.ErrorLevel)
	a := &App{logger: zap.New(core)}
	a.meter.Store(&usage.Meter{Store: store})

	tests := []struct {
		name, query string
		status      int
		message     string
	}{
		{"an unknown group_by", "?group_by=nope", http.StatusBadRequest, "group_by: want day, config or provider"},
		{"owners are the admin API's", "?group_by=owner", http.StatusBadRequest, "group_by: want day, config or provider"},
		{"an unreadable record", "", http.StatusInternalServerError, "Your usage could not be read; try again, or tell the gateway's operator (request id "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/agents/usage"+tt.query, nil)
			_, oerr := a.ownerUsage(r, "alice")
			require.NotNil(t, oerr)
			assert.Equal(t, tt.status, oerr.Status)
			assert.True(t, strings.HasPrefix(oerr.Message, tt.message), oerr.Message)
			assert.NotContains(t, oerr.Message, "json", "no store detail")
		})
	}
	logged := logs.FilterMessage("reading usage failed").All()
	require.Len(t, logged, 1, "the store's error is logged")
	assert.Contains(t, logged[0].ContextMap()["error"], "reading usage")
}

func TestKeepFigures(t *testing.T) {
	cpu1, cpu2, mem1, mem2 := 12.0, 5.0, int64(100), int64(200)
	last := []dashSession{{ID: "s1", CPUPercent: &cpu1, MemoryBytes: &mem1}, {ID: "s2", CPUPercent: &cpu2, MemoryBytes: &mem2}}
	now := []dashSession{{ID: "s2"}, {ID: "s3"}, {ID: "s1", Status: session.StatusSleeping}}
	keepFigures(now, last)
	assert.Equal(t, []dashSession{{ID: "s2", CPUPercent: &cpu2, MemoryBytes: &mem2}, {ID: "s3"}, {ID: "s1", Status: session.StatusSleeping}}, now)
}

func TestUsageQueryUsesTheMetersClock(t *testing.T) {
	a := meteredApp(t)
	day := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	a.metered().Now = func() time.Time { return day }
	a.record(turnUsage{owner: "alice", config: "agent", provider: "docker", turn: true, held: time.Second})
	r := httptest.NewRequest(http.MethodGet, "/api/agents/usage?days=7", nil)
	out, oerr := a.ownerUsage(r, "alice")
	require.Nil(t, oerr)
	rep := out.(usageReport)
	assert.Equal(t, "2026-03-04", rep.From)
	assert.Equal(t, "2026-03-10", rep.To)
	assert.Equal(t, int64(1), rep.Total.Turns, "the turn recorded on the meter's day")
}

func TestDashLookIsShared(t *testing.T) {
	var l dashLook
	looks := 0
	fresh := func() dashFigures { looks++; return dashFigures{pool: make([]session.PoolStats, looks)} }
	var wg sync.WaitGroup
	got := make([]dashFigures, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = l.take(time.Hour, fresh)
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, looks, "pages asking at once share one look")
	for _, g := range got {
		assert.Len(t, g.pool, 1)
	}
	assert.Len(t, l.take(0, fresh).pool, 2, "a look past its age is taken again")
	assert.Equal(t, 2, looks)
}
