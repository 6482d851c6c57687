package cloudflare_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/cloudflare"
)

// answer is a response of the Worker, read whole.
type answer struct {
	status int
	header http.Header
	body   string
}

// send sends a request to the Worker with the given headers.
func send(t *testing.T, method, url string, header map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestWorkerRefusesWithoutTheSecret: every route of the Worker wants the
// shared secret (Authorization on its API, Agcluster-Worker-Authorization
// on the relay, whose Authorization is the agent's); its refusals are its
// own (no Agcluster-Agent header); nothing is created without it.
func TestWorkerRefusesWithoutTheSecret(t *testing.T) {
	w := startWorker(t)
	name := "cloudflare-auth" // the list holds this test's agents only
	p := newProvider(t, w.options(name))
	inst, err := p.Create(context.Background(), newSpec())
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Destroy(context.Background(), inst.ID)) })
	agentURL := w.URL + "/v1/agents/" + inst.ID
	routes := []struct{ method, url, body string }{
		{http.MethodGet, w.URL + "/v1/ping", ""},
		{http.MethodGet, w.URL + "/v1/agents?provider=" + name, ""},
		{http.MethodGet, w.URL + "/v1/agents?provider=" + name + "&session=" + inst.SessionID, ""},
		{http.MethodPut, w.URL + "/v1/agents/sess_intruder", `{"provider":"` + name + `","token":"t"}`},
		{http.MethodGet, agentURL + "?provider=" + name, ""},
		{http.MethodPost, agentURL + "/sleep", `{"provider":"` + name + `"}`},
		{http.MethodPost, agentURL + "/wake", `{"provider":"` + name + `","token":"t"}`},
		{http.MethodDelete, agentURL + "?provider=" + name, ""},
		{http.MethodGet, agentURL + "/agent/stats", ""},
	}
	credentials := []struct {
		name   string
		header map[string]string
	}{
		{"no secret", map[string]string{}},
		{"a wrong secret", map[string]string{"Authorization": "Bearer " + w.Secret + "x", cloudflare.HeaderWorkerAuth: "Bearer wrong"}},
		{"the agent's token", map[string]string{"Authorization": "Bearer " + inst.Token}},
	}
	for _, r := range routes {
		for _, c := range credentials {
			t.Run(r.method+" "+strings.TrimPrefix(r.url, w.URL)+" with "+c.name, func(t *testing.T) {
				got := send(t, r.method, r.url, c.header, r.body)
				assert.Equal(t, http.StatusUnauthorized, got.status, got.body)
				assert.Contains(t, got.body, `"code":"unauthorized"`)
				assert.Empty(t, got.header.Get(agent.HeaderServer), "the Worker's own answer")
			})
		}
	}
	list, err := p.List(context.Background())
	require.NoError(t, err)
	require.Len(t, list, 1, "nothing was created, slept, woken or destroyed")
	assert.Equal(t, inst.ID, list[0].ID)
	assert.Equal(t, providers.StateRunning, list[0].State)

	t.Run("the secret of the API does not open the relay", func(t *testing.T) {
		got := send(t, http.MethodGet, agentURL+"/agent/stats", map[string]string{"Authorization": "Bearer " + w.Secret}, "")
		assert.Equal(t, http.StatusUnauthorized, got.status)
	})
	t.Run("a provider with a wrong secret is told so", func(t *testing.T) {
		o := w.options(name)
		o.Secret = "not-the-worker-secret"
		bad := newProvider(t, o)
		err := bad.Ping(context.Background())
		assert.ErrorIs(t, err, providers.ErrUnavailable)
		assert.Contains(t, err.Error(), "refused the secret")
		_, err = bad.Create(context.Background(), newSpec())
		assert.ErrorIs(t, err, providers.ErrUnavailable)
		assert.NotContains(t, err.Error(), w.Secret)
	})
}

