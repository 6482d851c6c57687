package agent_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// testConfig lets the agent run shell commands and write files without
// prompts, as the tool tests need.
const testConfig = `{"allowed_tools":["Bash","Read","Write"]}`

// maxFileBytes is the upload limit the test agents run with.
const maxFileBytes = 1 << 20

// stack is one agent server under test and the mock API it talks to.
type stack struct {
	mode   string
	kill   func(t *testing.T) // kills the CLI process (process mode only)
	stop   func()             // stops the agent process and waits for its exit (process mode only)
	agent  *agentclient.Client
	mock   *anthropictest.Remote
	logs   func() string
	outDir string // a host directory outside the workspace (process mode only)
}

// startProcessStack runs the agent binary as a local process with the real
// claude binary, against an in-process mock on 127.0.0.1.
func startProcessStack(t *testing.T) *stack { return startProcessStackEnv(t) }

// startProcessStackEnv is startProcessStack with extra agent environment.
func startProcessStackEnv(t *testing.T, extraEnv ...string) *stack {
	mock := anthropictest.NewServer(t, anthropictest.Script{})
	return startProcessStackOn(t, mock, newAgentDirs(t), extraEnv...)
}

// agentDirs are the host directories an agent process runs on.
type agentDirs struct {
	workspace string // AGENT_WORKSPACE
	home      string // HOME
	outside   string // a directory outside the workspace
	state     string // for AGENT_STATE_DIR (not passed by startProcessStackOn)
}

// newAgentDirs makes a fresh set of (empty) agent directories.
func newAgentDirs(t *testing.T) agentDirs {
	root := t.TempDir()
	d := agentDirs{
		workspace: filepath.Join(root, "workspace"), home: filepath.Join(root, "home"),
		outside: filepath.Join(root, "outside"), state: filepath.Join(root, "state"),
	}
	require.NoError(t, os.Mkdir(d.workspace, 0o755))
	require.NoError(t, os.Mkdir(d.home, 0o700))
	require.NoError(t, os.Mkdir(d.outside, 0o755))
	require.NoError(t, os.Mkdir(d.state, 0o700))
	return d
}

// startProcessStackOn runs the agent binary as a local process with the real
// claude binary on dirs, against mock, and waits until it is ready.
func startProcessStackOn(t *testing.T, mock *anthropictest.Server, dirs agentDirs, extraEnv ...string) *stack {
	s := launchProcessStack(t, mock, dirs, extraEnv...)
	s.waitReady(t)
	return s
}

// launchProcessStack starts the agent process of startProcessStackOn
// without waiting for it.
func launchProcessStack(t *testing.T, mock *anthropictest.Server, dirs agentDirs, extraEnv ...string) *stack {
	bin := testenv.GoBinary(t, "./agent/cmd/agcluster-agent")
	claude := testenv.ClaudeBin(t)
	ws, home, outside := dirs.workspace, dirs.home, dirs.outside
	addr := testenv.FreeAddr(t)
	token := testenv.RandomHex(16)

	var logs testenv.SyncBuffer
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + home,
		"AGENT_TOKEN=" + token,
		"AGENT_WORKSPACE=" + ws,
		"AGENT_ADDR=" + addr,
		"AGENT_CONFIG=" + testConfig,
		"AGENT_MAX_FILE_BYTES=" + strconv.Itoa(maxFileBytes),
		"CLAUDE_BIN=" + claude,
		"ANTHROPIC_BASE_URL=" + mock.URL(),
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(stop)
	s := &stack{
		stop:   stop,
		mode:   "process",
		agent:  &agentclient.Client{BaseURL: "http://" + addr, Token: token},
		mock:   &anthropictest.Remote{BaseURL: mock.URL()},
		logs:   logs.String,
		outDir: outside,
	}
	s.kill = func(t *testing.T) {
		st, err := s.agent.Stats(context.Background())
		require.NoError(t, err)
		require.Positive(t, st.Claude.PID)
		require.NoError(t, syscall.Kill(st.Claude.PID, syscall.SIGKILL))
	}
	return s
}

