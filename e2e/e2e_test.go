// Package e2e tests the whole gateway as users run it: the xcaddy-built
// Caddy binary with the module, the Docker provider, the real agent image
// with the real claude binary, and the mock Anthropic API as a container,
// driven by the official openai-go client.
package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// gateway is one running Caddy with the agcluster module.
type gateway struct {
	cfgPath string // its Caddyfile
	url     string // http://127.0.0.1:port
	admin   string // Caddy's admin endpoint, http://127.0.0.1:port
	runID   string // label value on everything this gateway creates
	cmd     *exec.Cmd
	logs    *testenv.SyncBuffer
	stopped bool
}

// env is what every e2e test shares.
type env struct {
	docker  *client.Client
	network string
	mock    *anthropictest.Remote
}

func setup(t testing.TB) *env {
	testenv.Integration(t)
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.AgentImage())
	netName := testenv.TestNetwork(t, cli)
	return &env{docker: cli, network: netName, mock: testenv.StartMockContainer(t, cli, netName)}
}

func caddyBin(t testing.TB) string {
	p := os.Getenv("CADDY_BIN")
	if p == "" {
		p = filepath.Join(testenv.RepoRoot(), "caddy")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the xcaddy-built caddy is not available (%v); run `make caddy` or set CADDY_BIN", err)
	}
	return p
}

// gatewayOptions vary the test Caddyfile.
type gatewayOptions struct {
	idle         string   // idle_timeout
	extraHandler string   // lines added to the handler block
	extraApp     string   // lines added to the agcluster app block
	dockerHost   string   // the provider's engine address ("" = default)
	readyTimeout string   // the provider's ready_timeout ("" = default)
	providerEnv  []string // NAME value pairs passed to every agent
	extraSite    string   // lines added to the site block (e.g. "log")
	keep         bool     // shutdown keep (sessions outlive Caddy) instead of destroy
	maxSessions  string   // max_sessions ("" = 100)
	runID        string   // label value; a new one when empty
	provider     string   // a provider block in place of the Docker one
	caddyEnv     []string // NAME=value pairs added to Caddy's environment
	global       string   // lines added to the global options block
	sites        string   // site blocks after the test's own site
}

// caddyfile is the Caddyfile, on this test's network and port,
// with options for the test: one-shot calls go to the mock's published
// port, everything is labelled with the run id, and sessions are removed
// when Caddy exits unless o.keep.
func (e *env) caddyfile(port, adminAddr, runID string, o gatewayOptions) string {
	shutdown := "destroy"
	if o.keep {
		shutdown = "keep"
	}
	provider := cmp.Or(o.provider, fmt.Sprintf(`provider docker {
			image %s
			network %s
			env ANTHROPIC_BASE_URL http://%s:8080
			memory 1g
			cpus 1
			pids 256
			label agcluster.test.run %s
			%s
		}`, testenv.AgentImage(), e.network, testenv.MockAlias, runID, providerLines(o)))
	return fmt.Sprintf(`{
	admin %s
	metrics
	%s
	agcluster {
		%s
		idle_timeout %s
		max_sessions %s
		anthropic_base_url %s
		shutdown %s
		%s
	}
}
:%s {
	%s
	agcluster {
		task_models gpt-4o-mini
		tools full
		%s
	}
}
%s
`, adminAddr, o.global, provider, o.idle, cmp.Or(o.maxSessions, "100"), e.mock.BaseURL, shutdown, o.extraApp, port, o.extraSite, o.extraHandler, o.sites)
}

func providerLines(o gatewayOptions) string {
	var lines []string
	if o.dockerHost != "" {
		lines = append(lines, "host "+o.dockerHost)
	}
	if o.readyTimeout != "" {
		lines = append(lines, "ready_timeout "+o.readyTimeout)
	}
	for _, env := range o.providerEnv {
		lines = append(lines, "env "+env)
	}
	return strings.Join(lines, "\n\t\t\t")
}

func (e *env) startGateway(t testing.TB, idle, extraHandler string) *gateway {
	t.Helper()
	return e.startGatewayWith(t, gatewayOptions{idle: idle, extraHandler: extraHandler})
}

func (e *env) startGatewayWith(t testing.TB, o gatewayOptions) *gateway {
	t.Helper()
	if o.idle == "" {
		o.idle = "30m"
	}
	if o.runID == "" {
		o.runID = testenv.RandomHex(6)
	}
	addr := testenv.FreeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	adminAddr := testenv.FreeAddr(t)
	g := &gateway{url: "http://" + addr, admin: "http://" + adminAddr, runID: o.runID, logs: &testenv.SyncBuffer{}}
	g.start(t, e.caddyfile(port, adminAddr, g.runID, o), o.caddyEnv, func() {
		if o.keep {
			return // the test takes care of what it kept
		}
		// Nothing may outlive the gateway: its shutdown removes its sessions.
		assert.Empty(t, e.containers(t, g.runID), "containers left after caddy stopped")
		assert.Empty(t, e.volumes(t, g.runID), "volumes left after caddy stopped")
		e.forceRemove(g.runID)
	})
	return g
}

