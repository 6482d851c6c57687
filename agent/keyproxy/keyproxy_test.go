package keyproxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type upstreamSeen struct {
	mu     sync.Mutex
	key    string
	auth   string
	path   string
	called int
}

func newUpstream(t *testing.T, seen *upstreamSeen, release <-chan struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.mu.Lock()
		seen.key, seen.auth, seen.path = r.Header.Get("X-Api-Key"), r.Header.Get("Authorization"), r.URL.Path
		seen.called++
		seen.mu.Unlock()
		if r.Header.Get("X-Api-Key") != "sk-real" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: message_start\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		if release != nil {
			<-release
		}
		_, _ = io.WriteString(w, "event: message_stop\ndata: {}\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func startProxy(t *testing.T, upstream string, statuses *[]int) *Proxy {
	var mu sync.Mutex
	p, err := New(upstream, func(s int) {
		mu.Lock()
		defer mu.Unlock()
		*statuses = append(*statuses, s)
	})
	require.NoError(t, err)
	require.NoError(t, p.Start())
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestProxyInjectsKey(t *testing.T) {
	tests := []struct {
		name       string
		header     string
		value      func(p *Proxy) string
		key        string
		wantStatus int
		wantCalled bool
	}{
		{"placeholder in x-api-key", "X-Api-Key", func(p *Proxy) string { return p.Placeholder() }, "sk-real", 200, true},
		{"placeholder as bearer", "Authorization", func(p *Proxy) string { return "Bearer " + p.Placeholder() }, "sk-real", 200, true},
		{"wrong placeholder", "X-Api-Key", func(*Proxy) string { return "sk-ant-guess" }, "sk-real", 401, false},
		{"no key set", "X-Api-Key", func(p *Proxy) string { return p.Placeholder() }, "", 401, false},
		{"upstream rejects key", "X-Api-Key", func(p *Proxy) string { return p.Placeholder() }, "sk-wrong", 401, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := &upstreamSeen{}
			up := newUpstream(t, seen, nil)
			var statuses []int
			p := startProxy(t, up.URL+"/prefix", &statuses)
			if tt.key != "" {
				p.SetKey(tt.key)
			}
			req, err := http.NewRequest(http.MethodPost, p.URL()+"/v1/messages?beta=true", strings.NewReader(`{}`))
			require.NoError(t, err)
			req.Header.Set(tt.header, tt.value(p))
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			seen.mu.Lock()
			defer seen.mu.Unlock()
			assert.Equal(t, tt.wantCalled, seen.called > 0)
			if tt.wantCalled {
				assert.Equal(t, tt.key, seen.key, "the real key replaces the placeholder")
				assert.Empty(t, seen.auth, "no Authorization header leaks upstream")
				assert.Equal(t, "/prefix/v1/messages", seen.path, "the upstream's path prefix is kept")
				assert.Equal(t, []int{tt.wantStatus}, statuses)
			}
			if tt.name == "no key set" {
				assert.Equal(t, []int{401}, statuses, "a missing key is reported like an upstream 401")
			}
			if tt.wantStatus == 401 {
				assert.NotContains(t, string(body), "sk-real")
			}
		})
	}
}

func TestProxyStreamsWithoutBuffering(t *testing.T) {
	seen := &upstreamSeen{}
	release := make(chan struct{})
	up := newUpstream(t, seen, release)
	var statuses []int
	p := startProxy(t, up.URL, &statuses)
	p.SetKey("sk-real")
	req, _ := http.NewRequest(http.MethodPost, p.URL()+"/v1/messages", strings.NewReader(`{}`))
	req.Header.Set("X-Api-Key", p.Placeholder())
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		l, _ := r.ReadString('\n')
		first <- l
	}()
	select {
	case l := <-first:
		assert.Equal(t, "event: message_start\n", l, "the first event arrives while the upstream is still streaming")
	case <-time.After(5 * time.Second):
		t.Fatal("first event was buffered by the proxy")
	}
	close(release)
	rest, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Contains(t, string(rest), "message_stop")
}

func TestProxyUpstreamDown(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	url := up.URL
	up.Close()
	var statuses []int
	p := startProxy(t, url, &statuses)
	p.SetKey("sk-real")
	req, _ := http.NewRequest(http.MethodPost, p.URL()+"/v1/messages", strings.NewReader(`{}`))
	req.Header.Set("X-Api-Key", p.Placeholder())
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, string(body), `"type":"api_error"`)
	assert.Contains(t, string(body), "could not reach the Anthropic API")
}

func TestNewRejectsBadUpstream(t *testing.T) {
	for _, u := range []string{"", "api.anthropic.com", "ftp://x", "http://"} {
		_, err := New(u, nil)
		assert.Error(t, err, u)
	}
}

// TestProxyLargeBodiesWithStreamingResponses guards against a race in
// streaming the request body through: net/http closes the unread rest of
// an incoming body once response headers are flushed, which used to make
// the transport close the upstream connection mid-response.
func TestProxyLargeBodiesWithStreamingResponses(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 20; i++ {
			_, _ = io.WriteString(w, "data: {\"n\":"+strings.Repeat("1", 10)+"}\n\n")
			w.(http.Flusher).Flush()
		}
		_, _ = io.WriteString(w, "data: done "+strings.Repeat("x", int(n%7))+"\n\n")
	}))
	t.Cleanup(up.Close)
	var statuses []int
	p := startProxy(t, up.URL, &statuses)
	p.SetKey("sk-real")
	body := strings.Repeat("b", 256<<10)
	for i := 0; i < 50; i++ {
		req, _ := http.NewRequest(http.MethodPost, p.URL()+"/v1/messages", strings.NewReader(body))
		req.Header.Set("X-Api-Key", p.Placeholder())
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err, "iteration %d", i)
		require.Contains(t, string(got), "data: done", "iteration %d: the stream was cut", i)
	}
}

func TestProxyWarmUpAnswersItself(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		header   string
		status   int
		contains []string
	}{
		{"streamed", `{"model":"claude-x","stream":true,"messages":[]}`, "", 200,
			[]string{"event: message_start", `"text":"OK","type":"text_delta"`, `"stop_reason":"end_turn"`, "event: message_stop"}},
		{"not streamed", `{"model":"claude-x","messages":[]}`, "", 200, []string{`"text":"OK"`, `"model":"claude-x"`}},
		{"wrong placeholder still refused", `{"stream":true}`, "sk-ant-guess", 401, []string{"authentication_error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := &upstreamSeen{}
			up := newUpstream(t, seen, nil)
			var statuses []int
			p := startProxy(t, up.URL, &statuses)
			p.SetWarmUp(true)
			req, err := http.NewRequest(http.MethodPost, p.URL()+"/v1/messages", strings.NewReader(tt.body))
			require.NoError(t, err)
			key := tt.header
			if key == "" {
				key = p.Placeholder()
			}
			req.Header.Set("X-Api-Key", key)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, tt.status, resp.StatusCode, string(body))
			for _, c := range tt.contains {
				assert.Contains(t, string(body), c)
			}
			seen.mu.Lock()
			assert.Zero(t, seen.called, "nothing goes upstream in warm-up mode")
			seen.mu.Unlock()
			assert.Empty(t, statuses, "warm-up answers are not upstream statuses")
		})
	}
}
