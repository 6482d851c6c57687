package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers/docker"
)

// BenchmarkSleepingConversations is the suite's many-conversations part
// on its own: BENCH_CONVERSATIONS conversations (default 20, a quick
// check; `make bench` runs 1000 in the suite) created through Caddy, put
// to sleep, 50 of them at random woken. It prints its own table (and
// writes it to BENCH_TABLE when set).
func BenchmarkSleepingConversations(b *testing.B) {
	n := benchConversations(20)
	if n == 0 {
		b.Skip("BENCH_CONVERSATIONS=0")
	}
	var t table
	for b.Loop() {
		e := setup(b)
		benchSleepers(b, e, n, &t)
	}
	out := t.String()
	fmt.Println(out)
	if path := os.Getenv("BENCH_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// benchConversations is BENCH_CONVERSATIONS: how many conversations
// benchSleepers creates (def when unset; 0 leaves it out).
func benchConversations(def int) int {
	if strings.TrimSpace(os.Getenv("BENCH_CONVERSATIONS")) == "0" {
		return 0
	}
	return envInt("BENCH_CONVERSATIONS", def)
}

// benchWake: a conversation is put to sleep (its container stopped), then
// a message wakes it; the time from sending it to the first content, and
// its steps as Caddy logged them (the provider's container start and
// agent + CLI ready with --resume; the session layer's whole wake; the
// rest is the turn), next to the same run's cold and warm figures. Each
// run is a new conversation; the woken turn must see the first one.
func benchWake(b *testing.B, e *env, g *gateway, runs int, cold, warm []time.Duration, t *table) {
	c := g.client("sk-ant-bench-wake")
	_ = e.mock.Reset(context.Background()) // keeps the request log short
	var ttfts []time.Duration
	sessions := make([]string, runs)
	for i := range runs {
		id := fmt.Sprintf("wake-%d", i)
		first := fmt.Sprintf("Wake run %d: the code word is %s.", i, testenv.RandomHex(4))
		res, err := turn(c, first, id)
		if err != nil {
			b.Fatal(err)
		}
		sessions[i] = res.session
		g.waitAsleep(b, e, []string{res.session}, time.Minute)
		ask := fmt.Sprintf("Wake run %d: which code word?", i)
		woke, err := turn(c, ask, id)
		if err != nil {
			b.Fatal(err)
		}
		if woke.session != res.session {
			b.Fatalf("run %d: woke as session %s, not %s", i, woke.session, res.session)
		}
		if err := e.contextIntact(ask, first); err != nil {
			b.Fatalf("run %d: %v", i, err)
		}
		ttfts = append(ttfts, woke.ttft)
		g.deleteSessions(b)
	}
	sessionWake := g.logDurations(b, "session woke", "wake_duration", sessions)
	start := g.logDurations(b, "agent container awake", "start_duration", sessions)
	ready := g.logDurations(b, "agent container awake", "ready_duration", sessions)
	if len(sessionWake) != runs || len(ready) != runs {
		b.Fatalf("caddy logged %d session wakes and %d container wakes for %d runs", len(sessionWake), len(ready), runs)
	}
	after := make([]time.Duration, runs)
	for i := range runs {
		after[i] = ttfts[i] - sessionWake[i]
	}
	t.add("wake-to-first-token (conversation asleep)", ttfts, "<= 1.0 s p50")
	t.add("  wake: container start", start, "")
	t.add("  wake: agent + claude ready (--resume)", ready, "")
	t.add("  wake: whole wake (session layer)", sessionWake, "")
	t.add("  wake: first token after the wake", after, "")
	t.addRatio("wake-to-first-token / new conversation TTFT, cold", ttfts, cold)
	t.addRatio("wake-to-first-token / follow-up TTFT through Caddy", ttfts, warm)
}

// sleeper is one conversation of benchSleepers.
type sleeper struct {
	id, session  string
	first, token string // its first message, with its unique token
	file, body   string // its unique file
	ttft         time.Duration
	err          error
}

// benchSleepers: n conversations created through Caddy (one turn each,
// BENCH_CREATE_CONCURRENCY at a time, default 4: the gateway's own cap on
// creations), each given a unique file right after its turn, all put to
// sleep (idle_timeout 2s); then Caddy's memory, the agents' (running
// containers; none), the disk per sleeping conversation (its two volumes
// and its stopped container's layer, as `docker system df -v` counts
// them); then 50 chosen at random woken one after another (each asleep
// again before the next) with a turn that must see the conversation's
// first message, and their file read back. Caddy then shuts down with destroy and nothing may be left.
func benchSleepers(b *testing.B, e *env, n int, t *table) {
	conc := envInt("BENCH_CREATE_CONCURRENCY", 4)
	e.script(b, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
	g := e.startGatewayWith(b, gatewayOptions{idle: "2s", extraApp: "retention 0"})
	time.Sleep(time.Second)
	base := g.rss(b)
	const key = "sk-ant-bench-many"
	c := g.client(key)
	convs := make([]sleeper, n)
	for i := range convs {
		token := testenv.RandomHex(8)
		convs[i] = sleeper{
			id: fmt.Sprintf("many-%05d", i), token: token,
			first: fmt.Sprintf("Conversation %d: remember the token %s.", i, token),
			file:  fmt.Sprintf("bench-%05d.txt", i), body: fmt.Sprintf("file of conversation %d: %s\n", i, testenv.RandomHex(16)),
		}
	}

	// While they are made: the peak of running agents, and the mock's
	// request log kept short.
	stop := make(chan struct{})
	var peak atomic.Int64
	var done atomic.Int64
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if running, err := e.runningContainers(g.runID); err == nil && int64(len(running)) > peak.Load() {
				peak.Store(int64(len(running)))
			}
			if time.Since(last) >= 30*time.Second {
				last = time.Now()
				_ = e.mock.Reset(context.Background())
				fmt.Fprintf(os.Stderr, "bench: %d/%d conversations made, peak %d agents running\n", done.Load(), n, peak.Load())
			}
		}
	}()

	began := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				cv := &convs[i]
				res, err := turn(c, cv.first, cv.id)
				if err == nil {
					cv.session, cv.ttft = res.session, res.ttft
					err = g.putFile(key, cv.session, cv.file, cv.body)
				}
				cv.err = err
				done.Add(1)
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	made := time.Since(began)
	var ok []int
	var ttfts []time.Duration
	var sessions []string
	for i, cv := range convs {
		if cv.err != nil {
			b.Errorf("conversation %s: %v", cv.id, cv.err)
			continue
		}
		ok = append(ok, i)
		ttfts = append(ttfts, cv.ttft)
		sessions = append(sessions, cv.session)
	}
	if len(ok) == 0 {
		b.FailNow()
	}
	g.waitAsleep(b, e, sessions, 10*time.Minute)
	asleep := time.Since(began)
	close(stop)
	<-monitorDone
	fmt.Fprintf(os.Stderr, "bench: %d conversations made in %s, all asleep after %s; %d woken meanwhile (a file call after the idle timeout)\n",
		len(ok), made.Round(time.Second), asleep.Round(time.Second), len(g.logEntries("session woke", "", "")))

	label := fmt.Sprintf("%d conversations", n)
	t.add(label+": create (one turn + a file each) and put all to sleep, total", []time.Duration{asleep}, "")
	t.add(label+": first turn TTFT while creating", ttfts, "")
	t.addCount(label+": running agents at most while creating", []int64{peak.Load()})
	t.add(label+":   sleep: container stop (graceful)", g.logDurations(b, "agent container asleep", "stop_duration", nil), "")

	time.Sleep(2 * time.Second) // let the turns' buffers go
	rss := g.rss(b)
	t.addBytes(label+" asleep: Caddy RSS", []int64{rss}, "")
	t.addBytes(label+" asleep: Caddy RSS per sleeping conversation (above idle Caddy)", []int64{(rss - base) / int64(len(ok))}, "")
	running, err := e.runningContainers(g.runID)
	if err != nil {
		b.Fatal(err)
	}
	var live int64
	for _, rc := range running {
		live += e.containerMemory(b, rc.ID)
	}
	t.addCount(label+" asleep: agent containers running", []int64{int64(len(running))})
	t.addBytes(label+" asleep: live agent memory (all running containers)", []int64{live}, "~0")
	ws, st, layer, total := e.diskPerConversation(b, g.runID)
	t.addBytes(label+" asleep: disk per conversation: workspace volume", ws, "")
	t.addBytes(label+" asleep: disk per conversation: state volume (/state)", st, "")
	t.addBytes(label+" asleep: disk per conversation: stopped container's layer", layer, "")
	t.addBytes(label+" asleep: disk per conversation: total", total, "")
	if blocks, err := e.blocksPerConversation(g.runID); err != nil {
		fmt.Fprintf(os.Stderr, "bench: no on-disk sizes (%v)\n", err)
	} else {
		t.addBytes(label+" asleep: disk per conversation: on disk (du: volumes, container dir, layers)", blocks, "")
		var sum int64
		for _, v := range blocks {
			sum += v
		}
		t.addBytes(label+" asleep: disk, all conversations (du)", []int64{sum}, "")
	}

	// Wake 50 at random, one after another.
	pick := slices.Clone(ok)
	rand.Shuffle(len(pick), func(i, j int) { pick[i], pick[j] = pick[j], pick[i] })
	pick = pick[:min(50, len(pick))]
	steps := make([]anthropictest.Step, 0, len(pick))
	for _, i := range pick {
		steps = append(steps, anthropictest.Step{
			Match:    anthropictest.Match{LastUserTextContains: "Wake check " + convs[i].id + ":", AnyTextContains: convs[i].first},
			Response: anthropictest.Response{Text: "Intact: " + convs[i].token},
		})
	}
	e.script(b, anthropictest.Script{Steps: steps, Default: &anthropictest.Response{Text: "Context lost."}})
	var wakeTTFT []time.Duration
	var woken []string
	for _, i := range pick {
		cv := convs[i]
		ask := fmt.Sprintf("Wake check %s: which token?", cv.id)
		res, err := turn(c, ask, cv.id)
		if err != nil {
			b.Fatalf("wake %s: %v", cv.id, err)
		}
		if res.session != cv.session {
			b.Errorf("wake %s: session %s, not %s", cv.id, res.session, cv.session)
		}
		if want := "Intact: " + cv.token; res.content != want {
			b.Errorf("wake %s: answer %q, want %q: the woken agent lost its context", cv.id, res.content, want)
		}
		if err := e.contextIntact(ask, cv.first); err != nil {
			b.Errorf("wake %s: %v", cv.id, err)
		}
		if got, err := g.getFile(key, cv.session, cv.file); err != nil || got != cv.body {
			b.Errorf("wake %s: file %s = %q, %v; want %q", cv.id, cv.file, got, err, cv.body)
		}
		wakeTTFT = append(wakeTTFT, res.ttft)
		woken = append(woken, cv.session)
		// Asleep again before the next wake, so no container stop runs
		// beside it.
		g.waitAsleep(b, e, []string{cv.session}, time.Minute)
	}
	sessionWake := g.logDurations(b, "session woke", "wake_duration", woken)
	start := g.logDurations(b, "agent container awake", "start_duration", woken)
	ready := g.logDurations(b, "agent container awake", "ready_duration", woken)
	t.add(fmt.Sprintf("%s asleep: wake-to-first-token p50 (%d at random)", label, len(pick)), wakeTTFT, "")
	t.add(fmt.Sprintf("%s asleep: wake-to-first-token p95 (%d at random)", label, len(pick)), []time.Duration{pct(wakeTTFT, 95)}, "")
	t.add(fmt.Sprintf("%s asleep:   wake (session layer) p50", label), sessionWake, "")
	if len(sessionWake) > 0 {
		t.add(fmt.Sprintf("%s asleep:   wake (session layer) p95", label), []time.Duration{pct(sessionWake, 95)}, "")
	}
	if len(ready) > 0 {
		t.add(fmt.Sprintf("%s asleep:   wake: container start", label), start, "")
		t.add(fmt.Sprintf("%s asleep:   wake: agent + claude ready (--resume)", label), ready, "")
	}

	// Shutdown with destroy removes every conversation, asleep or not.
	took := g.stopWithin(b, 15*time.Minute)
	t.add(label+": Caddy shutdown (destroy all)", []time.Duration{took}, "")
	if removed := len(g.logEntries("session removed", "reason", "shutdown")); removed != len(ok) {
		b.Errorf("caddy's shutdown removed %d sessions, want %d", removed, len(ok))
	}
	if left := e.containers(b, g.runID); len(left) > 0 {
		b.Errorf("%d containers left after shutdown destroy", len(left))
	}
	if left := e.volumes(b, g.runID); len(left) > 0 {
		b.Errorf("%d volumes left after shutdown destroy", len(left))
	}
}

// --- helpers ---

// turnResult is one streamed turn through Caddy.
type turnResult struct {
	ttft             time.Duration
	content, session string
}

// turn streams one completion in a conversation: its time to first
// content, its whole text and the session id the gateway answered with.
// It may run on any goroutine.
func turn(c openai.Client, text, conversation string) (turnResult, error) {
	return streamTurnOf(c, user(text), conversation)
}

// streamTurnOf streams params in a conversation; see turn.
func streamTurnOf(c openai.Client, params openai.ChatCompletionNewParams, conversation string) (turnResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var resp *http.Response
	start := time.Now()
	s := c.Chat.Completions.NewStreaming(ctx, params, conv(conversation), option.WithResponseInto(&resp))
	var out turnResult
	var sb strings.Builder
	for s.Next() {
		ch := s.Current()
		if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			if out.ttft == 0 {
				out.ttft = time.Since(start)
			}
			sb.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if err := s.Err(); err != nil {
		return out, fmt.Errorf("turn in %s: %w", conversation, err)
	}
	out.content = sb.String()
	if out.ttft == 0 {
		return out, fmt.Errorf("turn in %s: no content", conversation)
	}
	if resp != nil {
		out.session = resp.Header.Get("X-Session-ID")
	}
	if out.session == "" {
		return out, fmt.Errorf("turn in %s: no X-Session-ID", conversation)
	}
	return out, nil
}

// contextIntact checks that the mock's request for the turn ask carried
// first: the woken CLI resumed its session.
func (e *env) contextIntact(ask, first string) error {
	reqs, err := e.mock.Requests(context.Background())
	if err != nil {
		return err
	}
	for _, r := range slices.Backward(reqs) {
		if r.LastUserText() == ask {
			if !strings.Contains(r.AllText(), first) {
				return fmt.Errorf("the request for %q does not carry the first message %q", ask, first)
			}
			return nil
		}
	}
	return fmt.Errorf("the mock got no request for %q", ask)
}

// filesRequest is a management API file call.
func (g *gateway) filesRequest(method, key, session, name string, body io.Reader) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, g.url+"/api/agents/sessions/"+session+"/files/"+name, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "text/plain")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

func (g *gateway) putFile(key, session, name, body string) error {
	status, data, err := g.filesRequest(http.MethodPut, key, session, name, strings.NewReader(body))
	if err == nil && status != http.StatusCreated && status != http.StatusOK && status != http.StatusNoContent {
		err = fmt.Errorf("PUT file %s of session %s: %d %s", name, session, status, data)
	}
	return err
}

func (g *gateway) getFile(key, session, name string) (string, error) {
	status, data, err := g.filesRequest(http.MethodGet, key, session, name, nil)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("GET file %s of session %s: %d %s", name, session, status, data)
	}
	return string(data), err
}

