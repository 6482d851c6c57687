package usage

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Quota caps an owner's usage per UTC day. Zero fields are no limit.
type Quota struct {
	// TokensPerDay caps the tokens (input, output, cache reads and
	// writes) an owner's turns use per UTC day.
	TokensPerDay int64 `json:"tokens_per_day,omitempty"`
	// CostPerDay caps the cost in USD (the CLI's estimate) of an owner's
	// turns per UTC day.
	CostPerDay float64 `json:"cost_per_day,omitempty"`
	// AgentHoursPerDay caps the agent time (Totals.AgentSeconds) of an
	// owner's turns per UTC day, in hours.
	AgentHoursPerDay float64 `json:"agent_hours_per_day,omitempty"`
	// Conversations caps the conversations an owner starts per UTC day;
	// turns of conversations already started go on.
	Conversations int64 `json:"conversations,omitempty"`
}

// Limit names for refusals and metrics.
const (
	LimitTokens        = "tokens_per_day"
	LimitCost          = "cost_per_day"
	LimitAgentHours    = "agent_hours_per_day"
	LimitConversations = "conversations"
)

// IsZero tells whether q sets no limit.
func (q Quota) IsZero() bool { return q == Quota{} }

// exceeded returns the first limit that t has reached, with the used and
// allowed amounts as text. Conversations count only for a new one.
func (q Quota) exceeded(t Totals, newConversation bool) (limit, used, allowed string, ok bool) {
	switch {
	case q.TokensPerDay > 0 && t.Tokens() >= q.TokensPerDay:
		return LimitTokens, strconv.FormatInt(t.Tokens(), 10) + " tokens", strconv.FormatInt(q.TokensPerDay, 10) + " tokens", true
	case q.CostPerDay > 0 && t.CostUSD >= q.CostPerDay:
		return LimitCost, fmt.Sprintf("$%.4f", t.CostUSD), fmt.Sprintf("$%.4f", q.CostPerDay), true
	case q.AgentHoursPerDay > 0 && t.AgentSeconds >= q.AgentHoursPerDay*3600:
		return LimitAgentHours, fmt.Sprintf("%.2f agent hours", t.AgentSeconds/3600), fmt.Sprintf("%g agent hours", q.AgentHoursPerDay), true
	case newConversation && q.Conversations > 0 && t.Conversations >= q.Conversations:
		return LimitConversations, strconv.FormatInt(t.Conversations, 10) + " conversations", strconv.FormatInt(q.Conversations, 10) + " conversations", true
	}
	return "", "", "", false
}

// Refusal says which quota an owner reached.
type Refusal struct {
	// Limit is the limit's name (tokens_per_day, ...).
	Limit string
	// Config is the configuration whose own quota was reached; "" for the
	// gateway-wide quota.
	Config string
	// Used and Allowed are the day's usage and the limit, as text.
	Used, Allowed string
	// ResetsAt is the next UTC midnight, when the day's usage starts over.
	ResetsAt time.Time
}

// Message is the refusal as the client reads it.
func (r *Refusal) Message() string {
	scope := "your daily quota"
	if r.Config != "" {
		scope = fmt.Sprintf("your daily quota for model %q", r.Config)
	}
	return fmt.Sprintf("You have reached %s: %s is %s of %s allowed. It resets at %s (UTC midnight).",
		scope, r.Limit, r.Used, r.Allowed, r.ResetsAt.Format(time.RFC3339))
}

// Meter records turns into a store and checks quotas against it.
type Meter struct {
	// Store keeps the records.
	Store *Store
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	// Quota applies to each owner's usage over all configurations.
	Quota Quota
	// ConfigQuotas apply to each owner's usage of one configuration.
	ConfigQuotas map[string]Quota
}

// Time is the meter's time now: its clock's (Now), else the system's.
func (m *Meter) Time() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Record adds a turn's usage to today's record of its owner,
// configuration and provider.
func (m *Meter) Record(owner, config, provider string, t Totals) error {
	return m.Store.Add(Key{Day: Day(m.Time()), Owner: owner, Config: config, Provider: provider}, t)
}

// Check tells whether owner may start a turn of config now; newConversation
// says the turn starts a conversation. Nil means yes.
func (m *Meter) Check(owner, config string, newConversation bool) (*Refusal, error) {
	st, err := m.Standing(owner, config)
	if err != nil {
		return nil, err
	}
	return st.Check(newConversation), nil
}

