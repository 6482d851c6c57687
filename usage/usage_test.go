package usage

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clock is a test clock the meter reads.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "sub", "usage.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestStoreKeepsRecordsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	s, err := Open(path)
	require.NoError(t, err)
	k := Key{Day: "2026-03-01", Owner: "o1", Config: "agent", Provider: "docker"}
	require.NoError(t, s.Add(k, Totals{InputTokens: 10, OutputTokens: 5, CostUSD: 0.01, Turns: 1}))
	require.NoError(t, s.Add(k, Totals{InputTokens: 1, Turns: 1}))

	_, err = Open(path)
	require.ErrorContains(t, err, "in use by another process")
	require.NoError(t, s.Close())

	s, err = Open(path)
	require.NoError(t, err)
	defer s.Close()
	sum, err := s.Sum(Filter{Owner: "o1"})
	require.NoError(t, err)
	assert.Equal(t, Totals{InputTokens: 11, OutputTokens: 5, CostUSD: 0.01, Turns: 2}, sum)
}

func TestConcurrentAddsSum(t *testing.T) {
	s := openTemp(t)
	k := Key{Day: "2026-03-01", Owner: "o1", Config: "agent", Provider: "docker"}
	const writers, adds = 8, 25
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range adds {
				assert.NoError(t, s.Add(k, Totals{Turns: 1}))
			}
		})
	}
	wg.Wait()
	sum, err := s.Sum(Filter{Owner: "o1"})
	require.NoError(t, err)
	assert.Equal(t, int64(writers*adds), sum.Turns)
}

func TestGroupAndRange(t *testing.T) {
	s := openTemp(t)
	for _, r := range []struct {
		k Key
		n int64
	}{
		{Key{"2026-03-01", "a", "agent", "docker"}, 1},
		{Key{"2026-03-02", "a", "code-assistant", "docker"}, 2},
		{Key{"2026-03-02", "a", "agent", "fly"}, 4},
		{Key{"2026-03-02", "b", "agent", "docker"}, 8},
		{Key{"2026-03-03", "a", "agent", "docker"}, 16},
	} {
		require.NoError(t, s.Add(r.k, Totals{OutputTokens: r.n}))
	}
	tests := []struct {
		name string
		f    Filter
		by   string
		want map[string]int64
	}{
		{"a by day", Filter{Owner: "a"}, ByDay, map[string]int64{"2026-03-01": 1, "2026-03-02": 6, "2026-03-03": 16}},
		{"a by config in range", Filter{Owner: "a", From: "2026-03-02", To: "2026-03-02"}, ByConfig, map[string]int64{"agent": 4, "code-assistant": 2}},
		{"all by provider", Filter{}, ByProvider, map[string]int64{"docker": 27, "fly": 4}},
		{"all by owner", Filter{To: "2026-03-02"}, ByOwner, map[string]int64{"a": 7, "b": 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := s.Group(tt.f, tt.by)
			require.NoError(t, err)
			got := map[string]int64{}
			for _, r := range rows {
				got[r.Group] = r.OutputTokens
			}
			assert.Equal(t, tt.want, got)
		})
	}
	_, err := s.Group(Filter{}, "nope")
	assert.Error(t, err)

	f, err := ParseRange("", "", 7, time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	assert.Equal(t, Filter{From: "2026-03-04", To: "2026-03-10"}, f)
	_, err = ParseRange("2026-03-05", "2026-03-01", 7, time.Now())
	assert.Error(t, err)
	_, err = ParseRange("yesterday", "", 7, time.Now())
	assert.Error(t, err)
}

func TestOneDayOfAnOwnerIsOneRange(t *testing.T) {
	s := openTemp(t)
	for i, k := range []Key{
		{"2026-03-01", "a", "agent", "docker"},
		{"2026-03-02", "a", "agent", "docker"},
		{"2026-03-02", "a", "agent", "fly"},
		{"2026-03-02", "a", "agentx", "docker"},
		{"2026-03-02", "ab", "agent", "docker"}, // an owner whose id starts with another's
		{"2026-03-02", "b", "agent", "docker"},
		{"2026-03-03", "a", "agent", "docker"},
	} {
		require.NoError(t, s.Add(k, Totals{OutputTokens: 1 << i}))
	}
	tests := []struct {
		name string
		f    Filter
		want int64
	}{
		{"the day", Filter{From: "2026-03-02", To: "2026-03-02"}, 2 + 4 + 8 + 16 + 32},
		{"the day of an owner", Filter{From: "2026-03-02", To: "2026-03-02", Owner: "a"}, 2 + 4 + 8},
		{"the day of an owner's configuration", Filter{From: "2026-03-02", To: "2026-03-02", Owner: "a", Config: "agent"}, 2 + 4},
		{"the day of an owner on a provider", Filter{From: "2026-03-02", To: "2026-03-02", Owner: "a", Provider: "fly"}, 4},
		{"an owner with no record that day", Filter{From: "2026-03-02", To: "2026-03-02", Owner: "c"}, 0},
		{"days of an owner", Filter{From: "2026-03-01", To: "2026-03-03", Owner: "a"}, 1 + 2 + 4 + 8 + 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum, err := s.Sum(tt.f)
			require.NoError(t, err)
			assert.Equal(t, tt.want, sum.OutputTokens)
		})
	}
}

