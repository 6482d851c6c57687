package module

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/internal/caddyargs"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/session"
	"github.com/agcluster/caddy-agcluster/usage"
)

// usagePool holds the open usage databases by path, so a config reload
// keeps the one file open (bbolt locks it) and the last config using it
// closes it.
var usagePool = caddy.NewUsagePool()

// currentMeter is the running config's meter, for the admin API and the
// dashboard.
var currentMeter atomic.Pointer[usage.Meter]

// defaultUsageStore is the usage database under Caddy's data directory.
func defaultUsageStore() string { return filepath.Join(caddy.AppDataDir(), "agcluster", "usage.db") }

// provisionUsage checks the quotas and prepares the meter; the store
// itself is opened by Start (`caddy validate` must not take its lock).
func (a *App) provisionUsage() error {
	path := caddy.NewReplacer().ReplaceAll(a.UsageStore, "")
	if path == "" {
		path = defaultUsageStore()
	}
	a.UsageStore = path
	m := &usage.Meter{ConfigQuotas: map[string]usage.Quota{}}
	if a.OwnerQuota != nil {
		if err := checkQuota("owner_quota", *a.OwnerQuota); err != nil {
			return err
		}
		m.Quota = *a.OwnerQuota
	}
	for _, id := range slices.Sorted(maps.Keys(a.ConfigQuotas)) {
		if _, ok := a.Config(id); !ok {
			return fmt.Errorf("agcluster: owner_quota %s: no such agent configuration (have: %s)", id, strings.Join(a.ModelIDs(), ", "))
		}
		q := a.ConfigQuotas[id]
		if q == nil {
			continue
		}
		if err := checkQuota("owner_quota "+id, *q); err != nil {
			return err
		}
		m.ConfigQuotas[id] = *q
	}
	a.quotas = m
	return nil
}

func checkQuota(name string, q usage.Quota) error {
	if q.TokensPerDay < 0 || q.CostPerDay < 0 || q.AgentHoursPerDay < 0 || q.Conversations < 0 {
		return fmt.Errorf("agcluster: %s: limits must not be negative", name)
	}
	return nil
}

// startUsage opens (or shares) the usage store.
func (a *App) startUsage() error {
	path := a.UsageStore
	v, _, err := usagePool.LoadOrNew(path, func() (caddy.Destructor, error) { return usage.Open(path) })
	if err != nil {
		return fmt.Errorf("agcluster: %w", err)
	}
	a.usagePath = path
	m := *a.quotas
	m.Store = v.(*usage.Store)
	a.meter.Store(&m)
	currentMeter.Store(&m)
	return nil
}

// cleanupUsage releases this config's hold on the store.
func (a *App) cleanupUsage() {
	if a.usagePath == "" {
		return
	}
	currentMeter.CompareAndSwap(a.meter.Swap(nil), nil)
	if _, err := usagePool.Delete(a.usagePath); err != nil {
		a.logger.Error("closing the usage store", zap.String("path", a.usagePath), zap.Error(err))
	}
	a.usagePath = ""
}

// metered is the meter usage is recorded with; nil before the app
// started (requests may come first) and after it stopped.
func (a *App) metered() *usage.Meter { return a.meter.Load() }

// admit checks an owner's quotas before a turn (or a new conversation) of
// config starts; a refusal is a 429 insufficient_quota naming the limit and
// when it resets.
func (a *App) admit(owner, config string, newConversation bool) *openai.Error {
	return a.quotaCheck(owner, config).admit(newConversation)
}

// quotaCheck checks one request's turn of config against owner's quotas:
// the owner's usage of the day is read once, however often it asks.
type quotaCheck struct {
	a             *App
	owner, config string
	read          bool
	standing      *usage.Standing // nil: no quota applies (or the read failed)
}

func (a *App) quotaCheck(owner, config string) *quotaCheck {
	return &quotaCheck{a: a, owner: owner, config: config}
}

// admit is App.admit on the usage read first.
func (q *quotaCheck) admit(newConversation bool) *openai.Error {
	a := q.a
	m := a.metered()
	if m == nil {
		return nil
	}
	if !q.read {
		q.read = true
		st, err := m.Standing(q.owner, q.config)
		if err != nil {
			a.logger.Error("quota check failed; the turn goes ahead", zap.Error(err))
		}
		q.standing = st
	}
	ref := q.standing.Check(newConversation)
	if ref == nil {
		return nil
	}
	initMetrics()
	metrics.quotaRefusals.WithLabelValues(ref.Limit).Inc()
	return openai.InsufficientQuota(ref.Message())
}

