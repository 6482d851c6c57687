package agent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// startAgentProcess starts the agent binary against mockURL and returns a
// client and a stop function. It does not wait for readiness.
func startAgentProcess(b *testing.B, bin, claude, mockURL string, extraEnv ...string) (*agentclient.Client, func()) {
	root := b.TempDir()
	ws, home := filepath.Join(root, "ws"), filepath.Join(root, "home")
	if err := os.Mkdir(ws, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		b.Fatal(err)
	}
	addr := testenv.FreeAddr(b)
	token := testenv.RandomHex(16)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "AGENT_TOKEN=" + token,
		"AGENT_WORKSPACE=" + ws, "AGENT_ADDR=" + addr, "CLAUDE_BIN=" + claude, "ANTHROPIC_BASE_URL=" + mockURL}
	cmd.Env = append(cmd.Env, extraEnv...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	return &agentclient.Client{BaseURL: "http://" + addr, Token: token}, stop
}

func pollReady(b *testing.B, c *agentclient.Client, every time.Duration) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, status, err := c.Health(context.Background()); err == nil && status == http.StatusOK {
			return
		}
		time.Sleep(every)
	}
	b.Fatal("agent never became ready")
}

// BenchmarkAgentStartToReady measures process start to /health "ready":
// the agent server listening and the claude CLI loaded and initialised.
func BenchmarkAgentStartToReady(b *testing.B) {
	bin := testenv.GoBinary(b, "./agent/cmd/agcluster-agent")
	claude := testenv.ClaudeBin(b)
	mock := anthropictest.NewServer(b, anthropictest.Script{})
	var samples []time.Duration
	for b.Loop() {
		start := time.Now()
		c, stop := startAgentProcess(b, bin, claude, mock.URL())
		pollReady(b, c, 5*time.Millisecond)
		samples = append(samples, time.Since(start))
		b.StopTimer()
		stop()
		b.StartTimer()
	}
	b.ReportMetric(testenv.MedianMS(samples), "median-ms")
}

// BenchmarkTurnLatency measures a turn on a warm agent against a mock that
// answers at once: time to the first text delta and to the result event.
// BenchmarkFirstTurn: the first turn of a freshly started (ready) agent
// against its second turn, without and with the warm-up that warm-pool
// agents run (AGENT_WARM_UP=1).
func BenchmarkFirstTurn(b *testing.B) {
	bin := testenv.GoBinary(b, "./agent/cmd/agcluster-agent")
	claude := testenv.ClaudeBin(b)
	mock := anthropictest.NewServer(b, anthropictest.Script{Default: &anthropictest.Response{Text: "Hello there, benchmark."}})
	var first, second, warmFirst []time.Duration
	for b.Loop() {
		for _, warm := range []bool{false, true} {
			b.StopTimer()
			var env []string
			if warm {
				env = append(env, "AGENT_WARM_UP=1")
			}
			c, stop := startAgentProcess(b, bin, claude, mock.URL(), env...)
			pollReady(b, c, 5*time.Millisecond)
			time.Sleep(500 * time.Millisecond) // ready and idle, as in the pool
			b.StartTimer()
			if warm {
				warmFirst = append(warmFirst, turnTTFT(b, c))
			} else {
				first = append(first, turnTTFT(b, c))
				second = append(second, turnTTFT(b, c))
			}
			b.StopTimer()
			stop()
			b.StartTimer()
		}
	}
	b.ReportMetric(testenv.MedianMS(first), "first-ttft-median-ms")
	b.ReportMetric(testenv.MedianMS(second), "second-ttft-median-ms")
	b.ReportMetric(testenv.MedianMS(warmFirst), "warmed-first-ttft-median-ms")
}

func turnTTFT(b *testing.B, c *agentclient.Client) time.Duration {
	ttft, _ := timeTurn(b, c)
	return ttft
}

// timeTurn runs one turn and returns its time to the first text delta and
// to the end.
func timeTurn(b *testing.B, c *agentclient.Client) (ttft, total time.Duration) {
	start := time.Now()
	st, err := c.Query(context.Background(), "say hi", "sk-ant-test")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for {
		e, err := st.Next()
		if errors.Is(err, io.EOF) {
			return ttft, time.Since(start)
		}
		if err != nil {
			b.Fatal(err)
		}
		if e.Type == agent.EventTextDelta && ttft == 0 {
			ttft = time.Since(start)
		}
		if e.Type == agent.EventError {
			b.Fatalf("turn failed: %s", e.Message)
		}
	}
}

func BenchmarkTurnLatency(b *testing.B) {
	bin := testenv.GoBinary(b, "./agent/cmd/agcluster-agent")
	claude := testenv.ClaudeBin(b)
	mock := anthropictest.NewServer(b, anthropictest.Script{Default: &anthropictest.Response{Text: "Hello there, benchmark."}})
	c, stop := startAgentProcess(b, bin, claude, mock.URL())
	defer stop()
	pollReady(b, c, 5*time.Millisecond)
	var ttft, total []time.Duration
	for b.Loop() {
		first, all := timeTurn(b, c)
		ttft, total = append(ttft, first), append(total, all)
	}
	b.ReportMetric(testenv.MedianMS(ttft), "ttft-median-ms")
	b.ReportMetric(testenv.MedianMS(total), "turn-median-ms")
}