// sessionStatuses is each session's status in the admin API.
func (g *gateway) sessionStatuses() (map[string]string, error) {
	resp, err := http.Get(g.admin + "/agcluster/sessions")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list []struct{ ID, Status string }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list))
	for _, s := range list {
		out[s.ID] = s.Status
	}
	return out, nil
}

// waitAsleep waits until every one of sessions sleeps in the admin API
// and none of the gateway's containers runs.
func (g *gateway) waitAsleep(b testing.TB, e *env, sessions []string, within time.Duration) {
	deadline := time.Now().Add(within)
	every := 50 * time.Millisecond
	if len(sessions) > 10 {
		every = time.Second
	}
	for {
		st, err := g.sessionStatuses()
		if err != nil {
			b.Fatal(err)
		}
		awake := 0
		for _, id := range sessions {
			if st[id] != "sleeping" {
				awake++
			}
		}
		running, err := e.runningContainers(g.runID)
		if err != nil {
			b.Fatal(err)
		}
		if awake == 0 && len(running) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("after %s: %d sessions not asleep, %d containers running", within, awake, len(running))
		}
		time.Sleep(every)
	}
}

// runningContainers lists the run's running containers.
func (e *env) runningContainers(runID string) ([]container.Summary, error) {
	f := e.runFilter(runID)
	f.Add("status", "running")
	return e.docker.ContainerList(context.Background(), container.ListOptions{Filters: f})
}

