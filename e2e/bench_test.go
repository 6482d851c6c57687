package e2e

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers/docker"
)

// ttft streams one completion and returns the time to its first content.
func ttft(b *testing.B, c openai.Client, text string, opts ...option.RequestOption) time.Duration {
	start := time.Now()
	s := c.Chat.Completions.NewStreaming(context.Background(), user(text), opts...)
	var first time.Duration
	for s.Next() {
		ch := s.Current()
		if first == 0 && len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			first = time.Since(start)
		}
	}
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	if first == 0 {
		b.Fatal("no content")
	}
	return first
}

func benchSetup(b *testing.B) (*env, *gateway) {
	e := setup(b)
	return e, e.startGateway(b, "30m", "")
}

// BenchmarkNewConversationTTFT: a new conversation's time to first token,
// cold (container create, start, agent and CLI ready, first turn).
func BenchmarkNewConversationTTFT(b *testing.B) {
	e, g := benchSetup(b)
	e.script(b, anthropictest.Script{Default: &anthropictest.Response{Text: "Hello from a cold start."}})
	c := g.client("sk-ant-bench-cold")
	var samples []time.Duration
	for b.Loop() {
		samples = append(samples, ttft(b, c, "Hi.", conv("bench-cold-"+testenv.RandomHex(4))))
	}
	b.ReportMetric(testenv.MedianMS(samples), "median-ms")
	b.ReportMetric(float64(slices.Min(samples))/1e6, "min-ms")
	b.ReportMetric(float64(slices.Max(samples))/1e6, "max-ms")
}

// BenchmarkFollowUpTTFT: a follow-up turn's time to first token through
// Caddy, on a warm container, with the mock answering at once.
func BenchmarkFollowUpTTFT(b *testing.B) {
	e, g := benchSetup(b)
	e.script(b, anthropictest.Script{Default: &anthropictest.Response{Text: "A quick follow-up answer."}})
	c := g.client("sk-ant-bench-warm")
	ttft(b, c, "First turn.", conv("bench-warm"))
	var samples []time.Duration
	for b.Loop() {
		samples = append(samples, ttft(b, c, "Again.", conv("bench-warm")))
	}
	b.ReportMetric(testenv.MedianMS(samples), "median-ms")
	b.ReportMetric(float64(slices.Min(samples))/1e6, "min-ms")
	b.ReportMetric(float64(slices.Max(samples))/1e6, "max-ms")
}

// BenchmarkStreamingOverhead compares one long streamed answer read
// through Caddy (agent events -> OpenAI chunks) with the same answer read
// directly from the agent's SSE. It reports the time per event both ways
// and the difference: the module's streaming overhead per event.
func BenchmarkStreamingOverhead(b *testing.B) {
	e, g := benchSetup(b)
	const deltas = 500
	answer := strings.Repeat("ab", deltas)
	e.script(b, anthropictest.Script{Default: &anthropictest.Response{Text: answer, ChunkChars: 2}})
	c := g.client("sk-ant-bench-overhead")
	ttft(b, c, "Warm up.", conv("bench-overhead"))

	prov, err := docker.New(docker.Options{ExtraLabels: map[string]string{"agcluster.test.run": g.runID}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	insts, err := prov.List(context.Background())
	if err != nil || len(insts) != 1 {
		b.Fatalf("want the one agent: %v %d", err, len(insts))
	}
	direct := &agentclient.Client{BaseURL: insts[0].URL, Token: insts[0].Token}

	var viaCaddy, viaDirect []time.Duration
	for b.Loop() {
		// Through Caddy: first content chunk to the end of the stream.
		s := c.Chat.Completions.NewStreaming(context.Background(), user("Stream a lot."), conv("bench-overhead"))
		var first time.Time
		n := 0
		for s.Next() {
			ch := s.Current()
			if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
				if n == 0 {
					first = time.Now()
				}
				n++
			}
		}
		if s.Err() != nil || n < deltas/2 {
			b.Fatalf("stream via caddy: %v, %d chunks", s.Err(), n)
		}
		viaCaddy = append(viaCaddy, time.Since(first)/time.Duration(n))

		// Directly from the agent: first text delta to the result.
		st, err := direct.Query(context.Background(), "Stream a lot.", "sk-ant-bench-overhead")
		if err != nil {
			b.Fatal(err)
		}
		n = 0
		for {
			ev, err := st.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if ev.Type == agent.EventTextDelta {
				if n == 0 {
					first = time.Now()
				}
				n++
			}
		}
		_ = st.Close()
		viaDirect = append(viaDirect, time.Since(first)/time.Duration(n))
	}
	mc, md := testenv.MedianMS(viaCaddy)*1000, testenv.MedianMS(viaDirect)*1000
	b.ReportMetric(mc, "caddy-us/event")
	b.ReportMetric(md, "direct-us/event")
	b.ReportMetric(mc-md, "overhead-us/event")
}
