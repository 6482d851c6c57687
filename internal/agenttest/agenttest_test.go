package agenttest

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
)

func TestSSEReadsBack(t *testing.T) {
	events := []agent.Event{
		{Type: agent.EventTextDelta, Seq: 1, Text: "Hello"},
		{Type: agent.EventResult, Seq: 2, Result: &agent.Result{TurnID: "t1"}},
	}
	st := agentclient.NewStream(io.NopCloser(strings.NewReader(SSE(events...))))
	var got []agent.Event
	for {
		e, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		got = append(got, e)
	}
	assert.Equal(t, events, got)
}

func TestBrokenAfter(t *testing.T) {
	cut := errors.New("connection reset by peer")
	b, err := io.ReadAll(bufio.NewReader(BrokenAfter(strings.NewReader("partial"), cut)))
	assert.Equal(t, "partial", string(b), "what came before the cut is read")
	assert.ErrorIs(t, err, cut)
}
