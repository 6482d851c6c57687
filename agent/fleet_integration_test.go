package agent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// TestTranscriptKeptWithTheAgent: the gateways' record of the conversation
// (PUT /transcript) is answered back as it was put, and outlives a stop and
// start of the agent on its state directory, so any gateway that serves
// the conversation next finds it.
func TestTranscriptKeptWithTheAgent(t *testing.T) {
	testenv.Integration(t)
	ctx := context.Background()
	mock := anthropictest.NewServer(t, anthropictest.Script{})
	dirs := newAgentDirs(t)
	first := startProcessStackOn(t, mock, dirs, agent.EnvStateDir+"="+dirs.state)

	empty, err := first.agent.Transcript(ctx)
	require.NoError(t, err)
	assert.Equal(t, agent.Transcript{}, empty, "an agent never given a transcript answers an empty one")

	want := agent.Transcript{Tip: "fp2", Turns: map[string]string{"fp1": "turn-1", "fp2": "turn-2"},
		SentHistory: true, Names: []string{"librechat-id"}, Pending: []string{"call_1"}}
	require.NoError(t, first.agent.PutTranscript(ctx, want))
	got, err := first.agent.Transcript(ctx)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	first.stop()
	second := startProcessStackOn(t, mock, dirs, agent.EnvStateDir+"="+dirs.state)
	got, err = second.agent.Transcript(ctx)
	require.NoError(t, err)
	assert.Equal(t, want, got, "the transcript outlived the stop")
}

// TestSleepClaim: of the gateways sharing an agent, one may put it to
// sleep, and only once it has been idle as long as asked; while a claim
// holds, a turn is refused as "sleeping"; a released claim lets turns run
// again.
func TestSleepClaim(t *testing.T) {
	testenv.Integration(t)
	ctx := context.Background()
	s := startProcessStack(t)
	s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Done."}})
	s.turn(t, "hello")

	tests := []struct {
		name    string
		minIdle time.Duration
		granted bool
		reason  string
	}{
		{"used more recently than asked", time.Hour, false, agent.ClaimRecentlyUsed},
		{"idle long enough", 0, true, ""},
		{"a second gateway", 0, false, agent.ClaimTaken},
	}
	for _, tt := range tests {
		claim, err := s.agent.ClaimSleep(ctx, tt.minIdle)
		require.NoError(t, err, tt.name)
		assert.Equal(t, tt.granted, claim.Granted, tt.name)
		assert.Equal(t, tt.reason, claim.Reason, tt.name)
		assert.Positive(t, claim.IdleSeconds, tt.name)
	}

	_, err := s.agent.Turn(ctx, agent.QueryRequest{Prompt: "one more", APIKey: "sk-ant-test"})
	var ae *agentclient.APIError
	require.True(t, errors.As(err, &ae), "%v", err)
	assert.Equal(t, agent.CodeSleeping, ae.Code, "no turn starts while a gateway puts the agent to sleep")

	require.NoError(t, s.agent.ReleaseSleep(ctx))
	events := s.turn(t, "one more")
	assert.Equal(t, agent.EventResult, lastEvent(events).Type, "turns run again once the claim is released")

	// A turn that holds the CLI (its model stream stalls until the turn
	// is interrupted) keeps every gateway from putting the agent to sleep.
	s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Still thinking about it.", ChunkChars: 5, HangAfterDeltas: ptr(1)}})
	st, err := s.agent.Turn(ctx, agent.QueryRequest{Prompt: "a long one", APIKey: "sk-ant-test"})
	require.NoError(t, err)
	claim, err := s.agent.ClaimSleep(ctx, 0)
	require.NoError(t, err)
	assert.False(t, claim.Granted, "a turn runs")
	assert.Equal(t, agent.ClaimBusy, claim.Reason)
	_, err = s.agent.Interrupt(ctx)
	require.NoError(t, err)
	s.readStream(t, st)
}