// start runs Caddy with the Caddyfile text (and env added to its
// environment) and waits until g.url answers /health; when the test ends
// it stops Caddy and runs after.
func (g *gateway) start(t testing.TB, caddyfile string, env []string, after func()) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "Caddyfile")
	require.NoError(t, os.WriteFile(cfg, []byte(caddyfile), 0o644))
	g.cfgPath = cfg
	g.cmd = exec.Command(caddyBin(t), "run", "--config", cfg, "--adapter", "caddyfile")
	g.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	g.cmd.Env = append(g.cmd.Env, env...)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	require.NoError(t, g.cmd.Start())
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("caddy logs (%s):\n%s", g.url, g.logs.String())
		}
		if after != nil {
			after()
		}
	})
	testenv.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get(g.url + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "caddy never answered /health; logs:\n%s", g.logs.String())
}

func (g *gateway) stop(t testing.TB) {
	if g.stopped {
		return
	}
	g.stopped = true
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = g.cmd.Process.Kill()
		<-done
		t.Errorf("caddy did not stop within 60s")
	}
}

func (g *gateway) client(key string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(g.url + "/v1"), option.WithAPIKey(key), option.WithMaxRetries(0),
	}, opts...)...)
}

func (e *env) runFilter(runID string) filters.Args {
	return filters.NewArgs(filters.Arg("label", "agcluster.test.run="+runID))
}

func (e *env) containers(t testing.TB, runID string) []container.Summary {
	list, err := e.docker.ContainerList(context.Background(), container.ListOptions{All: true, Filters: e.runFilter(runID)})
	require.NoError(t, err)
	return list
}

func (e *env) volumes(t testing.TB, runID string) []*volume.Volume {
	resp, err := e.docker.VolumeList(context.Background(), volume.ListOptions{Filters: e.runFilter(runID)})
	require.NoError(t, err)
	return resp.Volumes
}

// forceRemove is the safety net behind the assertions above, so a failing
// run does not leak into the next.
func (e *env) forceRemove(runID string) {
	ctx := context.Background()
	list, _ := e.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: e.runFilter(runID)})
	for _, c := range list {
		_ = e.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
	vols, _ := e.docker.VolumeList(ctx, volume.ListOptions{Filters: e.runFilter(runID)})
	for _, v := range vols.Volumes {
		_ = e.docker.VolumeRemove(ctx, v.Name, true)
	}
}

func (e *env) script(t testing.TB, sc anthropictest.Script) {
	t.Helper()
	require.NoError(t, e.mock.SetScript(context.Background(), sc))
	require.NoError(t, e.mock.Reset(context.Background()))
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// streamed runs a streaming completion and returns its accumulated result.
func streamed(t *testing.T, c openai.Client, params openai.ChatCompletionNewParams, opts ...option.RequestOption) (openai.ChatCompletion, error) {
	t.Helper()
	s := c.Chat.Completions.NewStreaming(ctxFor(t, 2*time.Minute), params, opts...)
	acc := openai.ChatCompletionAccumulator{}
	for s.Next() {
		acc.AddChunk(s.Current())
	}
	return acc.ChatCompletion, s.Err()
}

func user(text string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:         "agent",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
}

func conv(id string) option.RequestOption { return option.WithHeader("X-Conversation-ID", id) }

func TestGateway(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	alice := g.client("sk-ant-test-alice")

	t.Run("models", func(t *testing.T) {
		page, err := alice.Models.List(ctxFor(t, 10*time.Second))
		require.NoError(t, err)
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		assert.Contains(t, ids, "agent")
	})

	t.Run("streaming answer", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Streaming works end to end.", ChunkChars: 5}})
		got, err := streamed(t, alice, user("Hello there."), conv("c-stream"))
		require.NoError(t, err)
		require.Len(t, got.Choices, 1)
		assert.Equal(t, "Streaming works end to end.", got.Choices[0].Message.Content)
		assert.Equal(t, "stop", got.Choices[0].FinishReason)
		assert.Positive(t, got.Usage.CompletionTokens)
		assert.Positive(t, got.Usage.PromptTokens)
		assert.Len(t, e.containers(t, g.runID), 1)
	})

	t.Run("non-streaming answer", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "A whole answer at once."}})
		got, err := alice.Chat.Completions.New(ctxFor(t, 2*time.Minute), user("Answer at once."), conv("c-whole"))
		require.NoError(t, err)
		require.Len(t, got.Choices, 1)
		assert.Equal(t, "A whole answer at once.", got.Choices[0].Message.Content)
		assert.Equal(t, "stop", got.Choices[0].FinishReason)
		assert.Positive(t, got.Usage.TotalTokens)
		assert.Equal(t, "chat.completion", string(got.Object))
	})

	t.Run("tool-using turn shows the bash output", func(t *testing.T) {
		e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "count to three"},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{
				{Type: anthropictest.BlockText, Text: "Running it."},
				anthropictest.ToolUse("Bash", map[string]string{"command": "seq 1 3 | tr '\\n' ' '; echo bash-says-$((6*7))", "description": "count"}),
			}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "Done counting."},
		}}})
		got, err := streamed(t, alice, user("Please count to three."), conv("c-tool"))
		require.NoError(t, err)
		content := got.Choices[0].Message.Content
		assert.Contains(t, content, "Running it.")
		assert.Contains(t, content, "Bash")
		assert.Contains(t, content, "1 2 3 bash-says-42", "the command's real output is in the answer")
		assert.True(t, strings.HasSuffix(strings.TrimSpace(content), "Done counting."), content)
		reqs, err := e.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Len(t, reqs, 2)
		assert.Contains(t, strings.Join(reqs[1].ToolResultTexts(), ""), "bash-says-42")
	})

	t.Run("second turn reuses the container and carries history", func(t *testing.T) {
		e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "secret word is pelican"},
			Response: anthropictest.Response{Text: "Remembered."},
		}, {
			Match:    anthropictest.Match{LastUserTextContains: "What is the secret word"},
			Response: anthropictest.Response{Text: "It is pelican."},
		}}})
		before := len(e.containers(t, g.runID))
		_, err := streamed(t, alice, user("The secret word is pelican."), conv("c-two-turns"))
		require.NoError(t, err)
		assert.Len(t, e.containers(t, g.runID), before+1, "the first turn created one container")
		got, err := streamed(t, alice, user("What is the secret word?"), conv("c-two-turns"))
		require.NoError(t, err)
		assert.Equal(t, "It is pelican.", got.Choices[0].Message.Content)
		assert.Len(t, e.containers(t, g.runID), before+1, "the second turn reused it")
		reqs, err := e.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Len(t, reqs, 2)
		assert.Contains(t, reqs[1].AllText(), "The secret word is pelican.", "the agent kept the first turn")
	})

	t.Run("conversation without id continues by its history", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted the llama."}})
		first := user("Remember the llama.")
		got, err := streamed(t, alice, first)
		require.NoError(t, err)
		before := len(e.containers(t, g.runID))
		next := openai.ChatCompletionNewParams{Model: "agent", Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("Remember the llama."),
			openai.AssistantMessage(got.Choices[0].Message.Content),
			openai.UserMessage("What did I ask you to remember?"),
		}}
		_, err = streamed(t, alice, next)
		require.NoError(t, err)
		assert.Len(t, e.containers(t, g.runID), before, "the follow-up found the same session by its history")
	})

	t.Run("same conversation id under another key is another session", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Hi."}})
		before := len(e.containers(t, g.runID))
		bob := g.client("sk-ant-test-bob")
		_, err := streamed(t, bob, user("Hello from Bob."), conv("c-two-turns"))
		require.NoError(t, err)
		assert.Len(t, e.containers(t, g.runID), before+1, "Bob got his own container")
		reqs, err := e.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Len(t, reqs, 1)
		assert.NotContains(t, reqs[0].AllText(), "pelican", "Bob's agent does not see Alice's conversation")
		assert.Equal(t, "sk-ant-test-bob", reqs[0].Header.Get("X-Api-Key"), "Bob's key is used for Bob's turn")
	})

	t.Run("busy conversation gets 409 without retries", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: strings.Repeat("slowly ", 30), ChunkChars: 7, ChunkDelayMS: 60}})
		ctx := ctxFor(t, 2*time.Minute)
		s := alice.Chat.Completions.NewStreaming(ctx, user("Talk slowly."), conv("c-busy"))
		require.True(t, s.Next(), "the first turn started: %v", s.Err())
		var calls int
		var mu sync.Mutex
		counting := option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			mu.Lock()
			calls++
			mu.Unlock()
			return next(r)
		})
		retrying := g.client("sk-ant-test-alice", option.WithMaxRetries(2), counting)
		_, err := retrying.Chat.Completions.New(ctxFor(t, time.Minute), user("Me too."), conv("c-busy"))
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusConflict, apiErr.StatusCode)
		assert.Equal(t, 1, calls, "x-should-retry: false stops openai-go from replaying the turn")
		for s.Next() {
		}
		require.NoError(t, s.Err())
	})

	t.Run("title request creates no container", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Counting Numbers"}})
		before := len(e.containers(t, g.runID))
		params := openai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Write a 2-4 word title for this conversation."),
			openai.UserMessage("Please count to three."),
		}}
		got, err := alice.Chat.Completions.New(ctxFor(t, time.Minute), params, conv("c-title-only"))
		require.NoError(t, err)
		assert.Equal(t, "Counting Numbers", got.Choices[0].Message.Content)
		assert.Len(t, e.containers(t, g.runID), before, "no container for a title")
		reqs, err := e.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Len(t, reqs, 1)
		assert.NotContains(t, reqs[0].Header.Get("User-Agent"), "claude-cli", "answered by the gateway, not an agent")
		assert.Contains(t, reqs[0].AllText(), `"model": "claude-haiku-4-5"`)

		owui, err := alice.Chat.Completions.New(ctxFor(t, time.Minute), user("Generate tags."),
			option.WithHeader("X-OpenWebUI-Task", "tags_generation"), conv("c-title-only"))
		require.NoError(t, err)
		assert.Equal(t, "Counting Numbers", owui.Choices[0].Message.Content)
		assert.Len(t, e.containers(t, g.runID), before, "no container for an Open WebUI task")
	})

	t.Run("errors in OpenAI shape", func(t *testing.T) {
		_, err := alice.Chat.Completions.New(ctxFor(t, 10*time.Second), openai.ChatCompletionNewParams{
			Model: "no-such-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusNotFound, apiErr.StatusCode)
		assert.Equal(t, "model_not_found", apiErr.Code)

		anon := g.client("")
		_, err = anon.Chat.Completions.New(ctxFor(t, 10*time.Second), user("hi"))
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)

		resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"agent","messages":"hi"}`))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	})

	t.Run("admin API and metrics", func(t *testing.T) {
		resp, err := http.Get(g.admin + "/agcluster/sessions")
		require.NoError(t, err)
		var sessions []struct {
			ID, Conversation, InstanceID string
			Turns                        int64
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&sessions))
		resp.Body.Close()
		assert.Len(t, sessions, len(e.containers(t, g.runID)))
		convs := map[string]bool{}
		for _, s := range sessions {
			convs[s.Conversation] = true
		}
		assert.True(t, convs["c-two-turns"])

		resp, err = http.Get(g.admin + "/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Contains(t, string(body), `caddy_agcluster_turns_total{continues="next",new_session="false",outcome="ok",provider="docker"}`)
		assert.Contains(t, string(body), `caddy_agcluster_task_requests_total{outcome="ok"} 2`)
		assert.Contains(t, string(body), `caddy_agcluster_request_errors_total{status="409"}`)
		assert.Contains(t, string(body), "caddy_agcluster_sessions ")
	})

	t.Run("auth failure upstream is a clean error", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Error: &anthropictest.ErrorResponse{Status: 401, Message: "invalid x-api-key"}}})
		_, err := alice.Chat.Completions.New(ctxFor(t, time.Minute), user("Hi with a bad key."), conv("c-badkey"))
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)

		got, err := streamed(t, alice, user("Streaming with a bad key."), conv("c-badkey"))
		require.NoError(t, err, "a failed turn ends the stream cleanly")
		assert.Contains(t, got.Choices[0].Message.Content, "error")
	})
}

func TestIdleReaping(t *testing.T) {
	e := setup(t)
	g := e.startGatewayWith(t, gatewayOptions{idle: "2s", extraApp: "retention 1s"})
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Short-lived."}})
	_, err := streamed(t, g.client("sk-ant-test-idle"), user("Hi."), conv("c-idle"))
	require.NoError(t, err)
	require.Len(t, e.containers(t, g.runID), 1)
	require.Len(t, e.volumes(t, g.runID), 2)
	testenv.Eventually(t, time.Minute, func() bool {
		return len(e.containers(t, g.runID)) == 0 && len(e.volumes(t, g.runID)) == 0
	}, "the idle session was not put to sleep and then removed after its retention")
}

func TestConcurrentFirstRequestsMakeOneContainer(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "One of you wins."}})
	c := g.client("sk-ant-test-race")
	const n = 4
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, results[i] = c.Chat.Completions.New(ctxFor(t, 2*time.Minute), user("Race!"), conv("c-race"))
		}()
	}
	wg.Wait()
	ok, busy := 0, 0
	for _, err := range results {
		var apiErr *openai.Error
		switch {
		case err == nil:
			ok++
		case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusConflict:
			busy++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	assert.GreaterOrEqual(t, ok, 1)
	assert.Equal(t, n, ok+busy)
	assert.Len(t, e.containers(t, g.runID), 1, "simultaneous first requests share one container")
}

func ptr[T any](v T) *T { return &v }
