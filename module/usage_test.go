package module

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
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
