package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// TestLoad runs 50 conversations at once, two turns each with a Bash tool
// call, against the real stack: all succeed, there is one container per
// conversation while they run and none after. Time-to-first-token
// percentiles are logged (and recorded in BENCHMARKS.md); they are not
// asserted.
func TestLoad(t *testing.T) {
	n := loadConversations(t)
	e := setup(t)
	g := e.startGatewayWith(t, gatewayOptions{readyTimeout: "10m"})
	e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
		Match: anthropictest.Match{HasToolResult: ptr(false)},
		Response: anthropictest.Response{Blocks: []anthropictest.Block{
			{Type: anthropictest.BlockText, Text: "Checking."},
			anthropictest.ToolUse("Bash", map[string]string{"command": "echo load-$((20+22))", "description": "check"}),
		}},
		Times: anthropictest.Unlimited,
	}, {
		Match:    anthropictest.Match{HasToolResult: ptr(true)},
		Response: anthropictest.Response{Text: "Checked."},
		Times:    anthropictest.Unlimited,
	}}})

	type result struct {
		ttft [2]time.Duration
		err  error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := g.client(fmt.Sprintf("sk-ant-test-load-%02d", i))
			id := fmt.Sprintf("c-load-%02d", i)
			for turn := range 2 {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
				began := time.Now()
				s := c.Chat.Completions.NewStreaming(ctx, user(fmt.Sprintf("Turn %d, please check.", turn)), conv(id))
				var content strings.Builder
				for s.Next() {
					ch := s.Current()
					if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
						if results[i].ttft[turn] == 0 {
							results[i].ttft[turn] = time.Since(began)
						}
						content.WriteString(ch.Choices[0].Delta.Content)
					}
				}
				err := s.Err()
				cancel()
				if err == nil && !strings.Contains(content.String(), "load-42") {
					err = fmt.Errorf("turn %d: no tool output in %q", turn, content.String())
				}
				if err != nil {
					results[i].err = err
					return
				}
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	for i, r := range results {
		require.NoError(t, r.err, "conversation %d", i)
	}
	assert.Len(t, e.containers(t, g.runID), n, "one container per conversation")
	reqs, err := e.mock.Requests(context.Background())
	require.NoError(t, err)
	assert.Len(t, reqs, 4*n, "two API calls per turn, two turns per conversation")

	var cold, warm []time.Duration
	for _, r := range results {
		cold = append(cold, r.ttft[0])
		warm = append(warm, r.ttft[1])
	}
	t.Logf("%d conversations x 2 turns in %s; first turn TTFT p50 %s p95 %s max %s; second turn TTFT p50 %s p95 %s max %s",
		n, total.Round(time.Millisecond), ms(pct(cold, 50)), ms(pct(cold, 95)), ms(slices.Max(cold)), ms(pct(warm, 50)), ms(pct(warm, 95)), ms(slices.Max(warm)))
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// loadConversations is how many conversations TestLoad runs: 50, or
// $AGCLUSTER_LOAD_CONVERSATIONS.
func loadConversations(t *testing.T) int {
	if v := os.Getenv("AGCLUSTER_LOAD_CONVERSATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		return n
	}
	return 50
}
