package server

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
)

func TestSSEWriterRoundTrip(t *testing.T) {
	events := []agent.Event{
		{Type: agent.EventTextDelta, Seq: 1, Text: "Hello <world> & \"friends\"\n\u2028"},
		{Type: agent.EventThinkingDelta, Seq: 2, ParentToolUseID: "toolu_1", Text: "hm"},
		{Type: agent.EventToolUse, Seq: 3, ToolUseID: "toolu_2", Name: "Bash", Input: json.RawMessage(`{"command":"ls"}`)},
		{Type: agent.EventResult, Seq: 4, Result: &agent.Result{StopReason: "end_turn", Text: "done"}},
	}
	rec := httptest.NewRecorder()
	w := newSSEWriter(rec)
	for _, e := range events {
		require.NoError(t, w.Write(e))
	}
	assert.False(t, rec.Flushed, "Write leaves the flush to the relay")
	require.NoError(t, w.Flush())
	assert.True(t, rec.Flushed)
	st := agentclient.NewStream(io.NopCloser(rec.Body))
	for _, want := range events {
		got, err := st.Next()
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := st.Next()
	assert.ErrorIs(t, err, io.EOF)

	r := bufio.NewReader(rec.Body)
	_, err = r.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "nothing after the final event")
}

// BenchmarkSSEWriterTextDelta is the agent's cost to send one text delta.
func BenchmarkSSEWriterTextDelta(b *testing.B) {
	w := newSSEWriter(httptest.NewRecorder())
	w.w = io.Discard
	e := agent.Event{Type: agent.EventTextDelta, Seq: 1, Text: "Hello, this is a typical token or two. "}
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Write(e); err != nil {
			b.Fatal(err)
		}
	}
}