// turnUsage is what one turn used, for recording.
type turnUsage struct {
	owner, config, provider string
	turn                    bool          // a turn ran (else only a conversation started: a launch)
	result                  *agent.Result // the turn's result; nil when it reported none
	held                    time.Duration // how long the gateway held the agent for it
	newConversation         bool
}

// record adds a turn's usage to the store and the metrics. A turn's usage
// is counted after it, whatever the quota says meanwhile. A turn counts,
// with the time its agent was held, however it ended (its client gone, an
// error); its tokens and cost when it reported a result.
func (a *App) record(u turnUsage) {
	m := a.metered()
	if m == nil {
		return
	}
	var t usage.Totals
	if u.newConversation {
		t.Conversations = 1
	}
	if u.turn {
		t.Turns, t.AgentSeconds = 1, u.held.Seconds()
	}
	if r := u.result; r != nil {
		t.InputTokens, t.OutputTokens = r.Usage.InputTokens, r.Usage.OutputTokens
		t.CacheReadTokens, t.CacheWriteTokens = r.Usage.CacheReadInputTokens, r.Usage.CacheCreationInputTokens
		t.CostUSD, t.TurnSeconds = r.CostUSD, float64(r.DurationMS)/1000
		observeUsage(a.configLabel(u.config), u.provider, t)
	}
	if t == (usage.Totals{}) {
		return
	}
	if err := m.Record(u.owner, u.config, u.provider, t); err != nil {
		a.logger.Error("recording usage failed", zap.String("config", u.config), zap.Error(err))
	}
}

// configLabel is a configuration id as a metric label: a configured one,
// or "custom" for inline configurations (their ids are the client's).
func (a *App) configLabel(id string) string {
	if _, ok := a.Config(id); ok {
		return id
	}
	return "custom"
}

// usageQuery answers a usage query (from, to, group_by) over the records
// f already restricts; owners says whether group_by=owner is allowed. A
// query's own fault is an *openai.Error; any other error is the store's.
func usageQuery(m *usage.Meter, q url.Values, f usage.Filter, owners bool) (usageReport, error) {
	days := 30
	if v := q.Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 3660 {
			return usageReport{}, openai.BadRequest(fmt.Sprintf("days %q: want a whole number from 1", v), "days")
		}
		days = n
	}
	r, err := usage.ParseRange(q.Get("from"), q.Get("to"), days, m.Time())
	if err != nil {
		return usageReport{}, openai.BadRequest(err.Error(), "from")
	}
	f.From, f.To = r.From, r.To
	by := q.Get("group_by")
	if by == "" {
		by = usage.ByDay
	}
	if oerr := checkGroupBy(by, owners); oerr != nil {
		return usageReport{}, oerr
	}
	rows, err := m.Store.Group(f, by)
	if err != nil {
		return usageReport{}, err
	}
	var total usage.Totals
	for _, row := range rows {
		total.Add(row.Totals)
	}
	return usageReport{From: f.From, To: f.To, GroupBy: by, Rows: rows, Total: total}, nil
}

// checkGroupBy refuses a group_by other than day, config, provider (and
// owner when owners are shown).
func checkGroupBy(by string, owners bool) *openai.Error {
	switch {
	case by == usage.ByDay || by == usage.ByConfig || by == usage.ByProvider:
		return nil
	case owners && by == usage.ByOwner:
		return nil
	case owners:
		return openai.BadRequest("group_by: want day, config, provider or owner", "group_by")
	}
	return openai.BadRequest("group_by: want day, config or provider", "group_by")
}

// ownerPrefix shortens an owner hash for operators' views.
func ownerPrefix(owner string) string { return owner[:min(12, len(owner))] }

// usageReport is the answer of the usage endpoints.
type usageReport struct {
	// From and To are the UTC days covered, inclusive.
	From string `json:"from"`
	// To is the last day covered.
	To string `json:"to"`
	// GroupBy is day, config, provider (or owner, admin API only).
	GroupBy string `json:"group_by"`
	// Rows are the groups, sorted by their value.
	Rows []usage.Row `json:"rows"`
	// Total sums the rows.
	Total usage.Totals `json:"total"`
}

// ownerUsage serves GET /api/agents/usage (r) for one owner.
func (a *App) ownerUsage(r *http.Request, owner string) (any, *openai.Error) {
	m := a.metered()
	if m == nil {
		return nil, openai.Unavailable("usage is not recorded yet: the agcluster app has not started")
	}
	rep, err := usageQuery(m, r.URL.Query(), usage.Filter{Owner: owner}, false)
	var oerr *openai.Error
	if errors.As(err, &oerr) {
		return nil, oerr
	}
	if err != nil {
		return nil, agentsapi.Internal(a.logger, r, openai.Internal("Your usage could not be read; try again, or tell the gateway's operator."),
			"reading usage failed", err)
	}
	return rep, nil
}

