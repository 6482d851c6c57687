package module

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/usage"
)

func TestQuotaCaddyfile(t *testing.T) {
	runAppCaddyfile(t, []appCaddyfileCase{
		{name: "gateway-wide and per configuration",
			input: "agcluster {\n usage_store /var/lib/agcluster/usage.db\n owner_quota {\n tokens_per_day 500000\n cost_per_day $2.50\n agent_hours_per_day 1.5\n conversations 20\n }\n owner_quota code-assistant {\n conversations 3\n }\n}",
			check: func(t *testing.T, a *App) {
				assert.Equal(t, "/var/lib/agcluster/usage.db", a.UsageStore)
				assert.Equal(t, &usage.Quota{TokensPerDay: 500000, CostPerDay: 2.5, AgentHoursPerDay: 1.5, Conversations: 20}, a.OwnerQuota)
				assert.Equal(t, map[string]*usage.Quota{"code-assistant": {Conversations: 3}}, a.ConfigQuotas)
			}},
		{name: "empty quota", input: "agcluster {\n owner_quota {\n }\n}", wantErr: "set at least one"},
		{name: "unknown limit", input: "agcluster {\n owner_quota {\n requests_per_day 3\n }\n}", wantErr: "unknown limit"},
		{name: "not a number", input: "agcluster {\n owner_quota {\n tokens_per_day many\n }\n}", wantErr: `"many" is not a number`},
		{name: "negative", input: "agcluster {\n owner_quota {\n cost_per_day -1\n }\n}", wantErr: "must not be negative"},
		{name: "limit twice", input: "agcluster {\n owner_quota {\n conversations 1\n conversations 2\n }\n}", wantErr: "conversations already specified"},
		{name: "gateway-wide twice", input: "agcluster {\n owner_quota {\n conversations 1\n }\n owner_quota {\n conversations 2\n }\n}", wantErr: "already specified"},
		{name: "configuration twice", input: "agcluster {\n owner_quota agent {\n conversations 1\n }\n owner_quota agent {\n conversations 2\n }\n}", wantErr: "owner_quota agent: already specified"},
		{name: "usage_store needs a path", input: "agcluster {\n usage_store\n}", wantErr: "wrong argument count"},
	})
}

func TestDashboardCaddyfile(t *testing.T) {
	h := new(Handler)
	require.NoError(t, h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agcluster {\n dashboard /ops\n}")))
	assert.Equal(t, "/ops", h.Dashboard)
	assert.True(t, h.dashboardHandles("/ops"))
	assert.True(t, h.dashboardHandles("/ops/events"))
	assert.False(t, h.dashboardHandles("/opsx"))
	assert.False(t, h.dashboardHandles("/v1/chat/completions"))
	err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser("agcluster {\n dashboard ops\n}"))
	assert.ErrorContains(t, err, "want a path")
}

func TestDashboardActionsNeedTheDashboardsOrigin(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		want    bool
	}{
		{"no custom header", map[string]string{"Origin": "http://gw.example"}, false},
		{"custom header, no origin (same-origin fetch may omit it)", map[string]string{dashboardHeader: "1"}, true},
		{"custom header, same origin", map[string]string{dashboardHeader: "1", "Origin": "http://gw.example", "Sec-Fetch-Site": "same-origin"}, true},
		{"custom header, another origin", map[string]string{dashboardHeader: "1", "Origin": "https://evil.example"}, false},
		{"custom header, cross-site fetch", map[string]string{dashboardHeader: "1", "Sec-Fetch-Site": "cross-site"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "http://gw.example/ops/sessions/x/stop", nil)
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			assert.Equal(t, tt.want, sameOrigin(r))
		})
	}
}
