package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/relay"
	"github.com/agcluster/caddy-agcluster/openai"
)

// chunkSink writes events as OpenAI chunks, as the gateway does, and
// counts the flushes.
type chunkSink struct {
	sw      *openai.StreamWriter
	flushes int
}

func (s *chunkSink) Write(e agent.Event) error { return s.sw.Buffer(e) }
func (s *chunkSink) KeepAlive() error          { return s.sw.BufferKeepAlive() }
func (s *chunkSink) Flush() error              { return s.sw.Flush() }

// BenchmarkCopyTextDelta is the gateway's streaming path through the
// relay: an agent SSE stream of text deltas (read from memory, so every
// event is already there, as in a fast unpaced turn) decoded, relayed and
// written as OpenAI chunks to io.Discard. ns/event is the cost per event
// with the reader and writer goroutines; flushes/event shows the
// coalescing (1 would be a flush per event).
func BenchmarkCopyTextDelta(b *testing.B) {
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
	b.SetBytes(int64(len(body)))
	var events, flushes int
	for b.Loop() {
		sink := &chunkSink{}
		sink.sw = openai.NewStreamWriter(io.Discard, func() error { sink.flushes++; return nil }, openai.Options{Model: "agent"})
		st := agentclient.NewStream(io.NopCloser(bytes.NewReader(body)))
		if err := relay.Copy[agent.Event](context.Background(), sink, st, relay.Options{}); err != nil {
			b.Fatal(err)
		}
		events += perStream + 1
		flushes += sink.flushes
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
	b.ReportMetric(float64(flushes)/float64(events), "flushes/event")
}

// countSink does nothing but count.
type countSink struct{ writes, flushes int }

func (s *countSink) Write(int) error  { s.writes++; return nil }
func (s *countSink) KeepAlive() error { return nil }
func (s *countSink) Flush() error     { s.flushes++; return nil }

// BenchmarkProduce is the relay's own cost per event: a producer sending
// as fast as it can to a sink that does nothing.
func BenchmarkProduce(b *testing.B) {
	const perRun = 10000
	var events, flushes int
	for b.Loop() {
		sink := &countSink{}
		err := relay.Produce[int](context.Background(), sink, relay.Options{}, func(send func(int) error) error {
			for i := range perRun {
				if err := send(i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		events += sink.writes
		flushes += sink.flushes
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
	b.ReportMetric(float64(flushes)/float64(events), "flushes/event")
}
