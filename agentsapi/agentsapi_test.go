package agentsapi

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/configs"
	"github.com/agcluster/caddy-agcluster/openai"
)

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc := OpenAPI()
	paths := doc["paths"].(map[string]any)
	for _, r := range Routes() {
		p := regexp.MustCompile(`\{([a-z]+)\.\.\.\}`).ReplaceAllString(r.Pattern, "{$1}")
		item, ok := paths[p].(map[string]any)
		require.True(t, ok, "path %s", p)
		op, ok := item[strings.ToLower(r.Method)].(map[string]any)
		require.True(t, ok, "%s %s", r.Method, p)
		assert.NotEmpty(t, op["summary"])
		if strings.Contains(p, "{") {
			assert.NotEmpty(t, op["parameters"], "%s %s declares its path parameters", r.Method, p)
		}
	}
	assert.Len(t, Routes(), 17)
}

func TestRefusesTraversalBeforeRouting(t *testing.T) {
	called := false
	h := New(Options{Configs: configs.New(),
		Identify: func(*http.Request, string) (Caller, *openai.Error) {
			called = true
			return Caller{}, openai.MissingAPIKey()
		}})
	for _, p := range []string{
		"/api/agents/sessions/x/files/../../../etc/passwd",
		"/api/agents/sessions/x/files//etc/passwd",
		"/api/agents/sessions/x/files/./a",
		"/api/agents/sessions/x/files/a%00b",
	} {
		req := httptest.NewRequest(http.MethodGet, "http://gw"+p, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, http.StatusBadRequest, rec.Code, p)
		assert.Contains(t, rec.Body.String(), `"type":"invalid_request_error"`, p)
	}
	assert.False(t, called, "refused before identifying anyone")
}

func TestHandles(t *testing.T) {
	for p, want := range map[string]bool{
		"/api/agents/launch": true, "/api/agents/sessions/x/files/a": true, "/api/configs": true,
		"/api/configs/code-assistant": true, "/api/agentsx": false, "/v1/chat/completions": false, "/api/other": false,
	} {
		assert.Equal(t, want, Handles(p), p)
	}
}

func TestEscapePath(t *testing.T) {
	assert.Equal(t, "a/b%20c/d%3F.txt", escapePath("a/b c/d?.txt"))
}
