package module

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agcluster/caddy-agcluster/session"
	"github.com/agcluster/caddy-agcluster/usage"
)

// metrics are the module's Prometheus collectors. They are package-level
// so counts survive config reloads, and registered into each new config's
// registry. Labels never carry a session, container or key.
var metrics = struct {
	once          sync.Once
	turns         *prometheus.CounterVec
	turnSeconds   *prometheus.HistogramVec
	tasks         *prometheus.CounterVec
	sessions      sessionsCollector
	wakes         *prometheus.CounterVec
	wakeSeconds   *prometheus.HistogramVec
	poolReady     prometheus.GaugeFunc
	poolHits      prometheus.CounterFunc
	poolMisses    prometheus.CounterFunc
	requestErrors *prometheus.CounterVec
	tokens        *prometheus.CounterVec
	costUSD       *prometheus.CounterVec
	quotaRefusals *prometheus.CounterVec
}{}

func initMetrics() {
	metrics.once.Do(func() {
		const ns, sub = "caddy", "agcluster"
		metrics.turns = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "turns_total",
			Help: "Agent turns served, by outcome (ok, error, client_gone), whether they started a session, what they continued (next, branch, tool_results) and provider.",
		}, []string{"outcome", "new_session", "continues", "provider"})
		metrics.turnSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "turn_duration_seconds",
			Help:    "Wall time of agent turns, including session creation for new sessions, by provider.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"new_session", "provider"})
		metrics.tasks = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "task_requests_total",
			Help: "Background task requests answered with a one-shot API call, by outcome.",
		}, []string{"outcome"})
		metrics.requestErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "request_errors_total",
			Help: "Requests refused before a turn ran, by HTTP status.",
		}, []string{"status"})
		metrics.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tokens_total",
			Help: "Tokens used by agent turns, by configuration (\"custom\" for inline ones), provider and kind (input, output, cache_read, cache_write).",
		}, []string{"config", "provider", "kind"})
		metrics.costUSD = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "cost_usd_total",
			Help: "Cost in USD of agent turns as the Claude Code CLI estimates it, by configuration and provider.",
		}, []string{"config", "provider"})
		metrics.quotaRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "quota_refusals_total",
			Help: "Requests refused with 429 insufficient_quota, by the limit reached (tokens_per_day, cost_per_day, agent_hours_per_day, conversations).",
		}, []string{"limit"})
		metrics.sessions = sessionsCollector{desc: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "sessions"),
			"Conversations by provider and state: live (agent awake) or sleeping (agent stopped, workspace kept).",
			[]string{"provider", "state"}, nil)}
		metrics.wakes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "wakes_total",
			Help: "Sleeping conversations woken, by provider and outcome (ok; gone: the agent and its workspace were lost, the conversation started over; error).",
		}, []string{"provider", "outcome"})
		metrics.wakeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "wake_duration_seconds",
			Help:    "Time to wake a sleeping conversation's agent until it is ready, by provider.",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60},
		}, []string{"provider"})
		metrics.poolReady = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "warm_pool_ready",
			Help: "Ready agents in the warm pool, over all configurations.",
		}, func() float64 { return poolSum(func(s session.PoolStats) int64 { return int64(s.Ready) }) })
		metrics.poolHits = prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "warm_pool_hits_total",
			Help: "New sessions served a ready agent from the warm pool.",
		}, func() float64 { return poolSum(func(s session.PoolStats) int64 { return s.Hits }) })
		metrics.poolMisses = prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "warm_pool_misses_total",
			Help: "New sessions of a pooled configuration that found the pool empty and waited for a container.",
		}, func() float64 { return poolSum(func(s session.PoolStats) int64 { return s.Misses }) })
	})
}

// poolSum adds up one figure of the warm pool's entries.
func poolSum(f func(session.PoolStats) int64) float64 {
	var n int64
	if st := currentState(); st != nil {
		for _, s := range st.pool.Stats() {
			n += f(s)
		}
	}
	return float64(n)
}

// registerMetrics adds the collectors to a config's registry.
func registerMetrics(reg *prometheus.Registry) error {
	initMetrics()
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metrics.turns, metrics.turnSeconds, metrics.tasks, metrics.requestErrors, metrics.sessions,
		metrics.wakes, metrics.wakeSeconds, metrics.tokens, metrics.costUSD, metrics.quotaRefusals,
		metrics.poolReady, metrics.poolHits, metrics.poolMisses} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// sessionsCollector reports the conversations per provider and state at
// scrape time.
type sessionsCollector struct{ desc *prometheus.Desc }

func (c sessionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c sessionsCollector) Collect(ch chan<- prometheus.Metric) {
	st := currentState()
	if st == nil {
		return
	}
	for name, n := range st.manager.Counts() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n.Live), name, "live")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n.Sleeping), name, "sleeping")
	}
}

// observeWake records a wake (session.Options.OnWake).
func observeWake(provider string, took time.Duration, outcome string) {
	initMetrics()
	metrics.wakes.WithLabelValues(provider, outcome).Inc()
	if outcome == session.WakeOK {
		metrics.wakeSeconds.WithLabelValues(provider).Observe(took.Seconds())
	}
}

// observeUsage counts a turn's tokens and cost.
func observeUsage(config, provider string, t usage.Totals) {
	initMetrics()
	for kind, n := range map[string]int64{"input": t.InputTokens, "output": t.OutputTokens,
		"cache_read": t.CacheReadTokens, "cache_write": t.CacheWriteTokens} {
		metrics.tokens.WithLabelValues(config, provider, kind).Add(float64(n))
	}
	metrics.costUSD.WithLabelValues(config, provider).Add(t.CostUSD)
}
