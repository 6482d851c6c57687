package e2e

import (
	"crypto/sha256"
	"encoding/hex"
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

// rateLimitedSite is the Caddyfile site on addr: agcluster_owner,
// then rate_limit with one zone keyed on {agcluster.owner} (named zone,
// events per window), then agcluster. extra goes into the rate_limit
// block.
func rateLimitedSite(addr, zone string, events int, window, extra string) string {
	return fmt.Sprintf(`http://%s {
	route {
		agcluster_owner
		rate_limit {
			zone %s {
				key    {agcluster.owner}
				events %d
				window %s
			}
			%s
		}
		agcluster
	}
}
`, addr, zone, events, window, extra)
}

// ownerHash is the owner id of a bearer key, as the gateway derives it.
func ownerHash(key string) string {
	sum := sha256.Sum256([]byte("key:" + key))
	return hex.EncodeToString(sum[:])
}

// TestRateLimitPerOwner: the Caddyfile with the xcaddy build's
// rate_limit. An owner's N turns pass and the next is refused the way
// OpenAI refuses (openai-go gets a typed 429 rate_limit_error with a
// Retry-After delay) without reaching an agent; another owner is
// unaffected; the limiter's distributed state in Caddy's storage names
// owners by their hash and holds no API key (nor do Caddy's logs). On a
// zone with a short window openai-go backs off for the Retry-After delay
// and its retry passes.
func TestRateLimitPerOwner(t *testing.T) {
	e := setup(t)
	const turns = 2
	const alice, bob = "sk-ant-test-ratelimit-alice", "sk-ant-test-ratelimit-bob"
	limited, retried := testenv.FreeAddr(t), testenv.FreeAddr(t)
	storage := t.TempDir()
	g := e.startGatewayWith(t, gatewayOptions{
		global: "storage file_system " + storage,
		sites: rateLimitedSite(limited, "per_owner", turns, "1m", "distributed {\n\t\t\t\twrite_interval 100ms\n\t\t\t}") +
			rateLimitedSite(retried, "models_per_owner", 1, "2s", ""),
	})
	client := func(addr, key string, opts ...option.RequestOption) openai.Client {
		return openai.NewClient(append([]option.RequestOption{
			option.WithBaseURL("http://" + addr + "/v1"), option.WithAPIKey(key), option.WithMaxRetries(0),
		}, opts...)...)
	}
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Within the limit."}})

	for i := range turns {
		got, err := streamed(t, client(limited, alice), user(fmt.Sprintf("Turn %d.", i)), conv("c-limit"))
		require.NoError(t, err, "turn %d is within the limit", i)
		assert.Equal(t, "Within the limit.", got.Choices[0].Message.Content)
	}
	agents := len(e.containers(t, g.runID))
	e.resetRequests(t)

	_, err := streamed(t, client(limited, alice), user("One turn too many."), conv("c-limit"))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
	assert.Equal(t, "rate_limit_error", apiErr.Type)
	assert.Equal(t, "rate_limit_exceeded", apiErr.Code)
	retryAfter, convErr := strconv.Atoi(apiErr.Response.Header.Get("Retry-After"))
	require.NoError(t, convErr, "Retry-After is a number of seconds")
	assert.Positive(t, retryAfter)
	t.Logf("refused with Retry-After %d s: %s", retryAfter, apiErr.Message)
	assert.LessOrEqual(t, retryAfter, 60, "within the zone's window")
	assert.Contains(t, apiErr.Message, "retry after "+strconv.Itoa(retryAfter)+" s")
	assert.Empty(t, e.cliRequests(t), "the refused turn reached no agent")
	assert.Len(t, e.containers(t, g.runID), agents)

	got, err := streamed(t, client(limited, bob), user("Bob's first turn."), conv("c-limit"))
	require.NoError(t, err, "another owner is unaffected")
	assert.Equal(t, "Within the limit.", got.Choices[0].Message.Content)

	t.Run("no raw key in what the limiter holds", func(t *testing.T) {
		state := filepath.Join(storage, "rate_limit", "instances")
		var held string
		// The limiter writes its zones' keys every write_interval.
		testenv.Eventually(t, 30*time.Second, func() bool {
			held = readAll(t, state)
			return strings.Contains(held, ownerHash(alice)) && strings.Contains(held, ownerHash(bob))
		}, "the limiter's state never named both owners by their hash")
		for _, key := range []string{alice, bob, "sk-ant-test-ratelimit"} {
			assert.NotContains(t, held, key)
			assert.NotContains(t, readAll(t, storage), key, "nothing in Caddy's storage holds a key")
			assert.NotContains(t, g.logs.String(), key, "nor do Caddy's logs")
		}
	})

	t.Run("openai-go backs off for Retry-After and retries", func(t *testing.T) {
		var mu sync.Mutex
		var statuses []int
		var times []time.Time
		recording := option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			resp, err := next(r)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				statuses = append(statuses, resp.StatusCode)
				times = append(times, time.Now())
			}
			return resp, err
		})
		c := client(retried, alice, option.WithMaxRetries(2), recording)
		_, err := c.Models.List(ctxFor(t, 30*time.Second))
		require.NoError(t, err)
		_, err = c.Models.List(ctxFor(t, 30*time.Second))
		require.NoError(t, err, "the retry after the delay passed")
		require.Equal(t, []int{200, 429, 200}, statuses)
		waited := times[2].Sub(times[1])
		t.Logf("openai-go waited %s between the 429 and its retry", waited.Round(time.Millisecond))
		assert.GreaterOrEqual(t, waited, time.Second, "it waited for the Retry-After delay, not its own 0.5 s back-off")
	})
}

// TestRateLimitOpenAINode: the official openai npm package backs off a
// per-owner rate limit's refusal for its Retry-After delay, not its own
// short back-off, and its retry passes.
func TestRateLimitOpenAINode(t *testing.T) {
	h := openAINode(t)
	e := setup(t)
	retried := testenv.FreeAddr(t)
	e.startGatewayWith(t, gatewayOptions{sites: rateLimitedSite(retried, "models_per_owner", 1, "2s", "")})
	var got struct {
		Statuses []int `json:"statuses"`
		WaitedMS int64 `json:"waited_ms"`
	}
	h.runAt(t, "http://"+retried+"/v1", "sk-ant-test-ratelimit-node", "backoff", "", &got)
	require.Equal(t, []int{200, 429, 200}, got.Statuses)
	assert.GreaterOrEqual(t, got.WaitedMS, int64(1000), "it waited for the Retry-After delay (its own back-off starts at 0.5 s)")
}

// readAll is the content of every file under dir, concatenated.
func readAll(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		data, rerr := os.ReadFile(path)
		if rerr == nil {
			b.Write(data)
		}
		return nil
	})
	return b.String()
}
