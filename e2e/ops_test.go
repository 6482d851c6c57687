package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// browser starts a headless Chromium with a fresh profile and a
// 1280x800 window, for the test's lifetime.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium is not installed (%v): apt-get install -y chromium (.ci/run does)", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	_, err := chromedp.Run(ctx, chromedp.Navigate("about:blank"))
	require.NoError(t, err, "starting chromium")
	return ctx
}

// TestDashboardInChromium opens the dashboard in a real browser: a
// session launched through the API appears live (SSE), its state turns
// to sleeping when its agent sleeps, and the Stop action removes it. A
// screenshot of the page at 1280x800 goes to the test's temp dir.
func TestDashboardInChromium(t *testing.T) {
	e := setup(t)
	// Launched sessions sleep after 20s without a turn: time enough for
	// the page to show the session awake first.
	g := e.startGatewayWith(t, gatewayOptions{idle: "20s", extraHandler: "dashboard /ops"})
	e.script(t, meteredScript("Dashboard data."))
	const key = "sk-ant-test-dashboard"
	_, err := streamed(t, g.client(key), user("Some usage for the chart."), conv("c-dash-usage"))
	require.NoError(t, err)

	// Mutating actions need the dashboard's own header (CSRF guard).
	resp, err := http.Post(g.url+"/ops/sessions/none/stop", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	req, err := http.NewRequest(http.MethodPost, g.url+"/ops/sessions/none/stop", nil)
	require.NoError(t, err)
	req.Header.Set("X-Agcluster-Dashboard", "1")
	req.Header.Set("Origin", "https://evil.example")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "another origin is refused")

	ctx := browser(t)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 800),
		chromedp.Navigate(g.url+"/ops"),
		chromedp.WaitVisible(chromedp.CSS(`#conn.live`)),
		chromedp.WaitVisible(chromedp.CSS(`#usage-config td`)),
	))

	// Interrupt: a slow turn shows as busy, and the page's Interrupt
	// button ends it.
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{
		Text: strings.Repeat("slowly ", 40) + "THE-END", ChunkChars: 7, ChunkDelayMS: 250}})
	var busyID string
	busyClient := g.client(key)
	stream := busyClient.Chat.Completions.NewStreaming(ctxFor(t, 2*time.Minute), user("Talk slowly."), conv("c-dash-busy"), sessionInto(&busyID))
	require.True(t, stream.Next(), "the slow turn started: %v", stream.Err())
	busyRow := `tr[data-session="` + busyID + `"]`
	require.NoError(t, chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(busyRow+` span[data-state="busy"]`)),
		chromedp.Click(chromedp.CSS(busyRow+` button[data-action="interrupt"]:not([disabled])`)),
	), "the running turn shows as busy and is interrupted from the page")
	var content strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			content.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	assert.NotContains(t, content.String(), "THE-END", "the turn ended early")
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(busyRow+` span[data-state="running"]`))),
		"the interrupted session is free again")

	v := api{t: t, g: g, key: key}.launch(map[string]any{"config_id": "research-agent"})
	row := `tr[data-session="` + v.SessionID + `"]`
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(row+` span[data-state="running"]`))),
		"the launched session appears live")
	cells, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(row)))
	require.NoError(t, err)
	assert.Contains(t, cells, "research-agent")
	assert.Contains(t, cells, "docker")

	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(row+` span[data-state="sleeping"]`))),
		"the session's state turns to sleeping live when its agent sleeps")
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	png := filepath.Join(t.TempDir(), "dashboard.png")
	require.NoError(t, os.WriteFile(png, shot, 0o644))
	t.Logf("screenshot: %s", png)
	if dir := os.Getenv("DASHBOARD_SCREENSHOT_DIR"); dir != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dashboard.png"), shot, 0o644))
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`body`)))
	require.NoError(t, err)
	assert.Contains(t, text, "reachable", "the provider's health")
	assert.Contains(t, text, "\u2014", "a sleeping agent's CPU and memory show as a dash")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(row+` button[data-action="stop"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(row)),
	), "the Stop action removes the session from the page")
	r := api{t: t, g: g, key: key}.do(http.MethodGet, "/api/agents/sessions/"+v.SessionID, nil, "")
	assert.Equal(t, http.StatusNotFound, r.status, "and from the gateway")
	errText, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#error`)))
	require.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(errText))
}