// TestWorkerRelay: the relay passes the agent's answers through unchanged
// (its headers, its errors with Agcluster-Agent), while the Worker's own
// errors lack that header, so the gateway knows the agent was not reached:
// an asleep agent, an unknown one, a bad id, an unknown route.
func TestWorkerRelay(t *testing.T) {
	w := startWorker(t)
	p := newProvider(t, w.options("cloudflare"))
	inst, err := p.Create(context.Background(), newSpec())
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Destroy(context.Background(), inst.ID)) })
	c := inst.Client()
	_, err = c.WriteFile(context.Background(), "report.md", []byte("# quince\n"))
	require.NoError(t, err)

	resp, err := c.Forward(context.Background(), http.MethodGet, "/files/report.md", nil, nil, nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "# quince\n", string(body))
	assert.Equal(t, "1", resp.Header.Get(agent.HeaderServer))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), "the agent's headers pass unchanged")
	assert.NotEmpty(t, resp.Header.Get("Last-Modified"))

	missing, err := c.Forward(context.Background(), http.MethodGet, "/files/missing.md", nil, nil, nil)
	require.NoError(t, err)
	body, _ = io.ReadAll(missing.Body)
	missing.Body.Close()
	assert.Equal(t, http.StatusNotFound, missing.StatusCode)
	assert.Equal(t, "1", missing.Header.Get(agent.HeaderServer), "the agent's own 404, with its header")
	assert.Contains(t, string(body), `"code":"not_found"`)

	stored, err := w.Stored()
	require.NoError(t, err)
	assert.Contains(t, stored, "workspace/report.md", "the written file is in the R2 snapshot at once")
	assert.Contains(t, stored, "# quince", "with its content")

	asleep, err := p.Sleep(context.Background(), inst)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		c    *agentclient.Client
	}{
		{"an asleep agent", inst.Client()},
		{"an unknown agent", &agentclient.Client{BaseURL: w.URL + "/v1/agents/sess_nobody/agent", Token: inst.Token, Header: inst.Header}},
		{"a bad id", &agentclient.Client{BaseURL: w.URL + "/v1/agents/..%2Fetc/agent", Token: inst.Token, Header: inst.Header}},
		{"an unknown route", &agentclient.Client{BaseURL: w.URL + "/v2", Token: inst.Token, Header: inst.Header}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Stats(context.Background())
			assert.ErrorIs(t, err, agentclient.ErrNotReached)
		})
	}
	woken, err := p.Wake(context.Background(), asleep.ID)
	require.NoError(t, err)
	got, err := woken.Client().Forward(context.Background(), http.MethodGet, "/files/report.md", nil, nil, nil)
	require.NoError(t, err)
	body, _ = io.ReadAll(got.Body)
	got.Body.Close()
	assert.Equal(t, "# quince\n", string(body), "restored from R2 into the new container")
}

// TestWorkerTypeChecks: the Worker's TypeScript compiles against the
// runtime's own types (wrangler types, as generated for its
// wrangler.jsonc) with tsc --strict: wrangler itself bundles without
// checking types.
func TestWorkerTypeChecks(t *testing.T) {
	testenv.Integration(t)
	root := testenv.RepoRoot()
	out, err := exec.Command(filepath.Join(root, "scripts", "ensure-wrangler.sh")).Output()
	require.NoError(t, err, "scripts/ensure-wrangler.sh")
	modules := filepath.Join(strings.TrimSpace(string(out)), "node_modules")
	dir := t.TempDir()
	src := filepath.Join(root, "providers", "cloudflare", "worker")
	require.NoError(t, os.CopyFS(dir, os.DirFS(src)))
	_ = os.RemoveAll(filepath.Join(dir, "node_modules"))
	require.NoError(t, os.Symlink(modules, filepath.Join(dir, "node_modules")))
	for _, args := range [][]string{{"wrangler", "types"}, {"tsc", "--noEmit"}} {
		cmd := exec.Command(filepath.Join(modules, ".bin", args[0]), args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "WRANGLER_SEND_METRICS=false")
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s:\n%s", strings.Join(args, " "), b)
	}
}