// adminUsage serves GET /agcluster/usage: every owner's usage, owners as
// their hash prefix.
func adminUsage(w http.ResponseWriter, r *http.Request) error {
	m := currentMeter.Load()
	if m == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("the agcluster app is not running")}
	}
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use GET /agcluster/usage")}
	}
	q := r.URL.Query()
	f := usage.Filter{Config: q.Get("config"), Provider: q.Get("provider"), Owner: q.Get("owner")}
	rep, err := usageQuery(m, q, f, true)
	var oerr *openai.Error
	if errors.As(err, &oerr) {
		return caddy.APIError{HTTPStatus: oerr.Status, Err: fmt.Errorf("%s", oerr.Message)}
	}
	if err != nil { // the operator's own endpoint: the detail is theirs
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	if rep.GroupBy == usage.ByOwner {
		for i := range rep.Rows {
			rep.Rows[i].Group = ownerPrefix(rep.Rows[i].Group)
		}
	}
	agentsapi.WriteJSON(w, http.StatusOK, rep)
	return nil
}

// countConversation counts the conversation lease started, if it did (its
// quota was asked before its agent was made: session.Request.Admit).
func (a *App) countConversation(lease *session.Lease, owner string) {
	if lease.New {
		s := lease.Session
		a.record(turnUsage{owner: owner, config: s.ConfigID, provider: s.Provider, newConversation: true})
	}
}

// recordAPITurn records a launch or a turn of the management API
// (agentsapi.Options.Record).
func (a *App) recordAPITurn(c agentsapi.Caller, s *session.Session, result *agent.Result, held time.Duration, isNew bool) {
	// A launch starts a conversation and runs no turn; a turn continues one.
	a.record(turnUsage{owner: c.Owner, config: s.ConfigID, provider: s.Provider, turn: !isNew, result: result, held: held, newConversation: isNew})
}

// adminProviders serves GET /agcluster/providers: every provider in use,
// its capabilities, health and agents.
func adminProviders(w http.ResponseWriter, r *http.Request) error {
	st := currentState()
	if st == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("the agcluster app is not running")}
	}
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use GET /agcluster/providers")}
	}
	agentsapi.WriteJSON(w, http.StatusOK, st.status(r.Context()))
	return nil
}

// unmarshalQuota reads `owner_quota [<config>] { ... }`.
func (a *App) unmarshalQuota(d *caddyfile.Dispenser) error {
	var config string
	if d.NextArg() {
		config = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	q := new(usage.Quota)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("owner_quota: %s already specified", name)
		}
		seen[name] = true
		v, err := caddyargs.One(d)
		if err != nil {
			return err
		}
		if err := setQuotaLimit(q, name, v); err != nil {
			return d.Errf("owner_quota %s: %v", name, err)
		}
	}
	if q.IsZero() {
		return d.Err("owner_quota: set at least one of tokens_per_day, cost_per_day, agent_hours_per_day, conversations")
	}
	if config == "" {
		if a.OwnerQuota != nil {
			return d.Err("owner_quota without a configuration: already specified")
		}
		a.OwnerQuota = q
		return nil
	}
	if _, dup := a.ConfigQuotas[config]; dup {
		return d.Errf("owner_quota %s: already specified", config)
	}
	if a.ConfigQuotas == nil {
		a.ConfigQuotas = map[string]*usage.Quota{}
	}
	a.ConfigQuotas[config] = q
	return nil
}

// setQuotaLimit sets one limit of q from its Caddyfile value.
func setQuotaLimit(q *usage.Quota, name, v string) error {
	var err error
	switch name {
	case usage.LimitTokens:
		q.TokensPerDay, err = strconv.ParseInt(v, 10, 64)
	case usage.LimitConversations:
		q.Conversations, err = strconv.ParseInt(v, 10, 64)
	case usage.LimitCost:
		q.CostPerDay, err = strconv.ParseFloat(strings.TrimPrefix(v, "$"), 64)
	case usage.LimitAgentHours:
		q.AgentHoursPerDay, err = strconv.ParseFloat(v, 64)
	default:
		return fmt.Errorf("unknown limit; want tokens_per_day, cost_per_day, agent_hours_per_day or conversations")
	}
	if err != nil {
		return fmt.Errorf("%q is not a number", v)
	}
	if strings.HasPrefix(v, "-") {
		return fmt.Errorf("%q: must not be negative", v)
	}
	return nil
}
