package docker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agcluster/caddy-agcluster/providers/docker"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
)

// BenchmarkCreateReady measures Create until the agent answers ready;
// Destroy runs outside the timer. Besides ns/op it reports medians of the
// whole (median-ms) and of its phases, read from the provider's
// "agent container created" log: volume and container creation
// (create-ms), start and inspect (start-ms), and /health polling (ready-ms).
func BenchmarkCreateReady(b *testing.B) {
	engine(b)
	core, logs := observer.New(zap.InfoLevel)
	p, err := docker.New(baseOptions(), zap.New(core))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	phases := map[string][]float64{}
	var total []float64

	for b.Loop() {
		spec := providertest.NewSpec()
		start := time.Now()
		inst, err := p.Create(context.Background(), spec)
		elapsed := time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		total = append(total, ms(elapsed))
		for _, e := range logs.FilterMessage("agent container created").TakeAll() {
			f := e.ContextMap()
			for field, metric := range map[string]string{"create_duration": "create-ms", "start_duration": "start-ms", "ready_duration": "ready-ms"} {
				if d, ok := f[field].(time.Duration); ok {
					phases[metric] = append(phases[metric], ms(d))
				}
			}
		}
		if err := p.Destroy(context.Background(), inst.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(median(total), "median-ms")
	for metric, v := range phases {
		b.ReportMetric(median(v), metric)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