// containerMemory is a running container's memory use (cgroup).
func (e *env) containerMemory(b testing.TB, id string) int64 {
	st, err := e.docker.ContainerStatsOneShot(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Body.Close()
	var v container.StatsResponse
	if err := json.NewDecoder(st.Body).Decode(&v); err != nil {
		b.Fatal(err)
	}
	return int64(v.MemoryStats.Usage)
}

// diskPerConversation is, for each of the run's agent containers, the
// size of its workspace volume, its state volume, its own writable layer
// and their total, as the engine's disk usage (`docker system df -v`)
// reports them.
func (e *env) diskPerConversation(b testing.TB, runID string) (ws, st, layer, total []int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	du, err := e.docker.DiskUsage(ctx, types.DiskUsageOptions{Types: []types.DiskUsageObject{types.ContainerObject, types.VolumeObject}})
	if err != nil {
		b.Fatal(err)
	}
	vols := map[string]int64{}
	for _, v := range du.Volumes {
		if v.UsageData != nil {
			vols[v.Name] = v.UsageData.Size
		}
	}
	for _, c := range du.Containers {
		if c.Labels["agcluster.test.run"] != runID {
			continue
		}
		w, s := vols[c.Labels[docker.LabelVolume]], vols[c.Labels[docker.LabelStateVolume]]
		ws, st, layer = append(ws, w), append(st, s), append(layer, c.SizeRw)
		total = append(total, w+s+c.SizeRw)
	}
	if len(total) == 0 {
		b.Fatal("the engine reported no disk usage for the run's containers")
	}
	return ws, st, layer, total
}

// blocksPerConversation is, for each of the run's agent containers, the
// disk space (allocated blocks, as du counts them) of its two volumes, its
// directory under the engine's root (configuration, logs) and its two
// overlay layers (its own and its init layer). It needs to read the
// engine's root directory (root on the engine's machine).
func (e *env) blocksPerConversation(runID string) ([]int64, error) {
	ctx := context.Background()
	list, err := e.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: e.runFilter(runID)})
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, c := range list {
		info, err := e.docker.ContainerInspect(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		var dirs []string
		for _, m := range info.Mounts {
			if m.Type == "volume" {
				dirs = append(dirs, filepath.Dir(m.Source)) // the volume's directory, _data and all
			}
		}
		dirs = append(dirs, filepath.Dir(info.LogPath)) // /var/lib/docker/containers/<id>
		if info.GraphDriver.Name == "overlay2" {
			if upper := info.GraphDriver.Data["UpperDir"]; upper != "" {
				dirs = append(dirs, filepath.Dir(upper))
			}
			if lower, _, _ := strings.Cut(info.GraphDriver.Data["LowerDir"], ":"); strings.HasSuffix(lower, "-init/diff") {
				dirs = append(dirs, filepath.Dir(lower))
			}
		}
		var total int64
		for _, d := range dirs {
			n, err := duBlocks(d)
			if err != nil {
				return nil, err
			}
			total += n
		}
		out = append(out, total)
	}
	return out, nil
}

