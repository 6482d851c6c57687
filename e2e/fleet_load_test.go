package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// startBalancer starts a Caddy that is only a load balancer in front of
// gs: Caddy's own reverse_proxy, each request to a gateway picked at
// random, as an operator puts several gateways behind one address.
func startBalancer(t testing.TB, gs []*gateway) *gateway {
	t.Helper()
	upstreams := make([]string, len(gs))
	for i, g := range gs {
		upstreams[i] = strings.TrimPrefix(g.url, "http://")
	}
	addr := testenv.FreeAddr(t)
	lb := &gateway{url: "http://" + addr, logs: &testenv.SyncBuffer{}}
	lb.start(t, fmt.Sprintf(`{
	admin off
}
:%s {
	reverse_proxy %s {
		lb_policy random
	}
}
`, addr[strings.LastIndex(addr, ":")+1:], strings.Join(upstreams, " ")), nil, nil)
	return lb
}

// fleetLoad is the outcome of runFleetLoad.
type fleetLoad struct {
	ttft     [][]time.Duration // per conversation, per turn
	sessions [][]string        // X-Session-ID per conversation, per turn
	errs     []error           // per conversation
	took     time.Duration
}

// turnTTFT returns every conversation's time to first token of turn i.
func (l fleetLoad) turnTTFT(i int) []time.Duration {
	out := make([]time.Duration, 0, len(l.ttft))
	for _, ts := range l.ttft {
		if i < len(ts) {
			out = append(out, ts[i])
		}
	}
	return out
}

// runFleetLoad runs convs conversations of turns turns through the load
// balancer at url, at most parallel conversations at a time. Each turn is
// a new request with the conversation's history and id, as chat clients
// send them, so the balancer sends it to any gateway.
func runFleetLoad(t testing.TB, url string, convs, turns, parallel int) fleetLoad {
	l := fleetLoad{ttft: make([][]time.Duration, convs), sessions: make([][]string, convs), errs: make([]error, convs)}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range convs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(fmt.Sprintf("sk-ant-test-fleet-load-%02d", i%6)),
				option.WithMaxRetries(0))
			var texts []string
			for turn := range turns {
				texts = append(texts, fmt.Sprintf("Conversation %d, turn %d.", i, turn))
				ttft, answer, sid, err := streamTurn(c, history(texts...), conv(fmt.Sprintf("c-fleet-load-%02d", i)))
				if err != nil {
					l.errs[i] = fmt.Errorf("turn %d: %w", turn, err)
					return
				}
				texts = append(texts, answer)
				l.ttft[i] = append(l.ttft[i], ttft)
				l.sessions[i] = append(l.sessions[i], sid)
			}
		}()
	}
	wg.Wait()
	l.took = time.Since(start)
	return l
}

// streamTurn streams one completion and returns its time to first token,
// its answer and the session that served it.
func streamTurn(c openai.Client, params openai.ChatCompletionNewParams, opts ...option.RequestOption) (time.Duration, string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var resp *http.Response
	began := time.Now()
	s := c.Chat.Completions.NewStreaming(ctx, params, append(opts, option.WithResponseInto(&resp))...)
	var ttft time.Duration
	var answer strings.Builder
	for s.Next() {
		if ch := s.Current(); len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			if ttft == 0 {
				ttft = time.Since(began)
			}
			answer.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if err := s.Err(); err != nil {
		return 0, "", "", err
	}
	if ttft == 0 {
		return 0, "", "", fmt.Errorf("no content")
	}
	return ttft, answer.String(), resp.Header.Get("X-Session-ID"), nil
}

// startLoadFleet starts n gateways (max_sessions above the load) behind a
// balancer, with the mock answering every turn.
func startLoadFleet(t testing.TB, e *env, n int) (*gateway, []*gateway) {
	t.Helper()
	gs := make([]*gateway, n)
	runID := testenv.RandomHex(6)
	t.Cleanup(func() { e.forceRemove(runID) })
	for i := range gs {
		gs[i] = e.startGatewayWith(t, gatewayOptions{keep: true, runID: runID, maxSessions: "200", readyTimeout: "10m"})
	}
	require.NoError(t, e.mock.SetScript(context.Background(), anthropictest.Script{Default: &anthropictest.Response{Text: "Noted, thank you."}}))
	return startBalancer(t, gs), gs
}

// TestFleetLoad: three gateways behind Caddy's own load balancer, 60
// conversations of three turns from openai-go clients, every turn to a
// random gateway: no errors, one agent per conversation (60), and every
// turn of a conversation served by its session. Times to first token are
// logged (BenchmarkFleet compares them with one gateway).
func TestFleetLoad(t *testing.T) {
	e := setup(t)
	lb, gs := startLoadFleet(t, e, 3)
	const convs, turns = 60, 3
	l := runFleetLoad(t, lb.url, convs, turns, 20)
	for i, err := range l.errs {
		require.NoError(t, err, "conversation %d", i)
	}
	for i, sids := range l.sessions {
		require.Len(t, sids, turns)
		for _, sid := range sids[1:] {
			assert.Equal(t, sids[0], sid, "conversation %d keeps its session on every gateway", i)
		}
	}
	assert.Len(t, e.sessionContainers(t, gs[0].runID), convs, "one agent per conversation")
	for _, g := range gs {
		assert.Contains(t, g.logs.String(), "session found on the backend", "every gateway served conversations others started")
	}
	t.Logf("%d conversations x %d turns through %d gateways in %s; TTFT p50: new %s, follow-up %s",
		convs, turns, len(gs), ms(l.took), ms(pct(l.turnTTFT(0), 50)), ms(pct(append(l.turnTTFT(1), l.turnTTFT(2)...), 50)))
}

// BenchmarkFleet compares one gateway and three behind the same load
// balancer on the same workload: 10 conversations x 3 turns one at a time
// (what a turn costs on a gateway that has, or has not, seen the
// conversation), and 30 x 3, 10 at a time (under load); time to first
// token of a new conversation and of a follow-up, medians and their ratio.
func BenchmarkFleet(b *testing.B) {
	e := setup(b)
	for _, w := range []struct{ convs, parallel int }{{10, 1}, {30, 10}} {
		medians := map[int][2]time.Duration{}
		for _, n := range []int{1, 3} {
			b.Run(fmt.Sprintf("parallel=%d/gateways=%d", w.parallel, n), func(b *testing.B) {
				for range b.N {
					lb, _ := startLoadFleet(b, e, n)
					l := runFleetLoad(b, lb.url, w.convs, 3, w.parallel)
					for i, err := range l.errs {
						require.NoError(b, err, "conversation %d", i)
					}
					newTTFT, follow := pct(l.turnTTFT(0), 50), pct(append(l.turnTTFT(1), l.turnTTFT(2)...), 50)
					medians[n] = [2]time.Duration{newTTFT, follow}
					b.ReportMetric(float64(newTTFT.Milliseconds()), "new-ttft-p50-ms")
					b.ReportMetric(float64(follow.Milliseconds()), "followup-ttft-p50-ms")
					b.ReportMetric(l.took.Seconds(), "total-s")
				}
			})
		}
		if one, three := medians[1], medians[3]; one[0] > 0 && three[0] > 0 {
			b.Logf("parallel %d: TTFT p50, 1 vs 3 gateways: new %s / %s (%.2fx), follow-up %s / %s (%.2fx)", w.parallel,
				ms(one[0]), ms(three[0]), float64(three[0])/float64(one[0]), ms(one[1]), ms(three[1]), float64(three[1])/float64(one[1]))
		}
	}
}