// startContainerStack runs the agent image hardened (non-root, read-only
// root, no capabilities, no new privileges, tmpfs /tmp and home, workspace
// volume) next to the mock image on a test network of its own.
func startContainerStack(t *testing.T) *stack {
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.AgentImage())
	netName := testenv.TestNetwork(t, cli)
	mock := testenv.StartMockContainer(t, cli, netName)
	vol := testenv.Volume(t, cli)
	token := testenv.RandomHex(16)
	id := testenv.RunContainer(t, cli, "agcluster-test-agent-"+testenv.RandomHex(4),
		&container.Config{
			Image: testenv.AgentImage(),
			Env: []string{
				"AGENT_TOKEN=" + token,
				"AGENT_CONFIG=" + testConfig,
				"AGENT_MAX_FILE_BYTES=" + strconv.Itoa(maxFileBytes),
				"ANTHROPIC_BASE_URL=http://" + testenv.MockAlias + ":8080",
			},
			ExposedPorts: nat.PortSet{"8080/tcp": {}},
			Labels:       map[string]string{"agcluster.test": "true"},
		},
		&container.HostConfig{
			PortBindings:   nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1", HostPort: ""}}},
			CapDrop:        []string{"ALL"},
			SecurityOpt:    []string{"no-new-privileges:true"},
			ReadonlyRootfs: true,
			Tmpfs: map[string]string{
				"/tmp":        "rw,nosuid,nodev,size=64m",
				"/home/agent": "rw,nosuid,nodev,size=128m,uid=1000,gid=1000,mode=0700",
			},
			Mounts: []mount.Mount{testenv.VolumeMount(vol, "/workspace")},
			Resources: container.Resources{
				Memory:    1 << 30,
				NanoCPUs:  1e9,
				PidsLimit: ptr(int64(256)),
			},
		},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {}}})
	port := testenv.PublishedPort(t, cli, id, "8080/tcp")
	s := &stack{
		mode:  "container",
		agent: &agentclient.Client{BaseURL: "http://127.0.0.1:" + port, Token: token},
		mock:  mock,
		logs:  func() string { return testenv.ContainerLogs(cli, id) },
	}
	s.waitReady(t)

	info, err := cli.ContainerInspect(context.Background(), id)
	require.NoError(t, err)
	assert.True(t, info.HostConfig.ReadonlyRootfs)
	assert.Equal(t, []string{"ALL"}, []string(info.HostConfig.CapDrop))
	assert.Equal(t, "agent", info.Config.User, "the image runs as its non-root user")
	return s
}

func (s *stack) waitReady(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() bool {
		h, status, err := s.agent.Health(context.Background())
		return err == nil && status == http.StatusOK && h.Status == "ready"
	}, "agent (%s) never became ready; logs:\n%s", s.mode, s.logs())
}

func (s *stack) script(t *testing.T, sc anthropictest.Script) {
	t.Helper()
	require.NoError(t, s.mock.SetScript(context.Background(), sc))
	require.NoError(t, s.mock.Reset(context.Background()))
}

// turn runs a query to its end and returns all its events.
func (s *stack) turn(t *testing.T, prompt string) []agent.Event {
	t.Helper()
	return s.query(t, agent.QueryRequest{Prompt: prompt})
}

// query runs q (with a test key) to its end and returns all its events.
func (s *stack) query(t *testing.T, q agent.QueryRequest) []agent.Event {
	t.Helper()
	q.APIKey = "sk-ant-test"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := s.agent.Turn(ctx, q)
	require.NoError(t, err, "query %q", q.Prompt)
	events := s.readStream(t, st)
	for _, e := range events {
		if e.Type == agent.EventNotice && e.Code == agent.CodeAPIRetry {
			t.Logf("unexpected API retry in %q: %s\nagent logs:\n%s", q.Prompt, e.Message, s.logs())
		}
	}
	return events
}

func TestAgentServer(t *testing.T) {
	testenv.Integration(t)
	for _, start := range []func(*testing.T) *stack{startProcessStack, startContainerStack} {
		s := start(t)
		t.Run(s.mode, func(t *testing.T) { runAgentSuite(t, s) })
	}
}

