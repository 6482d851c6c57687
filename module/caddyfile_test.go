package module

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr string
		check   func(t *testing.T, a *App)
	}{{
		name:  "all options",
		input: "agcluster {\n idle_timeout 5m\n max_sessions 7\n max_sessions_per_owner 2\n anthropic_base_url http://127.0.0.1:9\n shutdown destroy\n turn_timeout 2m\n configs /etc/agents\n}",
		check: func(t *testing.T, a *App) {
			assert.Equal(t, caddy.Duration(5*time.Minute), *a.IdleTimeout)
			assert.Equal(t, 7, *a.MaxSessions)
			assert.Equal(t, 2, a.MaxSessionsPerOwner)
			assert.Equal(t, "http://127.0.0.1:9", a.AnthropicBaseURL)
			assert.Equal(t, "destroy", a.Shutdown)
			assert.Equal(t, caddy.Duration(2*time.Minute), a.TurnTimeout)
			assert.Equal(t, "/etc/agents", a.ConfigsDir)
		},
	}, {
		name:  "idle timeout zero means never",
		input: "agcluster {\n idle_timeout 0\n}",
		check: func(t *testing.T, a *App) { assert.Equal(t, caddy.Duration(0), *a.IdleTimeout) },
	}, {
		name:  "docker provider",
		input: "agcluster {\n provider docker {\n image x:1\n memory 512m\n cpus 0.5\n pids 64\n env A b\n env C d\n reach_by_container_ip\n network n\n isolated_network iso\n ready_timeout 2s\n label team x\n }\n}",
		check: func(t *testing.T, a *App) {
			assert.JSONEq(t, `{"name":"docker","image":"x:1","memory_bytes":536870912,"nano_cpus":500000000,"pids":64,
				"env":{"A":"b","C":"d"},"reach_by_container_ip":true,"network":"n","isolated_network":"iso","ready_timeout":2000000000,"extra_labels":{"team":"x"}}`,
				string(a.ProviderRaw))
		},
	},
		{name: "warm pool", input: "agcluster {\n warm_pool agent 2\n warm_pool code-assistant 1\n warm_pool_max 2\n warm_pool_min_free_memory 2GiB\n warm_pool_check_interval 3s\n}",
			check: func(t *testing.T, a *App) {
				require.NotNil(t, a.WarmPool)
				assert.Equal(t, map[string]int{"agent": 2, "code-assistant": 1}, a.WarmPool.Sizes)
				assert.Equal(t, 2, a.WarmPool.Max)
				assert.Equal(t, int64(2<<30), a.WarmPool.MinFreeMemory)
				assert.Equal(t, caddy.Duration(3*time.Second), a.WarmPool.CheckInterval)
			}},
		{name: "warm pool memory check off", input: "agcluster {\n warm_pool agent 1\n warm_pool_min_free_memory off\n}",
			check: func(t *testing.T, a *App) { assert.Equal(t, int64(-1), a.WarmPool.MinFreeMemory) }},
		{name: "warm pool twice for one config", input: "agcluster {\n warm_pool agent 1\n warm_pool agent 2\n}", wantErr: "warm_pool agent: given twice"},
		{name: "warm pool without size", input: "agcluster {\n warm_pool agent\n}", wantErr: "wrong argument count"},
		{name: "warm pool bad size", input: "agcluster {\n warm_pool agent many\n}", wantErr: `warm_pool agent "many"`},
		{name: "warm pool bad memory", input: "agcluster {\n warm_pool_min_free_memory lots\n}", wantErr: "warm_pool_min_free_memory"},
		{name: "unknown subdirective", input: "agcluster {\n idle 5m\n}", wantErr: `unknown agcluster subdirective "idle"`},
		{name: "duplicate", input: "agcluster {\n max_sessions 1\n max_sessions 2\n}", wantErr: "max_sessions already specified"},
		{name: "bad duration", input: "agcluster {\n idle_timeout soon\n}", wantErr: "idle_timeout"},
		{name: "negative sessions", input: "agcluster {\n max_sessions -1\n}", wantErr: "max_sessions"},
		{name: "bad shutdown", input: "agcluster {\n shutdown maybe\n}", wantErr: "shutdown"},
		{name: "unknown provider", input: "agcluster {\n provider nomad\n}", wantErr: "nomad"},
		{name: "unknown docker option", input: "agcluster {\n provider docker {\n gpus 1\n }\n}", wantErr: `unknown docker provider subdirective "gpus"`},
		{name: "bad memory", input: "agcluster {\n provider docker {\n memory lots\n }\n}", wantErr: "memory"},
		{name: "bad cpus", input: "agcluster {\n provider docker {\n cpus -1\n }\n}", wantErr: "cpus"},
		{name: "duplicate env", input: "agcluster {\n provider docker {\n env A 1\n env A 2\n }\n}", wantErr: "env A already specified"},
		{name: "argument on option", input: "agcluster extra {\n}", wantErr: "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := new(App)
			err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, a)
		})
	}
}

func TestHandlerCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr string
		want    Handler
	}{
		{name: "bare", input: "agcluster", want: Handler{}},
		{name: "all options", input: "agcluster {\n owner {http.auth.user.id}\n conversation_headers X-A X-B\n api_key {env.K}\n reasoning off\n tools full\n task_models m1 m2\n direct_model claude-x\n max_request_body 1MB\n keep_alive 3s\n}",
			want: Handler{Owner: "{http.auth.user.id}", ConversationHeaders: []string{"X-A", "X-B"}, APIKey: "{env.K}",
				Reasoning: ptr(false), Tools: "full", TaskModels: []string{"m1", "m2"}, DirectModel: "claude-x",
				MaxRequestBody: 1000000, KeepAlive: caddy.Duration(3 * time.Second)}},
		{name: "unknown", input: "agcluster {\n model x\n}", wantErr: `unknown agcluster subdirective "model"`},
		{name: "bad tools", input: "agcluster {\n tools loud\n}", wantErr: "tools"},
		{name: "bad reasoning", input: "agcluster {\n reasoning maybe\n}", wantErr: "reasoning"},
		{name: "no headers", input: "agcluster {\n conversation_headers\n}", wantErr: "wrong argument count"},
		{name: "duplicate", input: "agcluster {\n owner a\n owner b\n}", wantErr: "owner already specified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, h)
		})
	}
}
