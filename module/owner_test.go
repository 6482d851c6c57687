package module

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/caddytest"
)

// ownerRequest is a request prepared as Caddy's server prepares one, with
// the given bearer key ("" for none).
func ownerRequest(path, key string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://gw"+path, nil)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), nil, &caddyhttp.Server{})
}

// TestOwnerPlaceholderIsTheSessionOwner: {agcluster.owner}, read by a
// handler after agcluster_owner, is the owner id the agcluster handler
// gives the same request (the bearer key's hash, the operator key's hash,
// or the hash of an owner placeholder set by a handler in between), and
// never the key; a request without an owner gets "".
func TestOwnerPlaceholderIsTheSessionOwner(t *testing.T) {
	const key = "sk-ant-raw-secret"
	tests := []struct {
		name   string
		owner  string // the owner setting of both handlers
		apiKey string // their api_key setting
		key    string // the request's bearer key
		user   string // {http.auth.user.id}, set after agcluster_owner ran
		empty  bool   // no owner
	}{
		{name: "bearer key", key: key},
		{name: "operator key", apiKey: "sk-ant-operator"},
		{name: "authenticated user", owner: "{http.auth.user.id}", key: key, user: "alice"},
		{name: "no key", empty: true},
		{name: "owner placeholder empty", owner: "{http.auth.user.id}", key: key, empty: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &OwnerHandler{Owner: tc.owner, APIKey: tc.apiKey, logger: zap.NewNop()}
			r := ownerRequest("/v1/chat/completions", tc.key)
			var got string
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				repl := replacerOf(r)
				if tc.user != "" {
					repl.Set("http.auth.user.id", tc.user) // as basic_auth does
				}
				v, ok := repl.Get(OwnerPlaceholder)
				require.True(t, ok, "the placeholder is known")
				got = v.(string)
				return nil
			})
			require.NoError(t, o.ServeHTTP(httptest.NewRecorder(), r, next))
			if tc.empty {
				assert.Empty(t, got)
				return
			}
			h := &Handler{Owner: tc.owner, APIKey: tc.apiKey}
			caller, oerr := h.identify(r, "")
			require.Nil(t, oerr)
			assert.Equal(t, caller.Owner, got, "the same owner id as the agcluster handler's")
			assert.Len(t, got, 64)
			assert.NotContains(t, got, "sk-ant")
		})
	}
}

// TestOwnerRendersErrors: an error returned by the handlers after
// agcluster_owner on the API's paths is answered in OpenAI's shape with
// the headers they set; on other paths, and for errors that are not
// handler errors, it is returned to Caddy unchanged with nothing written.
func TestOwnerRendersErrors(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		err        error
		retryAfter string
		status     int    // 0: the error is returned, nothing written
		typ, code  string // of the OpenAI error
		message    string // part of its message
	}{
		{"rate limited", "/v1/chat/completions", caddyhttp.Error(http.StatusTooManyRequests, nil), "42", 429, "rate_limit_error", "rate_limit_exceeded", "retry after 42 s"},
		{"rate limited without v1", "/chat/completions", caddyhttp.Error(http.StatusTooManyRequests, nil), "7", 429, "rate_limit_error", "rate_limit_exceeded", "retry after 7 s"},
		{"rate limited launch", "/api/agents/launch", caddyhttp.Error(http.StatusTooManyRequests, nil), "3", 429, "rate_limit_error", "rate_limit_exceeded", "retry after 3 s"},
		{"unauthenticated", "/v1/models", caddyhttp.Error(http.StatusUnauthorized, nil), "", 401, "authentication_error", "invalid_api_key", "not authenticated"},
		{"forbidden", "/v1/chat/completions", caddyhttp.Error(http.StatusForbidden, nil), "", 403, "invalid_request_error", "", "Forbidden"},
		{"handler failure", "/v1/chat/completions", caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp 10.0.0.9:80: connection refused")), "", 502, "api_error", "internal_error", "request id"},
		{"other path", "/static/index.html", caddyhttp.Error(http.StatusTooManyRequests, nil), "42", 0, "", "", ""},
		{"not a handler error", "/v1/chat/completions", errors.New("plain"), "", 0, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &OwnerHandler{logger: zap.NewNop()}
			rec := httptest.NewRecorder()
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter) // as rate_limit does
				}
				return tc.err
			})
			err := o.ServeHTTP(rec, ownerRequest(tc.path, "sk-ant-x"), next)
			if tc.status == 0 {
				assert.Equal(t, tc.err, err)
				assert.Empty(t, rec.Body.String())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.status, rec.Code)
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			assert.Equal(t, tc.retryAfter, rec.Header().Get("Retry-After"))
			var body struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
			assert.Equal(t, tc.typ, body.Error.Type)
			if tc.code == "" {
				assert.Nil(t, body.Error.Code)
			} else {
				require.NotNil(t, body.Error.Code)
				assert.Equal(t, tc.code, *body.Error.Code)
			}
			assert.Contains(t, body.Error.Message, tc.message)
			assert.NotContains(t, rec.Body.String(), "10.0.0.9", "no internal detail")
		})
	}
}

// TestClaimsPath: the paths whose errors agcluster_owner renders are
// exactly those the agcluster handler serves.
func TestClaimsPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/v1/chat/completions": true, "/chat/completions": true, "/v1/models": true, "/models": true,
		"/health": true, "/api/agents/launch": true, "/api/providers": true,
		"/": false, "/v1/health": false, "/v1/chat/completions/x": false, "/static/app.js": false, "/api/other": false,
	} {
		assert.Equal(t, want, claimsPath(path), path)
	}
}

func TestOwnerCaddyfile(t *testing.T) {
	caddytest.Unmarshal(t, func() *OwnerHandler { return new(OwnerHandler) }, []caddytest.Case{
		{Name: "bare", Input: "agcluster_owner", WantJSON: `{}`},
		{Name: "options", Input: "agcluster_owner {\n owner {http.auth.user.id}\n api_key {env.K}\n}",
			WantJSON: `{"owner":"{http.auth.user.id}","api_key":"{env.K}"}`},
		{Name: "unknown", Input: "agcluster_owner {\n key x\n}", WantErr: `unknown agcluster_owner subdirective "key"`},
		{Name: "owner twice", Input: "agcluster_owner {\n owner a\n owner b\n}", WantErr: "owner"},
		{Name: "missing value", Input: "agcluster_owner {\n owner\n}", WantErr: "wrong argument count"},
	})
}