func TestStandingIsReadOnce(t *testing.T) {
	m := &Meter{Store: openTemp(t), Quota: Quota{Conversations: 1}}
	st, err := m.Standing("alice", "agent")
	require.NoError(t, err)
	require.NoError(t, m.Record("alice", "agent", "docker", Totals{Conversations: 1}))
	assert.Nil(t, st.Check(true), "checks use the usage read")
	r, err := m.Check("alice", "agent", true)
	require.NoError(t, err)
	require.NotNil(t, r, "a new read sees the conversation")
	assert.Equal(t, LimitConversations, r.Limit)

	st, err = (&Meter{Store: m.Store}).Standing("alice", "agent")
	require.NoError(t, err)
	assert.Nil(t, st, "no quota, no read")
	assert.Nil(t, st.Check(true))
}

func TestQuotaResetsAtUTCMidnight(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)}
	m := &Meter{Store: openTemp(t), Now: c.now, Quota: Quota{TokensPerDay: 100}}
	r, err := m.Check("alice", "agent", true)
	require.NoError(t, err)
	require.Nil(t, r)

	// A turn may go past the quota: it is counted after it ends.
	require.NoError(t, m.Record("alice", "agent", "docker", Totals{InputTokens: 90, OutputTokens: 30, Turns: 1}))
	r, err = m.Check("alice", "agent", false)
	require.NoError(t, err)
	require.NotNil(t, r)
	assert.Equal(t, LimitTokens, r.Limit)
	assert.Equal(t, time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), r.ResetsAt)
	assert.Contains(t, r.Message(), "tokens_per_day is 120 tokens of 100 tokens allowed")
	assert.Contains(t, r.Message(), "2026-03-02T00:00:00Z")

	r, err = m.Check("bob", "agent", false)
	require.NoError(t, err)
	assert.Nil(t, r, "another owner is unaffected")

	c.t = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	r, err = m.Check("alice", "agent", false)
	require.NoError(t, err)
	assert.Nil(t, r, "a new UTC day starts over")
	sum, err := m.Store.Sum(Filter{Owner: "alice"})
	require.NoError(t, err)
	assert.Equal(t, int64(120), sum.Tokens(), "yesterday's usage is kept")
}

func TestQuotaLimits(t *testing.T) {
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		quota   Quota
		configQ map[string]Quota
		used    Totals // alice's "agent" usage today
		config  string
		isNew   bool
		want    string // the refused limit; "" for none
		scoped  string // the refusal's Config
	}{
		{"cost", Quota{CostPerDay: 0.5}, nil, Totals{CostUSD: 0.5}, "agent", false, LimitCost, ""},
		{"cost under", Quota{CostPerDay: 0.5}, nil, Totals{CostUSD: 0.49}, "agent", false, "", ""},
		{"agent hours", Quota{AgentHoursPerDay: 1}, nil, Totals{AgentSeconds: 3600}, "agent", false, LimitAgentHours, ""},
		{"conversations: a new one is refused", Quota{Conversations: 2}, nil, Totals{Conversations: 2}, "agent", true, LimitConversations, ""},
		{"conversations: a started one goes on", Quota{Conversations: 2}, nil, Totals{Conversations: 2}, "agent", false, "", ""},
		{"config quota of the used config", Quota{}, map[string]Quota{"agent": {TokensPerDay: 10}}, Totals{OutputTokens: 10}, "agent", false, LimitTokens, "agent"},
		{"config quota leaves other configs", Quota{}, map[string]Quota{"agent": {TokensPerDay: 10}}, Totals{OutputTokens: 10}, "code-assistant", false, "", ""},
		{"global quota counts every config", Quota{TokensPerDay: 10}, nil, Totals{OutputTokens: 10}, "code-assistant", false, LimitTokens, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Meter{Store: openTemp(t), Now: func() time.Time { return day }, Quota: tt.quota, ConfigQuotas: tt.configQ}
			require.NoError(t, m.Record("alice", "agent", "docker", tt.used))
			r, err := m.Check("alice", tt.config, tt.isNew)
			require.NoError(t, err)
			if tt.want == "" {
				assert.Nil(t, r)
				return
			}
			require.NotNil(t, r)
			assert.Equal(t, tt.want, r.Limit)
			assert.Equal(t, tt.scoped, r.Config)
		})
	}
}