// TestAgentWarmUp: a warm-pool agent runs its CLI's first turn before it
// is ready, answered by itself: nothing reaches the API, and the user's
// first turn carries nothing of it.
func TestAgentWarmUp(t *testing.T) {
	testenv.Integration(t)
	s := startProcessStackEnv(t, "AGENT_WARM_UP=1")
	s.waitReady(t)
	assert.Contains(t, s.logs(), "claude warmed up")
	reqs, err := s.mock.Requests(context.Background())
	require.NoError(t, err)
	assert.Empty(t, reqs, "the warm-up never reaches the API")

	s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "First real answer."}})
	events := s.turn(t, "My first real question.")
	last := lastEvent(events)
	require.Equal(t, agent.EventResult, last.Type, "%+v", events)
	assert.Equal(t, "First real answer.", last.Result.Text)
	reqs, err = s.mock.Requests(context.Background())
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	all := reqs[0].AllText()
	assert.Contains(t, all, "My first real question.")
	assert.NotContains(t, all, "Reply with OK.", "the warm-up turn is not in the conversation")
	st, err := s.agent.Stats(context.Background())
	require.NoError(t, err)
	assert.Equal(t, int64(1), st.Turns, "the warm-up is not counted as a turn")

	events = s.turn(t, "A second question.")
	require.Equal(t, agent.EventResult, lastEvent(events).Type)
	reqs, err = s.mock.Requests(context.Background())
	require.NoError(t, err)
	assert.Contains(t, reqs[len(reqs)-1].AllText(), "My first real question.", "the real conversation goes on")

	// Branches work on the session /clear made: regenerate the second answer.
	events = s.query(t, agent.QueryRequest{Prompt: "Another second question.", Branch: &agent.Branch{After: last.Result.TurnID}})
	require.Equal(t, agent.EventResult, lastEvent(events).Type, "%+v\nlogs:\n%s", events, s.logs())
	reqs, err = s.mock.Requests(context.Background())
	require.NoError(t, err)
	all = reqs[len(reqs)-1].AllText()
	assert.Contains(t, all, "My first real question.")
	assert.Contains(t, all, "Another second question.")
	assert.NotContains(t, all, "A second question.")
	assert.NotContains(t, all, "Reply with OK.")
}

