package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/docker"
)

// BenchmarkSuite is `make bench`: the whole stack (xcaddy-built Caddy,
// Docker, the agent image with the real claude, the mock API, openai-go)
// measured in one invocation, printed as one table. Every figure is the
// median of BENCH_RUNS repeated runs (default 10) with min and max.
// Run it once: -benchtime 1x. Set BENCH_TABLE to also write the table to
// a file, BENCH_LEVELS (default "1,10,50") for the growth table, and
// BENCH_CONVERSATIONS for the sleeping conversations part (benchSleepers;
// `make bench` sets 1000; unset or 0 leaves it out). The providers'
// comparison (benchProviders) runs the same workload on each provider.
func BenchmarkSuite(b *testing.B) {
	runs := envInt("BENCH_RUNS", 10)
	levels := envInts("BENCH_LEVELS", []int{1, 10, 50})
	var t table
	for b.Loop() {
		e := setup(b)
		e.script(b, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "Stream stamped"},
			Response: anthropictest.Response{Text: strings.Repeat("x", 300), ChunkChars: 1, ChunkDelayMS: 1, StampDeltas: true},
			Times:    anthropictest.Unlimited,
		}, {
			Match:    anthropictest.Match{LastUserTextContains: "Stream fast"},
			Response: anthropictest.Response{Text: strings.Repeat("ab", 2000), ChunkChars: 2},
			Times:    anthropictest.Unlimited,
		}}, Default: &anthropictest.Response{Text: "A short answer."}})

		g := e.startGatewayWith(b, gatewayOptions{})
		cold := benchCold(b, e, g, runs, &t)
		warm := benchFollowUp(b, e, g, runs, &t)
		benchStreaming(b, g, runs, &t)
		benchGrowth(b, g, levels, &t)
		benchConversationShapes(b, e, g, runs, warm, &t)
		g.stop(b)

		w := e.startGatewayWith(b, gatewayOptions{extraApp: "warm_pool agent 1\n\t\twarm_pool_check_interval 1s"})
		benchWarm(b, w, runs, &t)
		w.stop(b)

		s := e.startGatewayWith(b, gatewayOptions{idle: "1s", extraApp: "retention 0"})
		benchWake(b, e, s, runs, cold, warm, &t)
		s.stop(b)
		benchProviders(b, e, runs, &t)
		if n := benchConversations(0); n > 0 {
			benchSleepers(b, e, n, &t)
		}
	}
	out := t.String()
	fmt.Println(out)
	if path := os.Getenv("BENCH_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCold: new conversations with no warm pool, and the steps of each
// container's start as Caddy logged them. It returns the TTFTs.
func benchCold(b *testing.B, e *env, g *gateway, runs int, t *table) []time.Duration {
	c := g.client("sk-ant-bench-cold")
	var ttfts []time.Duration
	for i := range runs {
		ttfts = append(ttfts, mustTTFT(b, c, "Hi.", conv(fmt.Sprintf("cold-%d", i))))
		g.deleteSessions(b)
	}
	t.add("new conversation TTFT, cold (no pool)", ttfts, "<= 1.5 s p50")
	steps := g.createSteps(b)
	for _, s := range []struct{ field, name string }{
		{"create_duration", "  cold start: container create"},
		{"start_duration", "  cold start: container start"},
		{"ready_duration", "  cold start: agent + claude ready"},
	} {
		t.add(s.name, steps[s.field], "")
	}
	return ttfts
}

// benchWarm: new conversations served from a warm pool of one, waiting
// for the pool to refill between runs.
func benchWarm(b *testing.B, g *gateway, runs int, t *table) {
	c := g.client("sk-ant-bench-warm")
	var ttfts []time.Duration
	for i := range runs {
		g.waitPool(b, "agent", 1)
		ttfts = append(ttfts, mustTTFT(b, c, "Hi.", conv(fmt.Sprintf("warm-%d", i))))
		g.deleteSessions(b)
	}
	st := g.pool(b)[0]
	if st.Hits != int64(runs) {
		b.Fatalf("warm runs: %d pool hits, want %d", st.Hits, runs)
	}
	t.add("new conversation TTFT, warm pool", ttfts, "<= 50 ms p50")
}

// benchFollowUp: follow-up turns through Caddy, the same turns read from
// the agent directly, and the mock API's own time to first token. It
// returns the TTFTs through Caddy.
func benchFollowUp(b *testing.B, e *env, g *gateway, runs int, t *table) []time.Duration {
	c := g.client("sk-ant-bench-follow")
	mustTTFT(b, c, "First turn.", conv("follow"))
	direct := g.agentFor(b, "follow")
	var viaCaddy, viaAgent, mock []time.Duration
	for range runs {
		viaCaddy = append(viaCaddy, mustTTFT(b, c, "Again.", conv("follow")))
		viaAgent = append(viaAgent, agentTTFT(b, direct, "Again, directly."))
		mock = append(mock, mockTTFT(b, e.mock.BaseURL))
	}
	t.add("follow-up TTFT through Caddy", viaCaddy, "")
	t.add("follow-up TTFT, agent read directly", viaAgent, "")
	t.add("mock API's own TTFT", mock, "")
	over := make([]time.Duration, len(viaCaddy))
	for i := range viaCaddy {
		over[i] = viaCaddy[i] - mock[i]
	}
	t.add("follow-up TTFT over the mock's own", over, "<= 20 ms")
	g.deleteSessions(b)
	return viaCaddy
}

// benchStreaming: each event's latency from the mock API to the client
// (the mock stamps every text delta with its send time; same clock),
// through Caddy and read from the agent directly, and the rate of an
// unpaced stream both ways.
func benchStreaming(b *testing.B, g *gateway, runs int, t *table) {
	c := g.client("sk-ant-bench-stream")
	mustTTFT(b, c, "Warm up.", conv("stream"))
	direct := g.agentFor(b, "stream")
	var p50Caddy, p99Caddy, p50Direct, p99Direct, over50, over99, rateCaddy, rateDirect, rawCaddy, rawDirect []time.Duration
	for range runs {
		lc := latencies(b, textsCaddy(b, c, "Stream stamped.", "stream"))
		ld := latencies(b, textsAgent(b, direct, "Stream stamped."))
		p50Caddy, p99Caddy = append(p50Caddy, pct(lc, 50)), append(p99Caddy, pct(lc, 99))
		p50Direct, p99Direct = append(p50Direct, pct(ld, 50)), append(p99Direct, pct(ld, 99))
		over50, over99 = append(over50, pct(lc, 50)-pct(ld, 50)), append(over99, pct(lc, 99)-pct(ld, 99))
		rateCaddy = append(rateCaddy, perEvent(textsCaddy(b, c, "Stream fast.", "stream")))
		rateDirect = append(rateDirect, perEvent(textsAgent(b, direct, "Stream fast.")))
		rawCaddy = append(rawCaddy, perEvent(rawTexts(b, g.chatRequest(b, "Stream fast.", "stream"), `"content":"`)))
		rawDirect = append(rawDirect, perEvent(rawTexts(b, agentQuery(b, direct, "Stream fast."), `"text":"`)))
	}
	t.add("event latency p50, mock to client through Caddy", p50Caddy, "")
	t.add("event latency p50, mock to agent reader", p50Direct, "")
	t.add("event latency p99, mock to client through Caddy", p99Caddy, "")
	t.add("event latency p99, mock to agent reader", p99Direct, "")
	t.add("overhead per event p50 (Caddy - direct)", over50, "")
	t.add("overhead per event p99 (Caddy - direct)", over99, "<= 1 ms")
	t.addRate("events/s through Caddy, openai-go client (unpaced)", rateCaddy)
	t.addRate("events/s, agent read directly, agentclient (unpaced)", rateDirect)
	// The rows above include each client's own parsing (openai-go spends
	// more per event than the agent client); these read both streams with
	// the same raw SSE reader, so the ratio is the gateway's alone.
	t.addRate("events/s through Caddy, same raw reader (unpaced)", rawCaddy)
	t.addRate("events/s, agent read directly, same raw reader (unpaced)", rawDirect)
	g.deleteSessions(b)
}

// benchGrowth: for 1, 10 and 50 conversations: all send a follow-up at
// once (TTFT), Caddy's memory per idle session, and each agent
// container's memory.
func benchGrowth(b *testing.B, g *gateway, levels []int, t *table) {
	g.deleteSessions(b)
	base := g.rss(b)
	c := g.client("sk-ant-bench-growth")
	have := 0
	rounds := 3
	for _, n := range levels {
		parallel(b, n-have, func(i int) { ttft(b, c, "Hi.", conv(fmt.Sprintf("grow-%d", have+i))) })
		have = n
		var ttftMedian, ttftP95 []time.Duration
		for range rounds {
			ds := make([]time.Duration, n)
			parallel(b, n, func(i int) { ds[i] = ttft(b, c, "Again.", conv(fmt.Sprintf("grow-%d", i))) })
			ttftMedian, ttftP95 = append(ttftMedian, pct(ds, 50)), append(ttftP95, pct(ds, 95))
		}
		time.Sleep(time.Second) // let the turns' buffers go
		rss := g.rss(b)
		t.add(fmt.Sprintf("%d conversations: follow-up TTFT p50, all at once", n), ttftMedian, "")
		t.add(fmt.Sprintf("%d conversations: follow-up TTFT p95, all at once", n), ttftP95, "")
		t.addBytes(fmt.Sprintf("%d conversations: Caddy RSS", n), []int64{rss}, "")
		t.addBytes(fmt.Sprintf("%d conversations: Caddy RSS per session (above idle Caddy)", n), []int64{(rss - base) / int64(n)}, "")
		var cg, procs []int64
		for _, inst := range g.instances(b) {
			st, err := inst.Client().Stats(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			procs = append(procs, st.Agent.RSSBytes+st.Claude.RSSBytes)
			if st.Cgroup != nil {
				cg = append(cg, st.Cgroup.MemoryBytes)
			}
		}
		t.addBytes(fmt.Sprintf("%d conversations: agent + claude RSS per container", n), procs, "")
		t.addBytes(fmt.Sprintf("%d conversations: container memory (cgroup) per container", n), cg, "")
	}
	g.deleteSessions(b)
}

// --- measuring helpers ---

// mustTTFT is ttft on the benchmark's goroutine: a failure stops it.
func mustTTFT(b *testing.B, c openai.Client, text string, opts ...option.RequestOption) time.Duration {
	d := ttft(b, c, text, opts...)
	if b.Failed() {
		b.FailNow()
	}
	return d
}

// agentTTFT runs a turn on the agent directly and returns the time to its
// first text delta.
func agentTTFT(b *testing.B, c *agentclient.Client, prompt string) time.Duration {
	arr := textsAgent(b, c, prompt)
	return arr[0].at.Sub(arr[0].sent)
}

// arrival is one text event: its text, when it arrived, and when the
// request that caused it was sent.
type arrival struct {
	text     string
	at, sent time.Time
}

// textsAgent runs a turn on the agent and returns its text deltas with
// their arrival times.
func textsAgent(b *testing.B, c *agentclient.Client, prompt string) []arrival {
	sent := time.Now()
	st, err := c.Query(context.Background(), prompt, "sk-ant-bench-direct")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var out []arrival
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if ev.Type == agent.EventTextDelta {
			out = append(out, arrival{text: ev.Text, at: time.Now(), sent: sent})
		}
		if ev.Type == agent.EventError {
			b.Fatalf("agent turn failed: %s", ev.Message)
		}
	}
	if len(out) < 2 {
		b.Fatal("no text from the agent")
	}
	return out
}

// textsCaddy is textsAgent through Caddy with openai-go.
func textsCaddy(b *testing.B, c openai.Client, prompt, conversation string) []arrival {
	sent := time.Now()
	s := c.Chat.Completions.NewStreaming(context.Background(), user(prompt), conv(conversation))
	var out []arrival
	for s.Next() {
		ch := s.Current()
		if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			out = append(out, arrival{text: ch.Choices[0].Delta.Content, at: time.Now(), sent: sent})
		}
	}
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	if len(out) < 2 {
		b.Fatal("no content through caddy")
	}
	return out
}

