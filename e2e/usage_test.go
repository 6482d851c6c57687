package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/usage"
)

// usageReport is GET /api/agents/usage's and /agcluster/usage's answer.
type usageReport struct {
	From    string       `json:"from"`
	To      string       `json:"to"`
	GroupBy string       `json:"group_by"`
	Rows    []usage.Row  `json:"rows"`
	Total   usage.Totals `json:"total"`
}

// usageOf is the caller's usage report for query.
func (g *gateway) usageOf(t *testing.T, key, query string) usageReport {
	t.Helper()
	r := api{t: t, g: g, key: key}.do(http.MethodGet, "/api/agents/usage"+query, nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var rep usageReport
	r.json(t, &rep)
	return rep
}

// adminUsage is everyone's usage report on the admin endpoint.
func (g *gateway) adminUsage(t *testing.T, query string) usageReport {
	t.Helper()
	resp, err := http.Get(g.admin + "/agcluster/usage" + query)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var rep usageReport
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	return rep
}

// meteredScript answers every model call with these usage figures, so
// the recorded usage can be checked against the calls the mock saw.
var meteredUsage = map[string]any{"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 50}

func meteredScript(text string) anthropictest.Script {
	return anthropictest.Script{Default: &anthropictest.Response{Text: text, Usage: meteredUsage}}
}

// quotaRefusal requires err to be a 429 insufficient_quota naming limit
// and the next UTC midnight, and returns its message.
func quotaRefusal(t *testing.T, err error, limit string) string {
	t.Helper()
	apiErr := apiError(t, err)
	assert.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
	assert.Equal(t, "insufficient_quota", apiErr.Type)
	assert.Equal(t, "insufficient_quota", apiErr.Code)
	assert.Contains(t, apiErr.Message, limit)
	tomorrow := time.Now().UTC().Add(24 * time.Hour).Format("2006-01-02")
	today := time.Now().UTC().Format("2006-01-02")
	// Near midnight the test may straddle two days; the reset is the
	// midnight after the check either way.
	assert.Regexp(t, regexp.MustCompile(`resets at (`+tomorrow+`|`+today+`)T00:00:00Z`), apiErr.Message)
	return apiErr.Message
}

// TestUsageAcrossRestartAndQuotas records a turn's usage, restarts Caddy
// on the same store, and then enforces quotas set from what was recorded:
// the gateway-wide tokens quota refuses the owner who reached it (after
// the turn that went past it finished) and no one else; a configuration's
// own conversations quota refuses a second conversation of that
// configuration only. The store file holds neither key nor prompt text.
func TestUsageAcrossRestartAndQuotas(t *testing.T) {
	e := setup(t)
	store := filepath.Join(t.TempDir(), "usage.db")
	const aliceKey, bobKey = "sk-ant-test-usage-alice-7f3a", "sk-ant-test-usage-bob-91c2"
	const prompt = "Please remember the violet pangolin."
	g1 := e.startGatewayWith(t, gatewayOptions{extraApp: "usage_store " + store})
	alice := g1.client(aliceKey)

	e.script(t, meteredScript("Noted."))
	got, err := streamed(t, alice, user(prompt), conv("c-usage"))
	require.NoError(t, err)
	require.Equal(t, "Noted.", got.Choices[0].Message.Content)
	calls := int64(len(e.cliRequests(t)))
	require.Positive(t, calls)

	rep := g1.usageOf(t, aliceKey, "")
	require.Len(t, rep.Rows, 1, "one day")
	first := rep.Total
	assert.Equal(t, time.Now().UTC().Format("2006-01-02"), rep.Rows[0].Group)
	assert.Equal(t, 1000*calls, first.InputTokens)
	assert.Equal(t, 200*calls, first.OutputTokens)
	assert.Equal(t, 300*calls, first.CacheReadTokens)
	assert.Equal(t, 50*calls, first.CacheWriteTokens)
	assert.Positive(t, first.CostUSD, "the CLI's cost estimate")
	assert.Equal(t, int64(1), first.Turns)
	assert.Equal(t, int64(1), first.Conversations)
	assert.Positive(t, first.TurnSeconds)
	assert.GreaterOrEqual(t, first.AgentSeconds, first.TurnSeconds, "the agent was held at least as long as the turn ran")
	byConfig := g1.usageOf(t, aliceKey, "?group_by=config")
	require.Len(t, byConfig.Rows, 1)
	assert.Equal(t, "agent", byConfig.Rows[0].Group)
	byProvider := g1.usageOf(t, aliceKey, "?group_by=provider")
	require.Len(t, byProvider.Rows, 1)
	assert.Equal(t, "docker", byProvider.Rows[0].Group)
	assert.Empty(t, g1.usageOf(t, bobKey, "").Rows, "owner-scoped: Bob sees none of Alice's usage")
	r := api{t: t, g: g1, key: aliceKey}.do(http.MethodGet, "/api/agents/usage?group_by=owner", nil, "")
	assert.Equal(t, http.StatusBadRequest, r.status, "owners are the admin API's")
	metrics := g1.metrics(t)
	assert.Contains(t, metrics, fmt.Sprintf(`caddy_agcluster_tokens_total{config="agent",kind="output",provider="docker"} %d`, 200*calls))
	assert.Contains(t, metrics, `caddy_agcluster_cost_usd_total{config="agent",provider="docker"}`)
	g1.stop(t)

	// The same store under a new Caddy: the usage is still there, and the
	// quotas are set from it: Alice has one token left today.
	quotas := fmt.Sprintf("usage_store %s\n\t\towner_quota {\n\t\t\ttokens_per_day %d\n\t\t}", store, first.Tokens()+1)
	g2 := e.startGatewayWith(t, gatewayOptions{extraApp: quotas})
	assert.Equal(t, first, g2.usageOf(t, aliceKey, "").Total, "usage survives the restart")
	everyone := g2.adminUsage(t, "?group_by=owner")
	require.Len(t, everyone.Rows, 1)
	assert.Len(t, everyone.Rows[0].Group, 12, "owners as hash prefixes")
	assert.Equal(t, first.Tokens(), everyone.Total.Tokens())

	alice = g2.client(aliceKey)
	e.script(t, meteredScript("Still under, barely."))
	got, err = streamed(t, alice, user("One more, please."), conv("c-usage"))
	require.NoError(t, err, "under the quota the turn runs, and is not cut off when it goes past")
	assert.Equal(t, "Still under, barely.", got.Choices[0].Message.Content)
	assert.Greater(t, g2.usageOf(t, aliceKey, "").Total.Tokens(), first.Tokens()+1, "counted after it ran")

	e.resetRequests(t)
	_, err = alice.Chat.Completions.New(ctxFor(t, time.Minute), user("And another."), conv("c-usage"))
	msg := quotaRefusal(t, err, "tokens_per_day")
	assert.Contains(t, msg, "your daily quota:")
	_, err = alice.Chat.Completions.New(ctxFor(t, time.Minute), user("A new conversation then."), conv("c-usage-new"))
	quotaRefusal(t, err, "tokens_per_day")
	assert.Empty(t, e.cliRequests(t), "refused turns reach no agent")

	bob := g2.client(bobKey)
	_, err = streamed(t, bob, user("Bob is unaffected."), conv("c-bob-1"))
	require.NoError(t, err, "another owner is unaffected")
	assert.Contains(t, g2.metrics(t), `caddy_agcluster_quota_refusals_total{limit="tokens_per_day"} 2`)
	g2.stop(t)

	// code-assistant's own quota: one conversation per owner per day;
	// the other configurations have none.
	g3 := e.startGatewayWith(t, gatewayOptions{extraApp: "usage_store " + store + "\n\t\towner_quota code-assistant {\n\t\t\tconversations 1\n\t\t}"})
	bob = g3.client(bobKey)
	ca := user("First code-assistant conversation.")
	ca.Model = "code-assistant"
	_, err = streamed(t, bob, ca, conv("c-bob-ca-1"))
	require.NoError(t, err)
	_, err = streamed(t, bob, ca, conv("c-bob-ca-1"))
	require.NoError(t, err, "the conversation already started goes on")
	before := e.agentCount(t, g3)
	_, err = bob.Chat.Completions.New(ctxFor(t, 2*time.Minute), ca, conv("c-bob-ca-2"))
	msg = quotaRefusal(t, err, "conversations")
	assert.Contains(t, msg, `model "code-assistant"`)
	assert.Equal(t, before, e.agentCount(t, g3), "no agent was made for the refused conversation")
	_, err = streamed(t, bob, user("Another agent conversation is fine."), conv("c-bob-2"))
	require.NoError(t, err, "other configurations are not limited by code-assistant's quota")
	assert.Contains(t, g3.metrics(t), `caddy_agcluster_quota_refusals_total{limit="conversations"} 1`)
	g3.stop(t)

	data, err := os.ReadFile(store)
	require.NoError(t, err)
	for _, secret := range []string{aliceKey, bobKey, "sk-ant-test", "pangolin", "Please remember", "Noted.", "Bob is unaffected"} {
		assert.False(t, strings.Contains(string(data), secret), "the store holds %q", secret)
	}
	assert.Contains(t, string(data), "code-assistant", "the store is the one written (it names configurations)")
}

// TestQuotaNeverCutsAToolTurn: a turn that waits for the client's function
// results is already running, so its results are taken even when the
// owner reached a quota meanwhile; the owner's next turn is refused.
func TestQuotaNeverCutsAToolTurn(t *testing.T) {
	e := setup(t)
	g := e.startGatewayWith(t, gatewayOptions{extraApp: "usage_store " + filepath.Join(t.TempDir(), "usage.db") +
		"\n\t\towner_quota {\n\t\t\ttokens_per_day 1\n\t\t}"})
	sc := weatherScript()
	sc.Default = &anthropictest.Response{Text: "Pushed past the quota.", Usage: meteredUsage}
	e.script(t, sc)
	alice := g.client("sk-ant-test-quota-tools")

	params := weatherParams(openai.UserMessage(weatherPrompt))
	first, sum := completeChat(t, alice, params, false, conv("c-tools"))
	require.Equal(t, "tool_calls", sum.FinishReason, "%+v", sum)
	_, err := streamed(t, alice, user("Something else meanwhile."), conv("c-other"))
	require.NoError(t, err, "under the quota")

	msg := first.Choices[0].Message
	call := msg.ToolCalls[0]
	params.Messages = append(params.Messages, msg.ToParam(), openai.ToolMessage(weatherResult(t, call.Function.Arguments), call.ID))
	_, final := completeChat(t, alice, params, false, conv("c-tools"))
	assert.Equal(t, "stop", final.FinishReason)
	assert.True(t, strings.HasSuffix(strings.TrimSpace(final.Content), weatherAnswer), "the waiting turn finished: %q", final.Content)

	_, err = alice.Chat.Completions.New(ctxFor(t, time.Minute), user("And now?"), conv("c-tools"))
	quotaRefusal(t, err, "tokens_per_day")
}