func runAgentSuite(t *testing.T, s *stack) {
	t.Run("plain answer streams as text deltas then result", func(t *testing.T) {
		answer := "The quick brown fox jumps over the lazy dog."
		s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: answer, ChunkChars: 6}})
		events := s.turn(t, "Tell me about foxes.")
		var deltas []string
		for _, e := range events {
			if e.Type == agent.EventTextDelta {
				deltas = append(deltas, e.Text)
			}
		}
		assert.GreaterOrEqual(t, len(deltas), 3, "the answer arrives in several deltas")
		assert.Equal(t, answer, strings.Join(deltas, ""))
		last := events[len(events)-1]
		require.Equal(t, agent.EventResult, last.Type, "%+v", last)
		assert.Equal(t, "end_turn", last.Result.StopReason)
		assert.Positive(t, last.Result.Usage.OutputTokens)
		assert.NotEmpty(t, last.Result.SessionID)
	})

	t.Run("bash tool runs in the workspace and its output reaches the model", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "make a file"},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{
				{Type: anthropictest.BlockText, Text: "Creating it."},
				anthropictest.ToolUse("Bash", map[string]string{
					"command":     "echo tool-output-$((6*7)) | tee made.txt; echo uid=$(id -u)",
					"description": "make a file",
				}),
			}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "The file is made."},
		}}})
		events := s.turn(t, "Please make a file.")
		var use, result *agent.Event
		for i := range events {
			switch events[i].Type {
			case agent.EventToolUse:
				use = &events[i]
			case agent.EventToolResult:
				result = &events[i]
			}
		}
		require.NotNil(t, use, "tool_use event; events: %+v", events)
		require.NotNil(t, result, "tool_result event")
		assert.Equal(t, "Bash", use.Name)
		assert.Equal(t, use.ToolUseID, result.ToolUseID)
		assert.False(t, result.IsError, result.Output)
		assert.Contains(t, result.Output, "tool-output-42")
		if s.mode == "container" {
			assert.Contains(t, result.Output, "uid=1000", "tools run as the image's non-root user")
		}
		assert.Equal(t, agent.EventResult, events[len(events)-1].Type)

		resp := s.get(t, "/files/made.txt")
		assert.Equal(t, http.StatusOK, resp.status)
		assert.Equal(t, "tool-output-42\n", resp.body)

		reqs, err := s.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Len(t, reqs, 2, "one call for the tool_use, one with its result: %s", summarizeRequests(reqs))
		assert.Contains(t, strings.Join(reqs[1].ToolResultTexts(), "\n"), "tool-output-42")
	})

	t.Run("second turn carries the first turn's history", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "favourite colour is teal"},
			Response: anthropictest.Response{Text: "Noted: teal."},
		}, {
			Match:    anthropictest.Match{LastUserTextContains: "What is my favourite colour"},
			Response: anthropictest.Response{Text: "It is teal."},
		}}})
		first := s.turn(t, "My favourite colour is teal.")
		require.Equal(t, agent.EventResult, first[len(first)-1].Type)
		second := s.turn(t, "What is my favourite colour?")
		require.Equal(t, agent.EventResult, second[len(second)-1].Type)
		reqs, err := s.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Len(t, reqs, 2)
		msgs, err := reqs[1].Messages()
		require.NoError(t, err)
		var history strings.Builder
		for _, m := range msgs {
			history.WriteString(m.Role + ": " + m.Text() + "\n")
		}
		assert.Contains(t, history.String(), "user: My favourite colour is teal.")
		assert.Contains(t, history.String(), "assistant: Noted: teal.")
		assert.Equal(t, first[len(first)-1].Result.SessionID, second[len(second)-1].Result.SessionID)
	})

	t.Run("client disconnect interrupts the turn and the next turn works", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "very long story"},
			Response: anthropictest.Response{Text: "Once upon a time " + strings.Repeat("and then more happened ", 40),
				ChunkChars: 8, ChunkDelayMS: 50},
		}, {
			Match:    anthropictest.Match{LastUserTextContains: "still there"},
			Response: anthropictest.Response{Text: "Yes, still here."},
		}}})
		ctx, cancel := context.WithCancel(context.Background())
		st, err := s.agent.Query(ctx, "Tell me a very long story.", "sk-ant-test")
		require.NoError(t, err)
		var seen []agent.Event
		for deltas := 0; deltas < 2; {
			e, err := st.Next()
			if err != nil {
				reqs, _ := s.mock.Requests(context.Background())
				t.Fatalf("stream ended early: %v\nevents so far: %+v\nrequests:%s\nlogs:\n%s", err, seen, summarizeRequests(reqs), s.logs())
			}
			seen = append(seen, e)
			if e.Type == agent.EventTextDelta {
				deltas++
			}
		}
		cancel()
		_ = st.Close()
		testenv.Eventually(t, 30*time.Second, func() bool {
			h, _, err := s.agent.Health(context.Background())
			return err == nil && !h.Busy
		}, "the interrupted turn never ended")

		events := s.turn(t, "Are you still there?")
		last := events[len(events)-1]
		reqs, err := s.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Equal(t, agent.EventResult, last.Type, "%+v\nrequests:%s", last, summarizeRequests(reqs))
		assert.Equal(t, "Yes, still here.", last.Result.Text, "requests:%s", summarizeRequests(reqs))
		require.GreaterOrEqual(t, len(reqs), 2)
		assert.True(t, reqs[0].ClientAborted, "the interrupted API stream was cut off")
		msgs, err := reqs[len(reqs)-1].Messages()
		require.NoError(t, err)
		var history []string
		for _, m := range msgs {
			history = append(history, m.Role+": "+m.Text())
		}
		assert.Contains(t, strings.Join(history, "\n"), "Tell me a very long story.", "the interrupted turn's message stays in the context; requests:%s", summarizeRequests(reqs))
		assert.Contains(t, strings.Join(history, "\n"), "assistant: Once upon a time", "the partial answer stays in the context; requests:%s", summarizeRequests(reqs))
	})

	t.Run("concurrent query gets 409", func(t *testing.T) {
		s.script(t, anthropictest.Script{Default: &anthropictest.Response{
			Text: strings.Repeat("slow ", 40), ChunkChars: 5, ChunkDelayMS: 50}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := s.agent.Query(ctx, "Say slow things.", "sk-ant-test")
		require.NoError(t, err)
		_, err = st.Next()
		require.NoError(t, err)
		_, err = s.agent.Query(context.Background(), "Me too.", "sk-ant-test")
		require.Error(t, err)
		assert.ErrorIs(t, err, agentclient.ErrBusy)
		var ae *agentclient.APIError
		require.ErrorAs(t, err, &ae)
		assert.Contains(t, ae.Message, "already running")
		for {
			if _, err := st.Next(); err != nil {
				require.ErrorIs(t, err, io.EOF)
				break
			}
		}
		_ = st.Close()
	})

	t.Run("POST /interrupt stops the running turn", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "endless poem"},
			Response: anthropictest.Response{Text: strings.Repeat("verse ", 100), ChunkChars: 6, ChunkDelayMS: 50},
		}}, Default: &anthropictest.Response{Text: "Ready again."}})
		ok, err := s.agent.Interrupt(context.Background())
		require.NoError(t, err)
		assert.False(t, ok, "nothing to interrupt between turns")
		st, err := s.agent.Query(context.Background(), "Write an endless poem.", "sk-ant-test")
		require.NoError(t, err)
		defer st.Close()
		_, err = st.Next()
		require.NoError(t, err)
		ok, err = s.agent.Interrupt(context.Background())
		require.NoError(t, err)
		assert.True(t, ok)
		last := drain(t, st)
		assert.Equal(t, agent.EventError, last.Type)
		assert.Equal(t, agent.CodeInterrupted, last.Code)
		events := s.turn(t, "Are you ready?")
		assert.Equal(t, agent.EventResult, events[len(events)-1].Type)
	})

	if s.kill != nil {
		t.Run("a dead CLI is restarted with the conversation resumed", func(t *testing.T) {
			s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
				Match:    anthropictest.Match{LastUserTextContains: "code word is heron"},
				Response: anthropictest.Response{Text: "Heron noted."},
			}, {
				Match:    anthropictest.Match{LastUserTextContains: "slow reply"},
				Response: anthropictest.Response{Text: strings.Repeat("slow ", 100), ChunkChars: 5, ChunkDelayMS: 50},
			}}, Default: &anthropictest.Response{Text: "Back again."}})
			require.Equal(t, agent.EventResult, lastEvent(s.turn(t, "The code word is heron.")).Type)

			// Killed between turns: the next turn says so and keeps the context.
			s.kill(t)
			events := s.turn(t, "Do you still know the code word?")
			require.NotEmpty(t, events)
			assert.Equal(t, agent.EventNotice, events[0].Type)
			assert.Equal(t, agent.CodeRestarted, events[0].Code)
			assert.Equal(t, agent.EventResult, lastEvent(events).Type)
			reqs, err := s.mock.Requests(context.Background())
			require.NoError(t, err)
			assert.Contains(t, reqs[len(reqs)-1].AllText(), "The code word is heron.", "resumed with its history")

			// Killed mid-turn: that turn ends with an error saying it was lost.
			st, err := s.agent.Query(context.Background(), "Give me a slow reply.", "sk-ant-test")
			require.NoError(t, err)
			_, err = st.Next()
			require.NoError(t, err)
			s.kill(t)
			last := drain(t, st)
			_ = st.Close()
			assert.Equal(t, agent.EventError, last.Type)
			assert.Equal(t, agent.CodeInternal, last.Code)
			assert.Contains(t, last.Message, "this turn was lost")
			events = s.turn(t, "And now?")
			assert.Equal(t, agent.CodeRestarted, events[0].Code)
			assert.Equal(t, agent.EventResult, lastEvent(events).Type)
			st2, err := s.agent.Stats(context.Background())
			require.NoError(t, err)
			assert.Equal(t, int64(2), st2.Restarts)
		})

		t.Run("health with wait answers when the restarted CLI is ready", func(t *testing.T) {
			s.kill(t)
			testenv.Eventually(t, 10*time.Second, func() bool {
				h, _, err := s.agent.Health(context.Background())
				return err == nil && h.Status != "ready"
			}, "the agent never noticed its CLI died")
			h, status, err := s.agent.HealthWait(context.Background(), 30*time.Second)
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, status, "held until ready, not answered 503")
			assert.Equal(t, "ready", h.Status)
		})
	}

	t.Run("health wait parameter", func(t *testing.T) {
		for _, tc := range []struct {
			query  string
			status int
		}{
			{"?wait=1s", http.StatusOK},
			{"?wait=0s", http.StatusOK},
			{"?wait=soon", http.StatusBadRequest},
			{"?wait=-1s", http.StatusBadRequest},
		} {
			start := time.Now()
			r := s.get(t, "/health"+tc.query)
			assert.Equal(t, tc.status, r.status, "%s: %s", tc.query, r.body)
			assert.Less(t, time.Since(start), time.Second, "%s: a ready agent answers at once", tc.query)
		}
	})

	t.Run("files", func(t *testing.T) { runFileTests(t, s) })

	t.Run("every endpoint but health needs the token", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{"POST", "/query"}, {"POST", "/interrupt"}, {"GET", "/stats"}, {"GET", "/files"},
			{"GET", "/files/made.txt"}, {"PUT", "/files/x.txt"}, {"GET", "/archive"},
		} {
			for _, token := range []string{"", "wrong-token"} {
				req, err := http.NewRequest(r.method, s.agent.BaseURL+r.path, strings.NewReader("{}"))
				require.NoError(t, err)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s %s with token %q", r.method, r.path, token)
			}
		}
		resp, err := http.Get(s.agent.BaseURL + "/health")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})

	t.Run("stats", func(t *testing.T) {
		st, err := s.agent.Stats(context.Background())
		require.NoError(t, err)
		assert.False(t, st.Busy)
		assert.Positive(t, st.Claude.PID)
		assert.Positive(t, st.Claude.RSSBytes)
		assert.Positive(t, st.Agent.RSSBytes)
		assert.GreaterOrEqual(t, st.Turns, int64(5))
		if s.mode == "container" {
			require.NotNil(t, st.Cgroup, "cgroup v2 figures inside the container")
			assert.Equal(t, int64(1<<30), st.Cgroup.MemoryLimitBytes)
			assert.Equal(t, int64(256), st.Cgroup.PidsLimit)
		}
	})

	t.Run("binding is set once and read back", func(t *testing.T) {
		st, err := s.agent.Binding(context.Background())
		require.NoError(t, err)
		assert.False(t, st.Bound, "a fresh agent serves nobody")
		first := agent.Binding{SessionID: "sess_a", Owner: "owner-a", Conversation: "conv-a"}
		for _, tc := range []struct {
			name    string
			body    string
			binding *agent.Binding
			status  int
		}{
			{name: "first binding", binding: &first, status: http.StatusOK},
			{name: "same binding again", binding: &first, status: http.StatusOK},
			{name: "another owner", binding: &agent.Binding{SessionID: "sess_b", Owner: "owner-b", Conversation: "conv-a"}, status: http.StatusConflict},
			{name: "another conversation", binding: &agent.Binding{SessionID: "sess_a", Owner: "owner-a", Conversation: "conv-b"}, status: http.StatusConflict},
			{name: "missing owner", body: `{"session_id":"s","conversation":"c"}`, status: http.StatusBadRequest},
			{name: "unknown field", body: `{"session_id":"s","owner":"o","conversation":"c","x":1}`, status: http.StatusBadRequest},
			{name: "not json", body: `bind me`, status: http.StatusBadRequest},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body := tc.body
				if tc.binding != nil {
					b, err := json.Marshal(tc.binding)
					require.NoError(t, err)
					body = string(b)
				}
				r := s.put(t, "/binding", body)
				assert.Equal(t, tc.status, r.status, r.body)
			})
		}
		st, err = s.agent.Binding(context.Background())
		require.NoError(t, err)
		require.True(t, st.Bound)
		assert.Equal(t, first, *st.Binding, "the first binding stays")
		var apiErr *agentclient.APIError
		require.ErrorAs(t, s.agent.Bind(context.Background(), agent.Binding{SessionID: "x", Owner: "y", Conversation: "z"}), &apiErr)
		assert.Equal(t, "already_bound", apiErr.Code)
		noToken := &agentclient.Client{BaseURL: s.agent.BaseURL}
		_, err = noToken.Binding(context.Background())
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusUnauthorized, apiErr.Status, "the binding needs the token")
	})

	// Last: the conversation's history now holds a failed turn, which the
	// CLI folds into the next user message.
	t.Run("401 from the API ends the turn with an auth error", func(t *testing.T) {
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match:    anthropictest.Match{LastUserTextContains: "wrong key"},
			Response: anthropictest.Response{Error: &anthropictest.ErrorResponse{Status: 401, Message: "invalid x-api-key"}},
			Times:    anthropictest.Unlimited,
		}}})
		start := time.Now()
		events := s.turn(t, "This uses the wrong key.")
		last := events[len(events)-1]
		require.Equal(t, agent.EventError, last.Type, "%+v", events)
		assert.Equal(t, agent.CodeAuth, last.Code)
		t.Logf("auth failure reported after %s", time.Since(start))
		h, _, err := s.agent.Health(context.Background())
		require.NoError(t, err)
		assert.False(t, h.Busy)
	})
}

