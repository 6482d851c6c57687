package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// tlsSite is caddyfile-examples/librechat-tls.Caddyfile's site (encode,
// task_models, tools summary) on localhost with Caddy's internal CA.
const tlsSite = `localhost {
	tls internal
	encode zstd gzip
	agcluster {
		task_models gpt-4o-mini claude-haiku-4-5
		tools summary
	}
}
`

// caddyRoots is a pool with the root certificate of Caddy's local CA in
// the data directory of gateway g (its HOME and XDG_DATA_HOME).
func caddyRoots(t *testing.T, g *gateway) *x509.CertPool {
	t.Helper()
	root := filepath.Join(filepath.Dir(g.cfgPath), "caddy", "pki", "authorities", "local", "root.crt")
	pem, err := os.ReadFile(root)
	require.NoError(t, err, "Caddy's local CA root")
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	return pool
}

// TestTLSHTTP2AndEncode: the LibreChat example's site on localhost with
// `tls internal`, bound to 127.0.0.1 on high ports. openai-go, trusting
// only Caddy's local root CA, streams a turn over HTTP/2 and over
// HTTP/1.1 through `encode zstd gzip` (the stream is gzip-encoded), and
// the events arrive as the mock produces them: the first content chunk is
// in the client's hands while the mock is still sending the answer.
func TestTLSHTTP2AndEncode(t *testing.T) {
	e := setup(t)
	httpAddr, httpsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	port := func(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }
	g := e.startGatewayWith(t, gatewayOptions{
		global: fmt.Sprintf("default_bind 127.0.0.1\n\thttp_port %s\n\thttps_port %s\n\tskip_install_trust",
			port(httpAddr), port(httpsAddr)),
		sites: tlsSite,
	})
	base := "https://localhost:" + port(httpsAddr)
	roots := caddyRoots(t, g)

	// 12 deltas, 150 ms apart: each one's text is the time the mock sent it.
	const deltas = 12
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{
		Text: strings.Repeat("ab", deltas), ChunkChars: 2, ChunkDelayMS: 150, StampDeltas: true,
	}})
	for _, tc := range []struct {
		name  string
		http2 bool
		proto string
	}{
		{"HTTP/2", true, "HTTP/2.0"},
		{"HTTP/1.1", false, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, Protocols: new(http.Protocols)}
			transport.Protocols.SetHTTP1(!tc.http2)
			transport.Protocols.SetHTTP2(tc.http2)
			t.Cleanup(transport.CloseIdleConnections)
			hc := &http.Client{Transport: transport}
			testenv.Eventually(t, 30*time.Second, func() bool {
				resp, err := hc.Get(base + "/health")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}, "no TLS answer on %s", base)

			var mu sync.Mutex
			var resps []*http.Response
			recording := option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
				resp, err := next(r)
				if err == nil {
					mu.Lock()
					resps = append(resps, resp)
					mu.Unlock()
				}
				return resp, err
			})
			c := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("sk-ant-test-tls"),
				option.WithHTTPClient(hc), option.WithMaxRetries(0), recording)
			e.resetRequests(t)
			s := c.Chat.Completions.NewStreaming(ctxFor(t, 2*time.Minute), user("Stream over "+tc.name+"."), conv("c-tls-"+tc.name))
			var stamps, arrivals []time.Time
			first := true
			for s.Next() {
				chunk := s.Current()
				if len(chunk.Choices) == 0 || chunk.Choices[0].Delta.Content == "" {
					continue
				}
				now := time.Now()
				if first {
					// The hook: the mock's record of the CLI's request is
					// not done while it is still pacing out deltas.
					first = false
					reqs := e.cliRequests(t)
					require.NotEmpty(t, reqs)
					assert.False(t, reqs[len(reqs)-1].Done, "the first chunk arrived only after the mock had sent the whole answer")
				}
				for _, f := range strings.Fields(chunk.Choices[0].Delta.Content) {
					us, err := strconv.ParseInt(f, 10, 64)
					require.NoError(t, err, "a delta stamp: %q", f)
					stamps, arrivals = append(stamps, time.UnixMicro(us)), append(arrivals, now)
				}
			}
			require.NoError(t, s.Err())
			assert.Len(t, stamps, deltas, "every delta arrived")
			require.NotEmpty(t, resps)
			assert.Equal(t, tc.proto, resps[0].Proto)
			assert.True(t, resps[0].Uncompressed, "the stream came gzip-encoded (encode zstd gzip) and was decoded")
			var lat []time.Duration
			for i := range stamps {
				lat = append(lat, arrivals[i].Sub(stamps[i]))
			}
			t.Logf("%s: %d deltas sent %s apart; latency from the mock to openai-go: median %.1f ms, max %s",
				resps[0].Proto, len(stamps), 150*time.Millisecond, testenv.MedianMS(lat), maxDuration(lat))
		})
	}
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(time.Millisecond)
}
