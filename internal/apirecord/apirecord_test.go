package apirecord_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/apirecord"
)

func TestRecorder(t *testing.T) {
	rec := apirecord.New(4)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /things", func(w http.ResponseWriter, r *http.Request) {
		apirecord.SetRoute(r, "POST /things")
		b := make([]byte, 2)
		_, _ = io.ReadFull(r.Body, b) // the recorder reads the rest
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		apirecord.SetRoute(r, "GET /ok")
		_, _ = w.Write([]byte("ok"))
	})
	srv := httptest.NewServer(rec.Handler(mux))
	defer srv.Close()

	tests := []struct {
		method, path, body string
		route              string
		status             int
		kept               string
		size               int64
	}{
		{method: http.MethodPost, path: "/things?x=1", body: "abcdefgh", route: "POST /things", status: http.StatusCreated, kept: "abcd", size: 8},
		{method: http.MethodGet, path: "/ok", route: "GET /ok", status: http.StatusOK},
		{method: http.MethodGet, path: "/nowhere", route: "", status: http.StatusNotFound},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
	}
	reqs := rec.Requests()
	require.Len(t, reqs, len(tests))
	for i, tt := range tests {
		got := reqs[i]
		assert.Equal(t, tt.method, got.Method)
		assert.Equal(t, tt.path, got.URI)
		assert.Equal(t, tt.route, got.Route)
		assert.Equal(t, tt.status, got.Status)
		assert.Equal(t, tt.kept, string(got.Body))
		assert.Equal(t, tt.size, got.BodySize)
	}
	assert.Equal(t, map[string]int{"POST /things": 1, "GET /ok": 1, "": 1}, rec.Calls())
	assert.Equal(t, 3, rec.TotalCalls())

	rec.Proxied("a")
	rec.Proxied("a")
	rec.Proxied("b")
	assert.Equal(t, map[string]int{"a": 2, "b": 1}, rec.ProxiedRequests())

	rec.Reset()
	assert.Empty(t, rec.Requests())
	assert.Empty(t, rec.Calls())
	assert.Empty(t, rec.ProxiedRequests())
}