func runFileTests(t *testing.T, s *stack) {
	t.Run("write, read, overwrite, list", func(t *testing.T) {
		assert.Equal(t, http.StatusCreated, s.put(t, "/files/docs/a.txt", "alpha").status)
		assert.Equal(t, http.StatusConflict, s.put(t, "/files/docs/a.txt", "beta").status, "no overwrite unless asked")
		assert.Equal(t, http.StatusCreated, s.put(t, "/files/docs/a.txt?overwrite=true", "beta").status)
		got := s.get(t, "/files/docs/a.txt")
		assert.Equal(t, http.StatusOK, got.status)
		assert.Equal(t, "beta", got.body)
		assert.Equal(t, "text/plain; charset=utf-8", got.header.Get("Content-Type"))
		dl := s.get(t, "/files/docs/a.txt?download=1")
		assert.Contains(t, dl.header.Get("Content-Disposition"), `attachment; filename=a.txt`)
		tree := s.get(t, "/files")
		assert.Equal(t, http.StatusOK, tree.status)
		assert.Contains(t, tree.body, `"path":"docs/a.txt"`)
		assert.Contains(t, tree.body, `"size":4`)
		assert.Equal(t, http.StatusNotFound, s.get(t, "/files/nope.txt").status)
		assert.Equal(t, http.StatusBadRequest, s.get(t, "/files/docs").status, "a directory is not a file")
	})

	t.Run("upload limit", func(t *testing.T) {
		assert.Equal(t, http.StatusCreated, s.put(t, "/files/max.bin", strings.Repeat("x", maxFileBytes)).status)
		assert.Equal(t, http.StatusRequestEntityTooLarge, s.put(t, "/files/big.bin", strings.Repeat("x", maxFileBytes+1)).status)
		assert.Equal(t, http.StatusNotFound, s.get(t, "/files/big.bin").status, "nothing is left of a refused upload")
	})

	t.Run("traversal is refused", func(t *testing.T) {
		for _, p := range []string{
			"/files/../../../etc/passwd",
			"/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
			"/files/docs/%2e%2e/%2e%2e/etc/passwd",
			"/files/%2fetc%2fpasswd",
			"/files//etc/passwd",
			"/files/docs%2f..%2f..%2fetc%2fpasswd",
			"/files/a%00b",
		} {
			resp := s.raw(t, http.MethodGet, p, "")
			assert.NotEqual(t, http.StatusOK, resp.status, p)
			assert.NotContains(t, resp.body, "root:", p)
			put := s.raw(t, http.MethodPut, p, "owned")
			assert.NotEqual(t, http.StatusCreated, put.status, p)
		}
	})

	t.Run("symlinks out of the workspace are refused", func(t *testing.T) {
		target := "/tmp"
		if s.outDir != "" {
			target = s.outDir
		}
		s.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "make the links"},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{anthropictest.ToolUse("Bash", map[string]string{
				"command":     "ln -s /etc etc-link && ln -s /etc/passwd passwd-link && ln -s " + target + " out-link && echo linked",
				"description": "links",
			})}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "Linked."},
		}}})
		events := s.turn(t, "Please make the links.")
		require.Equal(t, agent.EventResult, events[len(events)-1].Type, "%+v", events)
		for _, e := range events {
			if e.Type == agent.EventToolResult {
				require.Equal(t, "linked", strings.TrimSpace(e.Output), "the links were made")
			}
		}

		for _, p := range []string{"/files/etc-link/passwd", "/files/passwd-link", "/files/out-link"} {
			resp := s.get(t, p)
			assert.Equal(t, http.StatusBadRequest, resp.status, p+": "+resp.body)
			assert.NotContains(t, resp.body, "root:")
		}
		escape := "escaped-" + testenv.RandomHex(4) + ".txt"
		assert.Equal(t, http.StatusBadRequest, s.put(t, "/files/out-link/"+escape, "owned").status)
		if s.outDir != "" {
			_, err := os.Stat(filepath.Join(s.outDir, escape))
			assert.True(t, os.IsNotExist(err), "nothing was written through the link")
		}
		tree := s.get(t, "/files")
		assert.Contains(t, tree.body, `"path":"etc-link","type":"symlink"`)
		assert.NotContains(t, tree.body, "etc-link/", "listings do not descend into links")

		arch := s.get(t, "/archive")
		require.Equal(t, http.StatusOK, arch.status)
		names, contents := untar(t, arch.body)
		assert.Contains(t, names, "docs/a.txt")
		assert.Contains(t, names, "made.txt")
		assert.Contains(t, names, "etc-link", "links are archived as links")
		assert.NotContains(t, contents, "root:", "links are never followed")
	})
}

