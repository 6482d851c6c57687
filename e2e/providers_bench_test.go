package e2e

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/flyemu"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// providerTTFTs are one provider's times to first token over a
// conversation's life: its first turn (a new agent, no pool), a follow-up,
// and a message that wakes it from sleep.
type providerTTFTs struct {
	cold, follow, wake []time.Duration
}

// benchProviderTTFTs runs runs conversations on g, each: a first turn, a
// follow-up, asleep (idle_timeout), a turn that wakes it and must see the
// first; then the conversation is deleted. done runs after each deletion.
func benchProviderTTFTs(b testing.TB, e *env, g *gateway, runs int, done func()) providerTTFTs {
	c := g.client("sk-ant-bench-providers")
	var out providerTTFTs
	for i := range runs {
		id := fmt.Sprintf("provider-%d", i)
		first := fmt.Sprintf("Provider run %d: the code word is %s.", i, testenv.RandomHex(4))
		cold, err := turn(c, first, id)
		if err != nil {
			b.Fatal(err)
		}
		follow, err := turn(c, "Again.", id)
		if err != nil {
			b.Fatal(err)
		}
		g.waitAsleep(b, e, []string{cold.session}, time.Minute)
		ask := fmt.Sprintf("Provider run %d: which code word?", i)
		woke, err := turn(c, ask, id)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.contextIntact(ask, first); err != nil {
			b.Fatalf("run %d: %v", i, err)
		}
		out.cold = append(out.cold, cold.ttft)
		out.follow = append(out.follow, follow.ttft)
		out.wake = append(out.wake, woke.ttft)
		g.deleteSessions(b)
		if done != nil {
			done()
		}
	}
	return out
}

// add adds p's rows under label, with ratios to base's when given.
func (p providerTTFTs) add(t *table, label string, base *providerTTFTs) {
	t.add(label+": new conversation TTFT, cold", p.cold, "")
	t.add(label+": follow-up TTFT", p.follow, "")
	t.add(label+": wake-to-first-token", p.wake, "")
	if base == nil {
		return
	}
	t.addRatio(label+": new conversation TTFT / Docker's", p.cold, base.cold)
	t.addRatio(label+": follow-up TTFT / Docker's", p.follow, base.follow)
	t.addRatio(label+": wake-to-first-token / Docker's", p.wake, base.wake)
}

// benchProviders compares the providers on one workload
// (benchProviderTTFTs), Docker first; counts the Machines API calls a
// conversation costs on Fly (the emulator, with Fly's rate limits on);
// starts 30 conversations at once on Docker and on the local Kubernetes
// cluster; times the preparation of the Vercel agent snapshot; and runs
// Cloudflare's Worker under wrangler dev.
func benchProviders(b *testing.B, e *env, runs int, t *table) {
	const idle = "2s" // long enough for the follow-up, short for the bench
	sleepy := gatewayOptions{idle: idle, extraApp: "retention 0"}
	g := e.startGatewayWith(b, sleepy)
	docker := benchProviderTTFTs(b, e, g, runs, nil)
	dockerBurst, dockerWall := benchBurst(b, g, burstSize)
	g.stop(b)
	docker.add(t, "Docker", nil)

	benchFly(b, e, runs, sleepy, &docker, t)

	k := prepareKube(b, e)
	kg := k.gateway(b, "pod_ip", sleepy)
	kube := benchProviderTTFTs(b, e, kg, runs, nil)
	kubeBurst, kubeWall := benchBurst(b, kg, burstSize)
	kg.stop(b)
	kube.add(t, "Kubernetes (local cluster, pod_ip)", &docker)
	t.add(fmt.Sprintf("Docker: %d new conversations at once: TTFT", burstSize), dockerBurst, "")
	t.add(fmt.Sprintf("Docker: %d new conversations at once: all answered", burstSize), []time.Duration{dockerWall}, "")
	t.add(fmt.Sprintf("Kubernetes: %d new conversations at once: TTFT", burstSize), kubeBurst, "")
	t.add(fmt.Sprintf("Kubernetes: %d new conversations at once: all answered", burstSize), []time.Duration{kubeWall}, "")
	t.addRatio(fmt.Sprintf("Kubernetes / Docker, %d at once, TTFT", burstSize), kubeBurst, dockerBurst)

	v := startVercelEmulator(b, e)
	vg := v.gateway(b, vercelOptions{}, sleepy)
	vercel := benchProviderTTFTs(b, e, vg, runs, nil)
	vg.stop(b)
	vercel.add(t, "Vercel (emulator)", &docker)
	t.add("Vercel (emulator): preparing the agent snapshot (once per gateway generation)",
		vg.logDurations(b, "vercel agent snapshot ready", "prepare_duration", nil), "")

	benchCloudflare(b, e, runs, sleepy, &docker, t)
}

