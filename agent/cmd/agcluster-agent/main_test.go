package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/keyproxy"
)

// TestClaudeEnvConfigDir: with a state directory the CLI keeps its sessions
// on it, unless the operator or the agent config chose a place.
func TestClaudeEnvConfigDir(t *testing.T) {
	proxy, err := keyproxy.New("http://127.0.0.1:1", nil)
	require.NoError(t, err)
	tests := []struct {
		name     string
		base     []string
		cfgEnv   map[string]string
		stateDir string
		want     []string // every CLAUDE_CONFIG_DIR value, in order
	}{
		{name: "no state dir", base: []string{"HOME=/home/agent"}, want: nil},
		{name: "state dir", base: []string{"HOME=/home/agent", agent.EnvStateDir + "=/state"}, stateDir: "/state",
			want: []string{"/state/claude"}},
		{name: "operator's choice", base: []string{"CLAUDE_CONFIG_DIR=/elsewhere"}, stateDir: "/state",
			want: []string{"/elsewhere"}},
		{name: "config's choice", cfgEnv: map[string]string{"CLAUDE_CONFIG_DIR": "/cfg"}, stateDir: "/state",
			want: []string{"/cfg"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := claudeEnv(tt.base, &agent.Config{Env: tt.cfgEnv}, proxy, tt.stateDir)
			var got []string
			for _, kv := range env {
				if v, ok := strings.CutPrefix(kv, "CLAUDE_CONFIG_DIR="); ok {
					got = append(got, v)
				}
				assert.False(t, strings.HasPrefix(kv, "AGENT_"), "the agent's settings stay out of the CLI: %s", kv)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestSwapHandlerHold: between hold and the next set, requests wait and
// are then served by the new handler; before any set the answer is 503.
func TestSwapHandlerHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h swapHandler
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
		assert.Equal(t, "1", rec.Header().Get(agent.HeaderServer))

		h.set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
		h.hold()
		served := make(chan int, 1)
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats", nil))
			served <- rec.Code
		}()
		synctest.Wait() // the request is blocked, or done
		select {
		case code := <-served:
			t.Fatalf("a held request was served (%d) before the next handler was set", code)
		default:
		}
		h.set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }))
		assert.Equal(t, http.StatusAccepted, <-served, "served by the handler set after the hold")
	})
}