// chatRequest starts a streaming chat completion through Caddy and
// returns the response, read by nothing yet.
func (g *gateway) chatRequest(b *testing.B, prompt, conversation string) *http.Response {
	body := fmt.Sprintf(`{"model":"agent","stream":true,"messages":[{"role":"user","content":%q}]}`, prompt)
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-ant-bench-stream")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Conversation-ID", conversation)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("chat through caddy: %v (status %v)", err, resp)
	}
	return resp
}

// agentQuery starts a turn on the agent and returns its response, read by
// nothing yet.
func agentQuery(b *testing.B, c *agentclient.Client, prompt string) *http.Response {
	body, _ := json.Marshal(agent.QueryRequest{Prompt: prompt, APIKey: "sk-ant-bench-direct"})
	resp, err := c.Forward(context.Background(), http.MethodPost, "/query", nil, bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}, "Accept": {"text/event-stream"}})
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("query the agent: %v (status %v)", err, resp)
	}
	return resp
}

// rawTexts reads an SSE stream with the bare SSE reader and takes each
// event's text from the JSON string after field (no JSON decoding: the
// mock's texts are digits and spaces), so two streams of different shapes
// cost the reader the same.
func rawTexts(b *testing.B, resp *http.Response, field string) []arrival {
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var out []arrival
	for {
		data, err := agentclient.ReadData(r)
		if err != nil {
			break
		}
		_, after, ok := bytes.Cut(data, []byte(field))
		if !ok {
			continue
		}
		text, _, _ := bytes.Cut(after, []byte(`"`))
		if len(text) > 0 {
			out = append(out, arrival{text: string(text), at: time.Now()})
		}
	}
	if len(out) < 2 {
		b.Fatal("no text in the stream")
	}
	return out
}

