package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// dropInSite is caddyfile-examples/drop-in.Caddyfile's site on addr's
// port, serving root, proxying to upstream; without agcluster when
// withAgcluster is false (the operator's site before the change).
func dropInSite(t *testing.T, addr, root, upstream string, withAgcluster bool) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "caddyfile-examples", "drop-in.Caddyfile"))
	require.NoError(t, err)
	site := string(src)
	site = site[strings.Index(site, "example.com {"):]
	if !withAgcluster {
		require.Contains(t, site, "\tagcluster\n")
		site = strings.Replace(site, "\tagcluster\n", "", 1)
	}
	return strings.NewReplacer(
		"example.com", ":"+addr[strings.LastIndex(addr, ":")+1:],
		"/srv/www", root,
		"127.0.0.1:9000", upstream,
	).Replace(site)
}

// dropInRequest is one request to the operator's site.
type dropInRequest struct {
	method, path, password, body string
	status                       int // the operator's site answers with
}

// answer is what a response says, less its Date.
type answer struct {
	Status int
	Header http.Header
	Body   string
}

func (r dropInRequest) send(t *testing.T, base string) answer {
	t.Helper()
	req, err := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
	require.NoError(t, err)
	req.Host = "shop.example"
	if r.password != "" {
		req.SetBasicAuth("admin", r.password)
	}
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirects.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Header.Del("Date")
	return answer{resp.StatusCode, resp.Header, string(body)}
}

// TestDropIn: an operator's site (file_server, a reverse_proxy route to
// another local server, basic_auth on /admin/*) answers every request
// exactly as before, status, headers and body, once `agcluster` is added
// to it (caddyfile-examples/drop-in.Caddyfile, both versions served by
// one Caddy); only the module's own paths answer differently.
func TestDropIn(t *testing.T) {
	e := setup(t)
	root := t.TempDir()
	for name, content := range map[string]string{
		"index.html":       "<h1>shop</h1>\n",
		"app.js":           "console.log('shop');\n",
		"admin/index.html": "<h1>admin</h1>\n",
		"docs/guide.txt":   "the guide\n",
		"v1/readme.txt":    "a static file under /v1\n",
	} {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", "yes")
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "b"})
		_, _ = fmt.Fprintf(w, "backend %s %s?%s body=%q host=%s xff=%s xfp=%s\n", r.Method, r.URL.Path, r.URL.RawQuery, body,
			r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(backend.Close)
	upstream := strings.TrimPrefix(backend.URL, "http://")
	before, after := testenv.FreeAddr(t), testenv.FreeAddr(t)
	e.startGatewayWith(t, gatewayOptions{
		sites: dropInSite(t, before, root, upstream, false) + dropInSite(t, after, root, upstream, true),
	})

	const password = "drop-in-secret"
	unchanged := []dropInRequest{
		{method: "GET", path: "/", status: 200},
		{method: "GET", path: "/index.html", status: 200},
		{method: "GET", path: "/app.js", status: 200},
		{method: "HEAD", path: "/app.js", status: 200},
		{method: "GET", path: "/docs", status: 404},
		{method: "GET", path: "/docs/guide.txt", status: 200},
		{method: "GET", path: "/missing.html", status: 404},
		{method: "GET", path: "/v1/readme.txt", status: 200},
		{method: "GET", path: "/v1/other", status: 404},
		{method: "GET", path: "/v1/chat/completions/more", status: 404},
		{method: "POST", path: "/v1/completions", body: `{"prompt":"hi"}`, status: 404},
		{method: "GET", path: "/chat", status: 404},
		{method: "GET", path: "/healthz", status: 404},
		{method: "GET", path: "/admin/", status: 401},
		{method: "GET", path: "/admin/", password: "wrong", status: 401},
		{method: "GET", path: "/admin/", password: password, status: 200},
		{method: "GET", path: "/backend/items?page=2", status: 200},
		{method: "POST", path: "/backend/items", body: `{"name":"pen"}`, status: 200},
		{method: "DELETE", path: "/backend/items/7", status: 200},
		{method: "GET", path: "/api/users", status: 200},
		{method: "GET", path: "/api/agentsx", status: 200},
		{method: "PUT", path: "/api/configuration", body: "x", status: 200},
	}
	for _, r := range unchanged {
		t.Run("unchanged "+r.method+" "+r.path+" "+r.password, func(t *testing.T) {
			want := r.send(t, "http://"+before)
			assert.Equal(t, r.status, want.Status, "the operator's site: %s", want.Body)
			got := r.send(t, "http://"+after)
			assert.Equal(t, want, got)
		})
	}

	claimed := []struct {
		req  dropInRequest
		says string // in the module's answer
	}{
		{dropInRequest{method: "GET", path: "/v1/models"}, `"agent"`},
		{dropInRequest{method: "GET", path: "/models"}, `"agent"`},
		{dropInRequest{method: "GET", path: "/health"}, `"status":"ok"`},
		{dropInRequest{method: "POST", path: "/v1/chat/completions", body: `{"model":"agent","messages":"hi"}`}, `"invalid_request_error"`},
		{dropInRequest{method: "GET", path: "/api/providers"}, `"missing_api_key"`},
	}
	for _, c := range claimed {
		t.Run("claimed "+c.req.method+" "+c.req.path, func(t *testing.T) {
			want := c.req.send(t, "http://"+before)
			got := c.req.send(t, "http://"+after)
			assert.NotEqual(t, want, got)
			assert.Contains(t, got.Body, c.says)
			assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
		})
	}
}
