package emuhttp_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/emuhttp"
)

func TestListen(t *testing.T) {
	text := func(s string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, s) })
	}
	srv, err := emuhttp.Listen("", text("api"), "", text("proxy"))
	require.NoError(t, err)
	for url, want := range map[string]string{srv.APIURL: "api", srv.ProxyURL: "proxy"} {
		res, err := http.Get(url)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		assert.Equal(t, want, string(body))
	}
	srv.Close()
	_, err = http.Get(srv.APIURL)
	assert.Error(t, err, "closed")

	_, err = emuhttp.Listen("256.0.0.1:0", text("api"), "", text("proxy"))
	assert.ErrorContains(t, err, "listen for the api")
	var none *emuhttp.Servers
	none.Close()
}

func TestJSON(t *testing.T) {
	tests := []struct {
		name, body string
		want       map[string]int
		wantErr    bool
	}{
		{name: "object", body: `{"a":1}`, want: map[string]int{"a": 1}},
		{name: "empty body keeps v", body: " \n", want: map[string]int{"keep": 7}},
		{name: "bad", body: `{"a":`, want: map[string]int{"keep": 7}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := map[string]int{"keep": 7}
			if tt.name == "object" {
				v = nil
			}
			err := emuhttp.ReadJSON(httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body)), &v)
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, v)
		})
	}
	w := httptest.NewRecorder()
	emuhttp.WriteJSON(w, http.StatusCreated, map[string]string{"x": "y"})
	assert.Equal(t, http.StatusCreated, w.Code)
	assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
	assert.JSONEq(t, `{"x":"y"}`, w.Body.String())
}