// summarizeRequests renders recorded API requests briefly for failure messages.
func summarizeRequests(reqs []anthropictest.RecordedRequest) string {
	var b strings.Builder
	for _, r := range reqs {
		text := r.LastUserText()
		if len(text) > 80 {
			text = text[:80] + "…"
		}
		b.WriteString("\n  #" + strconv.Itoa(r.Seq) + " " + r.Time.Format("15:04:05.000") + " " + r.Duration.String() + " " + r.Method + " " + r.Path + " step=" + strconv.Itoa(r.MatchedStep) +
			" status=" + strconv.Itoa(r.Status) + " aborted=" + strconv.FormatBool(r.ClientAborted) + " tool_result=" + strconv.FormatBool(r.HasToolResult()) + " last_user=" + strconv.Quote(text))
	}
	return b.String()
}

// drain reads a stream to its end and returns its final event.
func drain(t *testing.T, st *agentclient.Stream) agent.Event {
	t.Helper()
	var last agent.Event
	for {
		e, err := st.Next()
		if errors.Is(err, io.EOF) {
			return last
		}
		require.NoError(t, err)
		last = e
	}
}

func lastEvent(events []agent.Event) agent.Event {
	if len(events) == 0 {
		return agent.Event{}
	}
	return events[len(events)-1]
}

// TestAgentRefusesBadSettings: the agent exits at once with a message
// naming what is wrong.
func TestAgentRefusesBadSettings(t *testing.T) {
	testenv.Integration(t)
	bin := testenv.GoBinary(t, "./agent/cmd/agcluster-agent")
	ws := t.TempDir()
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"no token", []string{"AGENT_WORKSPACE=" + ws}, "AGENT_TOKEN is required"},
		{"unknown config field", []string{"AGENT_TOKEN=t", "AGENT_WORKSPACE=" + ws, `AGENT_CONFIG={"allowed_tool":["Bash"]}`}, `unknown field "allowed_tool"`},
		{"unknown tool", []string{"AGENT_TOKEN=t", "AGENT_WORKSPACE=" + ws, `AGENT_CONFIG={"allowed_tools":["Bsh"]}`}, `allowed_tools[0]: unknown tool "Bsh"`},
		{"bad timeout", []string{"AGENT_TOKEN=t", "AGENT_WORKSPACE=" + ws, "AGENT_TURN_TIMEOUT=soon"}, "AGENT_TURN_TIMEOUT"},
		{"bad tool result timeout", []string{"AGENT_TOKEN=t", "AGENT_WORKSPACE=" + ws, "AGENT_TOOL_RESULT_TIMEOUT=0s"}, "AGENT_TOOL_RESULT_TIMEOUT"},
		{"no workspace", []string{"AGENT_TOKEN=t", "AGENT_WORKSPACE=" + filepath.Join(ws, "missing")}, "AGENT_WORKSPACE"},
		{"no claude", []string{"AGENT_TOKEN=t", "AGENT_WORKSPACE=" + ws, "CLAUDE_BIN=/nonexistent/claude"}, "CLAUDE_BIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			cmd.Env = append([]string{"PATH=/usr/bin:/bin", "CLAUDE_BIN=/bin/true", "AGENT_ADDR=127.0.0.1:0"}, tt.env...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "the agent must exit: %s", out)
			assert.Equal(t, 1, exit.ExitCode())
			assert.Contains(t, string(out), tt.want)
		})
	}
}

type response struct {
	status int
	body   string
	header http.Header
}

func (s *stack) raw(t *testing.T, method, path, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.agent.BaseURL, strings.NewReader(body))
	require.NoError(t, err)
	req.URL.Opaque = "//" + req.URL.Host + path // send the path exactly as written
	if p, q, ok := strings.Cut(path, "?"); ok {
		req.URL.Opaque, req.URL.RawQuery = "//"+req.URL.Host+p, q
	}
	req.Header.Set("Authorization", "Bearer "+s.agent.Token)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func (s *stack) get(t *testing.T, path string) response { return s.raw(t, http.MethodGet, path, "") }

func (s *stack) put(t *testing.T, path, body string) response {
	return s.raw(t, http.MethodPut, path, body)
}

func untar(t *testing.T, gz string) (names []string, contents string) {
	t.Helper()
	zr, err := gzip.NewReader(strings.NewReader(gz))
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	var all bytes.Buffer
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		names = append(names, h.Name)
		_, err = io.Copy(&all, tr)
		require.NoError(t, err)
	}
	return names, all.String()
}

func ptr[T any](v T) *T { return &v }