// Standing is an owner's usage of one day, overall and of one
// configuration, for checks against the quotas that apply to them.
type Standing struct {
	quota, configQuota Quota
	hasConfig          bool // configQuota applies
	config             string
	all, ofConfig      Totals
	resets             time.Time
}

// Standing reads owner's usage of today for the checks of turns of config
// (Standing.Check), which then read the store no more. It is nil, without
// a read, when no quota applies.
func (m *Meter) Standing(owner, config string) (*Standing, error) {
	cq, hasConfig := m.ConfigQuotas[config]
	if m.Quota.IsZero() && (!hasConfig || cq.IsZero()) {
		return nil, nil
	}
	now := m.Time()
	today := Day(now)
	st := &Standing{quota: m.Quota, configQuota: cq, hasConfig: hasConfig, config: config, resets: NextMidnight(now)}
	err := m.Store.Each(Filter{From: today, To: today, Owner: owner}, func(k Key, t Totals) {
		st.all.Add(t)
		if k.Config == config {
			st.ofConfig.Add(t)
		}
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Check tells whether the owner may start a turn; newConversation says the
// turn starts a conversation. Nil means yes (always, for a nil Standing).
func (s *Standing) Check(newConversation bool) *Refusal {
	if s == nil {
		return nil
	}
	if limit, used, allowed, ok := s.configQuota.exceeded(s.ofConfig, newConversation); s.hasConfig && ok {
		return &Refusal{Limit: limit, Config: s.config, Used: used, Allowed: allowed, ResetsAt: s.resets}
	}
	if limit, used, allowed, ok := s.quota.exceeded(s.all, newConversation); ok {
		return &Refusal{Limit: limit, Used: used, Allowed: allowed, ResetsAt: s.resets}
	}
	return nil
}

// NextMidnight is the UTC midnight after t.
func NextMidnight(t time.Time) time.Time {
	y, mo, d := t.UTC().Date()
	return time.Date(y, mo, d+1, 0, 0, 0, 0, time.UTC)
}

// Row is one group of a grouped query.
type Row struct {
	// Group is the group's value: a day, configuration, provider or owner.
	Group string `json:"group"`
	Totals
}

// Group values.
const (
	ByDay      = "day"
	ByConfig   = "config"
	ByProvider = "provider"
	ByOwner    = "owner"
)

// Group sums the records f selects by day, config, provider or owner,
// sorted by the group's value.
func (s *Store) Group(f Filter, by string) ([]Row, error) {
	pick := map[string]func(Key) string{
		ByDay: func(k Key) string { return k.Day }, ByConfig: func(k Key) string { return k.Config },
		ByProvider: func(k Key) string { return k.Provider }, ByOwner: func(k Key) string { return k.Owner },
	}[by]
	if pick == nil {
		return nil, fmt.Errorf("group_by %q: want day, config, provider or owner", by)
	}
	sums := map[string]*Totals{}
	err := s.Each(f, func(k Key, t Totals) {
		g := pick(k)
		if sums[g] == nil {
			sums[g] = &Totals{}
		}
		sums[g].Add(t)
	})
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, len(sums))
	for _, g := range slices.Sorted(maps.Keys(sums)) {
		rows = append(rows, Row{Group: g, Totals: *sums[g]})
	}
	return rows, nil
}

// ParseRange reads a from/to query (YYYY-MM-DD, inclusive, UTC); an empty
// to is today and an empty from is days-1 days before to.
func ParseRange(from, to string, days int, now time.Time) (Filter, error) {
	f := Filter{From: from, To: to}
	if f.To == "" {
		f.To = Day(now)
	}
	end, err := time.Parse(dayLayout, f.To)
	if err != nil {
		return f, fmt.Errorf("to %q: want a day such as 2026-01-31", to)
	}
	if f.From == "" {
		f.From = Day(end.AddDate(0, 0, -(days - 1)))
	}
	start, err := time.Parse(dayLayout, f.From)
	if err != nil {
		return f, fmt.Errorf("from %q: want a day such as 2026-01-01", from)
	}
	if start.After(end) {
		return f, fmt.Errorf("from %s is after to %s", f.From, f.To)
	}
	return f, nil
}
