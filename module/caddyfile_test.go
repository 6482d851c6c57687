package module

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	// The provider guest modules the Caddyfile tests name.
	_ "github.com/agcluster/caddy-agcluster/providers/all"
)

// appCaddyfileCase is one app block and what it must give: the App it
// makes (check) or an error containing wantErr.
type appCaddyfileCase struct {
	name    string
	input   string
	wantErr string
	check   func(t *testing.T, a *App)
}

// runAppCaddyfile runs each case's app block through UnmarshalCaddyfile.
func runAppCaddyfile(t *testing.T, tests []appCaddyfileCase) {
	t.Helper()
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

func TestAppCaddyfile(t *testing.T) {
	runAppCaddyfile(t, []appCaddyfileCase{{
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
		name:  "one provider named by its kind",
		input: "agcluster {\n provider docker {\n image x:1\n }\n}",
		check: func(t *testing.T, a *App) {
			require.Len(t, a.ProvidersRaw, 1)
			assert.JSONEq(t, `{"kind":"docker","image":"x:1"}`, string(a.ProvidersRaw["docker"]))
		},
	}, {
		name:  "several providers, a default, conversations",
		input: "agcluster {\n provider docker\n provider gpu docker {\n host tcp://127.0.0.1:2375\n }\n default_provider gpu\n retention 3d\n max_conversations 50\n max_conversations_per_owner 5\n}",
		check: func(t *testing.T, a *App) {
			require.Len(t, a.ProvidersRaw, 2)
			assert.JSONEq(t, `{"kind":"docker"}`, string(a.ProvidersRaw["docker"]))
			assert.JSONEq(t, `{"kind":"docker","host":"tcp://127.0.0.1:2375"}`, string(a.ProvidersRaw["gpu"]))
			assert.Equal(t, "gpu", a.DefaultProvider)
			assert.Equal(t, caddy.Duration(72*time.Hour), *a.Retention)
			assert.Equal(t, 50, a.MaxConversations)
			assert.Equal(t, 5, a.MaxConversationsPerOwner)
		},
	}, {
		name:  "retention zero means until deleted",
		input: "agcluster {\n retention 0\n}",
		check: func(t *testing.T, a *App) { assert.Equal(t, caddy.Duration(0), *a.Retention) },
	},
		{name: "warm pool on a provider", input: "agcluster {\n warm_pool agent 2 gpu\n warm_pool agent 1\n}",
			check: func(t *testing.T, a *App) {
				assert.Equal(t, map[string]int{"agent@gpu": 2, "agent": 1}, a.WarmPool.Sizes)
			}},
		{name: "two providers of one name", input: "agcluster {\n provider docker\n provider docker {\n image y\n }\n}", wantErr: "provider docker: a provider of that name is already configured"},
		{name: "provider without kind", input: "agcluster {\n provider\n}", wantErr: "wrong argument count"},
		{name: "unknown provider kind", input: "agcluster {\n provider gpu nomad\n}", wantErr: "nomad"},
		{name: "negative conversations", input: "agcluster {\n max_conversations -1\n}", wantErr: "max_conversations"},
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
		{name: "argument on option", input: "agcluster extra {\n}", wantErr: "wrong argument count"},
	})
}

func TestHandlerCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr string
		want    Handler
	}{
		{name: "bare", input: "agcluster", want: Handler{}},
		{name: "all options", input: "agcluster {\n owner {http.auth.user.id}\n conversation_headers X-A X-B\n api_key {env.K}\n reasoning off\n tools full\n task_models m1 m2\n direct_model claude-x\n max_request_body 1MB\n fetch_images img.example.com *.cdn.example\n keep_alive 3s\n}",
			want: Handler{Owner: "{http.auth.user.id}", ConversationHeaders: []string{"X-A", "X-B"}, APIKey: "{env.K}",
				Reasoning: ptr(false), Tools: "full", TaskModels: []string{"m1", "m2"}, DirectModel: "claude-x",
				MaxRequestBody: 1000000, FetchImageHosts: []string{"img.example.com", "*.cdn.example"}, KeepAlive: caddy.Duration(3 * time.Second)}},
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

func TestResolveProvider(t *testing.T) {
	app := func(kinds map[string]string, def string) *App {
		a := &App{DefaultProvider: def, providers: map[string]configuredProvider{}}
		for name, kind := range kinds {
			a.providers[name] = configuredProvider{raw: `{"kind":"` + kind + `"}`}
		}
		return a
	}
	one := app(map[string]string{"local": "docker", "edge": "fly"}, "local")
	two := app(map[string]string{"a": "docker", "b": "docker"}, "a")
	tests := []struct {
		name      string
		a         *App
		requested string
		cfg       *agent.Config
		want      string
		wantErr   string
	}{
		{"default", one, "", nil, "local", ""},
		{"configuration", one, "", &agent.Config{Provider: "edge"}, "edge", ""},
		{"launch beats configuration", one, "local", &agent.Config{Provider: "edge"}, "local", ""},
		{"original name of the one provider of a kind", one, "fly_machines", nil, "edge", ""},
		{"original docker name", one, "docker", nil, "local", ""},
		{"original name, two of that kind", two, "docker", nil, "", `unknown provider "docker"; configured providers: a, b`},
		{"unknown", one, "nomad", nil, "", `unknown provider "nomad"; configured providers: edge, local`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.ResolveProvider(tt.requested, tt.cfg)
			if tt.wantErr != "" {
				require.NotNil(t, err)
				assert.Equal(t, http.StatusBadRequest, err.Status)
				assert.Contains(t, err.Message, tt.wantErr)
				return
			}
			require.Nil(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