// caddyCmd runs `caddy agcluster args...` and returns its output and
// whether it succeeded.
func caddyCmd(t *testing.T, args ...string) (stdout, stderr string, ok bool) {
	t.Helper()
	cmd := exec.Command(caddyBin(t), append([]string{"agcluster"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

// TestAgclusterCommands runs each `caddy agcluster` command against a
// running Caddy, and against an address where no admin endpoint listens.
func TestAgclusterCommands(t *testing.T) {
	e := setup(t)
	g := e.startGatewayWith(t, gatewayOptions{})
	addr := strings.TrimPrefix(g.admin, "http://")
	const key = "sk-ant-test-commands"
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "For the usage table.", Usage: meteredUsage}})
	var id string
	_, err := streamed(t, g.client(key), user("Hello, commands."), conv("c-cmd"), sessionInto(&id))
	require.NoError(t, err)
	require.NotEmpty(t, id)

	run := func(t *testing.T, args ...string) string {
		t.Helper()
		out, stderr, ok := caddyCmd(t, append(args, "--address", addr)...)
		require.True(t, ok, "caddy agcluster %v failed: %s", args, stderr)
		return out
	}
	t.Run("sessions", func(t *testing.T) {
		out := run(t, "sessions")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 2, out)
		assert.Equal(t, []string{"ID", "OWNER", "CONFIG", "PROVIDER", "STATE", "IDLE", "TURNS"}, strings.Fields(lines[0]))
		f := strings.Fields(lines[1])
		require.Len(t, f, 7, out)
		assert.Equal(t, id, f[0])
		assert.Len(t, f[1], 12, "owner hash prefix")
		assert.Equal(t, []string{"agent", "docker", "running"}, f[2:5])
		assert.Equal(t, "1", f[6])

		var list []map[string]any
		require.NoError(t, json.Unmarshal([]byte(run(t, "sessions", "--json")), &list))
		require.Len(t, list, 1)
		assert.Equal(t, id, list[0]["id"])
	})
	t.Run("session", func(t *testing.T) {
		out := run(t, "session", id)
		assert.Regexp(t, `(?m)^conversation\s+c-cmd$`, out)
		assert.Regexp(t, `(?m)^turns\s+1$`, out)
		_, stderr, ok := caddyCmd(t, "session", "no-such-session", "--address", addr)
		assert.False(t, ok)
		assert.Contains(t, stderr, `no session "no-such-session"`)
	})
	t.Run("pool", func(t *testing.T) {
		assert.Contains(t, run(t, "pool"), "no warm pool configured")
	})
	t.Run("providers", func(t *testing.T) {
		out := run(t, "providers")
		assert.Regexp(t, `(?m)^docker\s+docker\s+true\s+reachable\s+1\s+0\s`, out)
		var list []map[string]any
		require.NoError(t, json.Unmarshal([]byte(run(t, "providers", "--json")), &list))
		require.Len(t, list, 1)
		assert.Equal(t, "reachable", list[0]["health"])
	})
	t.Run("usage", func(t *testing.T) {
		calls := len(e.cliRequests(t))
		require.Positive(t, calls)
		out := run(t, "usage", "--days", "3")
		today := time.Now().UTC().Format("2006-01-02")
		assert.Contains(t, out, "by day")
		assert.Regexp(t, `(?m)^`+today+`\s+1\s+1\s+`+itoa(1000*calls)+`\s+`+itoa(200*calls)+`\s`, out)
		var rep usageReport
		require.NoError(t, json.Unmarshal([]byte(run(t, "usage", "--days", "3", "--group-by", "config", "--json")), &rep))
		require.Len(t, rep.Rows, 1)
		assert.Equal(t, "agent", rep.Rows[0].Group)
		assert.Equal(t, int64(200*calls), rep.Total.OutputTokens)
	})
	t.Run("stop", func(t *testing.T) {
		assert.Contains(t, run(t, "stop", id), "stopped")
		assert.NotContains(t, run(t, "sessions"), id)
		testenv.Eventually(t, time.Minute, func() bool { return e.agentCount(t, g) == 0 }, "the stopped session's agent is still there")
	})
	t.Run("admin endpoint unreachable", func(t *testing.T) {
		dead := testenv.FreeAddr(t)
		for _, args := range [][]string{{"sessions"}, {"session", id}, {"stop", id}, {"pool"}, {"usage"}, {"providers"}} {
			_, stderr, ok := caddyCmd(t, append(args, "--address", dead)...)
			assert.False(t, ok, "%v", args)
			assert.Contains(t, stderr, "cannot reach Caddy's admin API at "+dead, "%v", args)
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }
