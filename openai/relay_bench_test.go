package openai_test

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/openai"
)

// BenchmarkRelayTextDelta is the gateway's work per streamed event: read
// one text delta from the agent's SSE stream, decode it, and write it as
// an OpenAI chunk (to io.Discard). ns/op is the gateway's cost per event;
// events/s is its ceiling on one core.
func BenchmarkRelayTextDelta(b *testing.B) {
	const perStream = 1000
	var sse bytes.Buffer
	for i := range perStream {
		data, _ := json.Marshal(agent.Event{Type: agent.EventTextDelta, Seq: i + 1, Text: "Hello, this is a typical token or two. "})
		sse.WriteString("data: ")
		sse.Write(data)
		sse.WriteString("\n\n")
	}
	data, _ := json.Marshal(agent.Event{Type: agent.EventResult, Seq: perStream + 1, Result: &agent.Result{StopReason: "end_turn"}})
	sse.WriteString("data: " + string(data) + "\n\n")
	body := sse.Bytes()

	b.ReportAllocs()
	b.SetBytes(int64(len(body)) / perStream)
	var (
		st *agentclient.Stream
		w  *openai.StreamWriter
	)
	events := 0
	for b.Loop() {
		if events%perStream == 0 {
			b.StopTimer()
			st = agentclient.NewStream(io.NopCloser(bytes.NewReader(body)))
			w = openai.NewStreamWriter(io.Discard, func() error { return nil }, openai.Options{Model: "agent"})
			if err := w.Start(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		e, err := st.Next()
		if err != nil {
			b.Fatal(err)
		}
		if e.Type != agent.EventTextDelta || !strings.HasPrefix(e.Text, "Hello") {
			b.Fatalf("unexpected event %+v", e)
		}
		if err := w.Event(e); err != nil {
			b.Fatal(err)
		}
		events++
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}