// latencies reads the mock's send stamp from each event's text and
// returns how long each event took to arrive.
func latencies(b *testing.B, arr []arrival) []time.Duration {
	out := make([]time.Duration, 0, len(arr))
	for _, a := range arr {
		// An event may carry more than one delta if a layer merged them.
		for _, f := range strings.Fields(a.text) {
			us, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				b.Fatalf("event text %q is not send stamps", a.text)
			}
			out = append(out, a.at.Sub(time.UnixMicro(us)))
		}
	}
	return out
}

// perEvent is the mean time between events of an unpaced stream.
func perEvent(arr []arrival) time.Duration {
	return arr[len(arr)-1].at.Sub(arr[0].at) / time.Duration(len(arr)-1)
}

// mockTTFT is the mock API's own time to its first text delta, asked
// directly over HTTP as the CLI asks it.
func mockTTFT(b *testing.B, baseURL string) time.Duration {
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi."}]}`
	req, _ := http.NewRequest(http.MethodPost, baseURL+"/v1/messages", strings.NewReader(body))
	req.Header.Set("x-api-key", "sk-ant-bench-mock")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"text_delta"`) {
			d := time.Since(start)
			_, _ = io.Copy(io.Discard, resp.Body)
			return d
		}
	}
	b.Fatalf("the mock sent no text delta (status %d)", resp.StatusCode)
	return 0
}

func parallel(b *testing.B, n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); f(i) }()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// --- gateway helpers ---

// deleteSessions removes every session through the admin API.
func (g *gateway) deleteSessions(b testing.TB) {
	resp, err := http.Get(g.admin + "/agcluster/sessions")
	if err != nil {
		b.Fatal(err)
	}
	var list []struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range list {
		req, _ := http.NewRequest(http.MethodDelete, g.admin+"/agcluster/sessions/"+s.ID, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

// instances lists the gateway's agents as the Docker provider sees them.
func (g *gateway) instances(b testing.TB) []*providers.Instance {
	prov, err := docker.New(docker.Options{ExtraLabels: map[string]string{"agcluster.test.run": g.runID}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer prov.Close()
	insts, err := prov.List(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return insts
}

// agentFor is a client for the agent of one conversation.
func (g *gateway) agentFor(b testing.TB, conversation string) *agentclient.Client {
	for _, inst := range g.instances(b) {
		if inst.Conversation == conversation {
			return inst.Client()
		}
	}
	b.Fatalf("no agent for conversation %q", conversation)
	return nil
}

// rss is Caddy's resident memory.
func (g *gateway) rss(b testing.TB) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// createSteps collects the step durations Caddy logged for each agent
// container it created ("agent container created").
func (g *gateway) createSteps(b testing.TB) map[string][]time.Duration {
	out := map[string][]time.Duration{}
	for _, line := range strings.Split(g.logs.String(), "\n") {
		if !strings.Contains(line, `"agent container created"`) {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			continue
		}
		for _, k := range []string{"create_duration", "start_duration", "ready_duration"} {
			if secs, ok := fields[k].(float64); ok {
				out[k] = append(out[k], time.Duration(secs*float64(time.Second)))
			}
		}
	}
	if len(out["ready_duration"]) == 0 {
		b.Fatal("caddy logged no container creation steps")
	}
	return out
}

// --- the table ---

type row struct {
	name, median, min, max, target string
	n                              int
}

type table struct{ rows []row }

func (t *table) add(name string, ds []time.Duration, target string) {
	t.rows = append(t.rows, row{name: name, median: fmtDur(pct(ds, 50)), min: fmtDur(slices.Min(ds)), max: fmtDur(slices.Max(ds)), n: len(ds), target: target})
}

func (t *table) addRate(name string, perEvent []time.Duration) {
	rate := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(time.Second)/float64(d)) }
	// A shorter time per event is a higher rate: min and max swap.
	t.rows = append(t.rows, row{name: name, median: rate(pct(perEvent, 50)), min: rate(slices.Max(perEvent)), max: rate(slices.Min(perEvent)), n: len(perEvent)})
}

func (t *table) addBytes(name string, vs []int64, target string) {
	if len(vs) == 0 {
		return
	}
	s := slices.Sorted(slices.Values(vs))
	t.rows = append(t.rows, row{name: name, median: fmtBytes(s[len(s)/2]), min: fmtBytes(s[0]), max: fmtBytes(s[len(s)-1]), n: len(s), target: target})
}

func (t *table) String() string {
	var sb strings.Builder
	sb.WriteString("| figure | median | min | max | runs | target |\n|---|---:|---:|---:|---:|---|\n")
	for _, r := range t.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %d | %s |\n", r.name, r.median, r.min, r.max, r.n, r.target)
	}
	return sb.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
}

func fmtBytes(n int64) string {
	if n >= 1<<20 || n <= -1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	if n < 1<<10 && n > -1<<10 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	i := (p*len(s) + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envInts(name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return def
		}
		out = append(out, n)
	}
	return out
}