// benchCloudflare runs the workload on Cloudflare Containers: the Worker
// under wrangler dev (workerd, Durable Objects, R2 on disk), its containers
// on the same engine; every agent request goes through the Worker, a sleep
// saves the disk to R2 and removes the container, a wake starts a new one
// and restores it.
func benchCloudflare(b *testing.B, e *env, runs int, o gatewayOptions, docker *providerTTFTs, t *table) {
	c := prepareCloudflare(b, e)
	cg := c.gateway(b, cfOptions{}, o)
	cf := benchProviderTTFTs(b, e, cg, runs, func() { c.waitNoContainers(b) })
	cg.stop(b)
	cf.add(t, "Cloudflare (wrangler dev)", docker)
}

// burstSize is how many conversations benchBurst starts at once.
const burstSize = 30

// benchBurst starts n new conversations at once on g (the gateway's own
// cap on concurrent creations applies) and returns each one's time to
// first token and the time until all had answered; then deletes them.
func benchBurst(b testing.TB, g *gateway, n int) ([]time.Duration, time.Duration) {
	c := g.client("sk-ant-bench-burst")
	ttfts := make([]time.Duration, n)
	errs := make([]error, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var res turnResult
			res, errs[i] = turn(c, "Hi.", fmt.Sprintf("burst-%d", i))
			ttfts[i] = res.ttft
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	g.deleteSessions(b)
	return ttfts, wall
}

// benchFly runs the workload on Fly (the emulator) and counts the Machines
// API calls per conversation.
func benchFly(b *testing.B, e *env, runs int, o gatewayOptions, docker *providerTTFTs, t *table) {
	f := &flyEnv{env: e, emu: startFlyEmulator(b, e)}
	fg := f.gateway(b, flyOptions{}, o)
	f.emu.ResetCalls()
	var perConversation, polls []int64
	var pollTime time.Duration
	began := time.Now()
	byRoute := map[string]int{}
	fly := benchProviderTTFTs(b, e, fg, runs, func() {
		f.waitNoMachines(b)
		calls := f.emu.Calls()
		elapsed := time.Since(began)
		f.emu.ResetCalls()
		began = time.Now()
		n := 0
		for route, k := range calls {
			if route == flyemu.RouteList {
				polls = append(polls, int64(k))
				pollTime += elapsed
				continue
			}
			byRoute[route] += k
			n += k
		}
		perConversation = append(perConversation, int64(n))
	})
	fg.stop(b)
	fly.add(t, "Fly (emulator)", docker)
	t.addCount("Fly (emulator): Machines API calls per conversation (create, 3 turns, sleep, wake, delete; event polls apart): "+
		routeMix(byRoute, runs), perConversation)
	var sum int64
	for _, p := range polls {
		sum += p
	}
	t.addCount("Fly (emulator): event polls per minute, whatever the number of conversations (poll_interval 500ms)",
		[]int64{int64(float64(sum) / pollTime.Minutes())})
}

// routeMix formats calls per route, per conversation, most first.
func routeMix(byRoute map[string]int, runs int) string {
	routes := slices.SortedFunc(maps.Keys(byRoute), func(a, b string) int { return byRoute[b] - byRoute[a] })
	parts := make([]string, len(routes))
	for i, r := range routes {
		parts[i] = fmt.Sprintf("%s %.1f", r, float64(byRoute[r])/float64(runs))
	}
	return strings.Join(parts, ", ")
}

// BenchmarkProviders is the providers' comparison alone (it is also part
// of BenchmarkSuite): go test -run '^$' -bench '^BenchmarkProviders$'
// -benchtime 1x ./e2e/
func BenchmarkProviders(b *testing.B) {
	runs := envInt("BENCH_RUNS", 10)
	var t table
	for b.Loop() {
		e := setup(b)
		e.script(b, anthropictest.Script{Default: &anthropictest.Response{Text: "A short answer."}})
		benchProviders(b, e, runs, &t)
	}
	fmt.Println(t.String())
}