// duBlocks is the space allocated to the files and directories under dir.
func duBlocks(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}

// logDurations is the duration field of each of Caddy's log entries with
// message msg, in order; only those of sessions when it is not nil.
func (g *gateway) logDurations(b testing.TB, msg, field string, sessions []string) []time.Duration {
	var out []time.Duration
	for _, fields := range g.logEntries(msg, "", "") {
		if sid, _ := fields["session_id"].(string); sessions != nil && !slices.Contains(sessions, sid) {
			continue
		}
		secs, ok := fields[field].(float64)
		if !ok {
			b.Fatalf("caddy's %q log has no %s: %v", msg, field, fields)
		}
		out = append(out, time.Duration(secs*float64(time.Second)))
	}
	return out
}

// logEntries are Caddy's log entries with message msg (and, when key is
// set, key equal to value).
func (g *gateway) logEntries(msg, key, value string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(g.logs.String(), "\n") {
		if !strings.Contains(line, `"`+msg+`"`) {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil || fields["msg"] != msg {
			continue
		}
		if key != "" && fields[key] != value {
			continue
		}
		out = append(out, fields)
	}
	return out
}

// stopWithin stops Caddy (SIGTERM) and returns how long it took to exit,
// waiting up to within.
func (g *gateway) stopWithin(b testing.TB, within time.Duration) time.Duration {
	if g.stopped {
		b.Fatal("caddy already stopped")
	}
	g.stopped = true
	start := time.Now()
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- g.cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			b.Error(err)
		}
		return time.Since(start)
	case <-time.After(within):
		_ = g.cmd.Process.Kill()
		<-done
		b.Errorf("caddy did not stop within %s", within)
		return time.Since(start)
	}
}

// addRatio adds the ratio of the medians of a and b.
func (t *table) addRatio(name string, a, b []time.Duration) {
	if len(a) == 0 || len(b) == 0 {
		return
	}
	t.rows = append(t.rows, row{name: name, median: fmt.Sprintf("%.2fx", float64(pct(a, 50))/float64(pct(b, 50))), min: "-", max: "-", n: len(a)})
}

// addCount adds plain numbers.
func (t *table) addCount(name string, vs []int64) {
	s := slices.Sorted(slices.Values(vs))
	f := func(v int64) string { return fmt.Sprint(v) }
	t.rows = append(t.rows, row{name: name, median: f(s[len(s)/2]), min: f(s[0]), max: f(s[len(s)-1]), n: len(s)})
}
