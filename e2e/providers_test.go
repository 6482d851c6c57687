package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// providerView is one provider in GET /api/providers.
type providerView struct {
	Name         string   `json:"name"`
	Kind         string   `json:"kind"`
	Default      bool     `json:"default"`
	Removed      bool     `json:"removed"`
	Capabilities []string `json:"capabilities"`
	Health       string   `json:"health"`
	Live         int      `json:"live"`
	Sleeping     int      `json:"sleeping"`
}

func (a api) providers() map[string]providerView {
	a.t.Helper()
	r := a.do(http.MethodGet, "/api/providers", nil, "")
	require.Equal(a.t, http.StatusOK, r.status, string(r.body))
	var out struct {
		Providers []providerView `json:"providers"`
	}
	r.json(a.t, &out)
	byName := map[string]providerView{}
	for _, p := range out.Providers {
		byName[p.Name] = p
	}
	return byName
}

// TestSeveralProviders: two Docker providers on one engine ("docker", the
// default, and "second"). Conversations go to the default, to the
// provider their configuration names, or to the one a launch asks for;
// each agent carries its own provider's name and is removed through it;
// /api/providers shows both. A reload that drops "second" keeps its live
// session answering until it is deleted.
func TestSeveralProviders(t *testing.T) {
	e := setup(t)
	runID := testenv.RandomHex(6)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "on-second.json"), []byte(
		`{"id":"on-second","name":"On second","description":"The agent on the second provider","provider":"second","allowed_tools":["Bash"]}`), 0o644))
	second := fmt.Sprintf(`provider second docker {
			image %s
			network %s
			env ANTHROPIC_BASE_URL http://%s:8080
			label agcluster.test.run %s
		}
		default_provider docker
		configs %s`, testenv.AgentImage(), e.network, testenv.MockAlias, runID, dir)
	g := e.startGatewayWith(t, gatewayOptions{runID: runID, extraApp: second})
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Here."}})
	key := "sk-ant-test-providers"
	a := api{t, g, key}

	onDefault := &conversation{t: t, key: key, id: "c-default"}
	onDefault.say(g, "Hi.")
	params := user("Hi.")
	params.Model = "on-second"
	byConfig := &conversation{t: t, key: key, id: "c-config"}
	byConfig.send(g, params)
	launched := a.launch(map[string]any{"config_id": "code-assistant", "provider": "second"})
	aliased := a.launch(map[string]any{"config_id": "code-assistant", "provider": "docker"})

	tests := []struct {
		name, sessionID, want string
	}{
		{"default", onDefault.sessionID, "docker"},
		{"configuration", byConfig.sessionID, "second"},
		{"launch override", launched.SessionID, "second"},
		{"launch by the original system's name", aliased.SessionID, "docker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := (&conversation{t: t, key: key, sessionID: tt.sessionID}).session(g)
			assert.Equal(t, tt.want, s.Provider)
			info, err := e.docker.ContainerInspect(context.Background(), s.AgentID)
			require.NoError(t, err)
			assert.Equal(t, tt.want, info.Config.Labels["agcluster.provider"], "the agent carries its provider's name")
		})
	}

	bad := a.post("/api/agents/launch", map[string]any{"config_id": "code-assistant", "provider": "nomad"})
	assert.Equal(t, http.StatusBadRequest, bad.status)
	assert.Contains(t, bad.errorMessage(t), "docker, second", "the error lists the configured providers")

	provs := a.providers()
	require.Len(t, provs, 2)
	for name, live := range map[string]int{"docker": 2, "second": 2} {
		p := provs[name]
		assert.Equal(t, "docker", p.Kind)
		assert.Equal(t, name == "docker", p.Default)
		assert.Equal(t, "reachable", p.Health)
		assert.Contains(t, p.Capabilities, "sleep")
		assert.Equal(t, live, p.Live, name)
	}

	// Each provider removes its own agent.
	del := a.do(http.MethodDelete, "/api/agents/sessions/"+aliased.SessionID, nil, "")
	require.Equal(t, http.StatusOK, del.status, string(del.body))
	_, err := e.docker.ContainerInspect(context.Background(), aliased.AgentID)
	assert.Error(t, err, "the agent was removed")

	// A reload drops "second" (and the configuration that names it).
	cfg, err := os.ReadFile(g.cfgPath)
	require.NoError(t, err)
	dropped := strings.Replace(string(cfg), second, "", 1)
	require.NotEqual(t, string(cfg), dropped)
	resp, err := http.Post(g.admin+"/load", "application/json", bytes.NewReader(adaptCaddyfile(t, dropped)))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))

	provs = a.providers()
	assert.True(t, provs["second"].Removed, "a removed provider is listed while it has sessions")
	events := a.chat(launched.SessionID, "Still there?")
	require.NotEmpty(t, events)
	assert.Equal(t, "result", string(events[len(events)-1].Type), "the removed provider's session still answers")
	refused := a.post("/api/agents/launch", map[string]any{"config_id": "code-assistant", "provider": "second"})
	assert.Equal(t, http.StatusBadRequest, refused.status, "no new sessions on a removed provider")

	for _, id := range []string{launched.SessionID, byConfig.sessionID} {
		del := a.do(http.MethodDelete, "/api/agents/sessions/"+id, nil, "")
		require.Equal(t, http.StatusOK, del.status, string(del.body))
	}
	provs = a.providers()
	assert.NotContains(t, provs, "second", "the removed provider is gone with its last session")
	assert.Len(t, e.containers(t, runID), 1, "only the default provider's conversation is left")
	got, err := streamed(t, g.client(key), openai.ChatCompletionNewParams{Model: "agent",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi again.")}}, conv("c-default"))
	require.NoError(t, err)
	assert.Equal(t, "Here.", got.Choices[0].Message.Content)
}
