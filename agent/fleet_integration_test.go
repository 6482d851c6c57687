package agent_test

import (
	"context"
	"errors"
	"strings"
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

	st, err := s.agent.Stats(ctx)
	require.NoError(t, err)
	assert.Less(t, st.IdleSeconds, float64(time.Hour/time.Second), "idle since the last turn")
}

// TestNextTurnAfterItsClientLeft: a turn whose client goes away mid-stream
// (its gateway died) is interrupted; the next turn, once the agent takes
// it, answers the new message with the earlier one in its context, and
// nothing of the interrupted turn leaks into it.
func TestNextTurnAfterItsClientLeft(t *testing.T) {
	testenv.Integration(t)
	s := startProcessStack(t)
	s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "long story"},
		Response: anthropictest.Response{Text: strings.Repeat("Heron. ", 60), ChunkChars: 7, ChunkDelayMS: 100},
	}}, Default: &anthropictest.Response{Text: "The code word was heron."}})

	ctx, cancel := context.WithCancel(context.Background())
	st, err := s.agent.Turn(ctx, agent.QueryRequest{Prompt: "The code word is heron. Tell me a long story.", APIKey: "sk-ant-test"})
	require.NoError(t, err)
	for {
		e, err := st.Next()
		require.NoError(t, err)
		if e.Type == agent.EventText {
			break
		}
	}
	cancel()
	st.Close()

	var events []agent.Event
	testenv.Eventually(t, time.Minute, func() bool {
		st, err := s.agent.Turn(context.Background(), agent.QueryRequest{Prompt: "Which word?", APIKey: "sk-ant-test"})
		if errors.Is(err, agentclient.ErrBusy) {
			return false
		}
		require.NoError(t, err)
		events = s.readStream(t, st)
		return true
	}, "the agent stayed busy after the client left")
	last := lastEvent(events)
	require.Equal(t, agent.EventResult, last.Type, "%+v", events)
	assert.Equal(t, "The code word was heron.", last.Result.Text, "nothing of the interrupted turn leaks into the next")
	req := s.requests(t)
	assert.Contains(t, req[len(req)-1].AllText(), "code word is heron", "the earlier turn is in the context")
}
