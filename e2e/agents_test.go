package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// api is a management API client for one key.
type api struct {
	t   *testing.T
	g   *gateway
	key string
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), string(r.body))
}

// errorMessage is the message of an OpenAI-shaped error body.
func (r reply) errorMessage(t *testing.T) string {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	r.json(t, &e)
	require.NotEmpty(t, e.Error.Message, "an OpenAI-shaped error: %s", r.body)
	return e.Error.Message
}

func (a api) do(method, path string, body io.Reader, contentType string) reply {
	a.t.Helper()
	req, err := http.NewRequestWithContext(ctxFor(a.t, 2*time.Minute), method, a.g.url, body)
	require.NoError(a.t, err)
	p, q, _ := strings.Cut(path, "?")
	req.URL.Opaque = "//" + req.URL.Host + p // exactly as written: traversal tests depend on it
	req.URL.RawQuery = q
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func (a api) post(path string, v any) reply {
	b, err := json.Marshal(v)
	require.NoError(a.t, err)
	return a.do(http.MethodPost, path, bytes.NewReader(b), "application/json")
}

func (a api) launch(body map[string]any) agentsapi.SessionView {
	a.t.Helper()
	r := a.post("/api/agents/launch", body)
	require.Equal(a.t, http.StatusCreated, r.status, string(r.body))
	var v agentsapi.SessionView
	r.json(a.t, &v)
	require.NotEmpty(a.t, v.SessionID)
	return v
}

// chat runs one turn and returns its typed events.
func (a api) chat(id, prompt string) []agent.Event {
	a.t.Helper()
	return a.chatBody(id, map[string]string{"prompt": prompt})
}

// chatAfter runs one turn that continues after the turn with id after
// ("" for the beginning) and returns its typed events.
func (a api) chatAfter(id, prompt, after string) []agent.Event {
	a.t.Helper()
	return a.chatBody(id, map[string]string{"prompt": prompt, "branch": after})
}

// chatBody posts body to the session's chat and returns its typed events.
func (a api) chatBody(id string, body map[string]string) []agent.Event {
	a.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctxFor(a.t, 2*time.Minute), http.MethodPost, a.g.url+"/api/agents/sessions/"+id+"/chat", bytes.NewReader(b))
	require.NoError(a.t, err)
	req.Header.Set("Authorization", "Bearer "+a.key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	require.Equal(a.t, http.StatusOK, resp.StatusCode)
	require.Equal(a.t, "text/event-stream", strings.Split(resp.Header.Get("Content-Type"), ";")[0])
	st := agentclient.NewStream(resp.Body)
	defer st.Close()
	var events []agent.Event
	for {
		e, err := st.Next()
		if errors.Is(err, io.EOF) {
			return events
		}
		require.NoError(a.t, err)
		events = append(events, e)
	}
}

func TestAgentsAPI(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	alice := api{t: t, g: g, key: "sk-ant-test-alice"}
	bob := api{t: t, g: g, key: "sk-ant-test-bob"}

	t.Run("configs", func(t *testing.T) {
		alice.t = t
		r := alice.do(http.MethodGet, "/api/configs", nil, "")
		require.Equal(t, http.StatusOK, r.status)
		var list struct{ Configs []agent.Config }
		r.json(t, &list)
		var ids []string
		for _, c := range list.Configs {
			ids = append(ids, c.ID)
		}
		for _, id := range []string{"code-assistant", "research-agent", "data-analysis", "fullstack-team", "github-code-review"} {
			assert.Contains(t, ids, id)
		}
		r = alice.do(http.MethodGet, "/api/configs/fullstack-team", nil, "")
		require.Equal(t, http.StatusOK, r.status)
		var c agent.Config
		r.json(t, &c)
		assert.Len(t, c.Agents, 3)
		assert.Equal(t, http.StatusNotFound, alice.do(http.MethodGet, "/api/configs/nope", nil, "").status)

		oc := g.client(alice.key)
		models, err := oc.Models.List(ctxFor(t, 10*time.Second))
		require.NoError(t, err)
		var modelIDs []string
		for _, m := range models.Data {
			modelIDs = append(modelIDs, m.ID)
		}
		assert.Contains(t, modelIDs, "code-assistant", "configs are OpenAI models too")
	})

	t.Run("launch each preset and chat", func(t *testing.T) {
		alice.t = t
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Preset agent at your service."}})
		for _, id := range []string{"code-assistant", "research-agent", "data-analysis", "fullstack-team", "github-code-review"} {
			body := map[string]any{"config_id": id}
			if id == "github-code-review" {
				body["mcp_env"] = map[string]string{"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_test_token"}
			}
			before := len(e.containers(t, g.runID))
			v := alice.launch(body)
			assert.Equal(t, id, v.ConfigID)
			assert.Equal(t, "docker", v.Provider)
			assert.Equal(t, "running", v.Status)
			assert.Len(t, e.containers(t, g.runID), before+1, "%s: one container", id)
			events := alice.chat(v.SessionID, "Hello, "+id+".")
			last := events[len(events)-1]
			require.Equal(t, agent.EventResult, last.Type, "%s: %+v", id, last)
			assert.Equal(t, "Preset agent at your service.", last.Result.Text)
			require.Equal(t, http.StatusOK, alice.do(http.MethodDelete, "/api/agents/sessions/"+v.SessionID, nil, "").status)
			assert.Len(t, e.containers(t, g.runID), before, "%s: delete removed the container", id)
		}
		reqs, err := e.mock.Requests(context.Background())
		require.NoError(t, err)
		found := false
		for _, r := range reqs {
			if strings.Contains(r.AllText(), "Hello, code-assistant.") {
				found = true
				assert.Contains(t, r.AllText(), "/workspace", "the preset's system prompt reached the model")
			}
		}
		assert.True(t, found)
	})

	t.Run("chat branches after an earlier turn", func(t *testing.T) {
		alice.t = t
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
		v := alice.launch(map[string]any{"config_id": "code-assistant"})
		turnID := func(events []agent.Event) string {
			last := events[len(events)-1]
			require.Equal(t, agent.EventResult, last.Type, "%+v", last)
			require.NotEmpty(t, last.Result.TurnID, "a result names its turn")
			return last.Result.TurnID
		}
		first := turnID(alice.chat(v.SessionID, "Remember the apple."))
		turnID(alice.chat(v.SessionID, "Remember the banana."))
		turnID(alice.chatAfter(v.SessionID, "Which fruits do you remember?", first))
		sent := e.lastCLIRequest(t).AllText()
		assert.Contains(t, sent, "Remember the apple.")
		assert.NotContains(t, sent, "Remember the banana.", "the turn after the branch point is not in the model's context")
		turnID(alice.chatAfter(v.SessionID, "Start over: any fruit?", ""))
		sent = e.lastCLIRequest(t).AllText()
		assert.NotContains(t, sent, "Remember the apple.", "a branch from the beginning has no earlier turn")
		require.Equal(t, http.StatusOK, alice.do(http.MethodDelete, "/api/agents/sessions/"+v.SessionID, nil, "").status)
	})

	t.Run("files: upload, read with a tool, download, archive", func(t *testing.T) {
		alice.t = t
		v := alice.launch(map[string]any{"config_id": "code-assistant"})
		id := v.SessionID
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		require.NoError(t, mw.WriteField("path", "data"))
		fw, err := mw.CreateFormFile("file", "numbers.csv")
		require.NoError(t, err)
		_, _ = io.WriteString(fw, "n\n1\n2\n3\n")
		require.NoError(t, mw.Close())
		r := alice.do(http.MethodPost, "/api/agents/sessions/"+id+"/files", bytes.NewReader(buf.Bytes()), mw.FormDataContentType())
		require.Equal(t, http.StatusCreated, r.status, string(r.body))
		assert.Contains(t, string(r.body), `"path":"data/numbers.csv"`)
		r = alice.do(http.MethodPost, "/api/agents/sessions/"+id+"/files", bytes.NewReader(buf.Bytes()), mw.FormDataContentType())
		assert.Equal(t, http.StatusConflict, r.status, "no overwrite unless asked")
		r = alice.do(http.MethodPost, "/api/agents/sessions/"+id+"/files?overwrite=true", bytes.NewReader(buf.Bytes()), mw.FormDataContentType())
		assert.Equal(t, http.StatusCreated, r.status)

		e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
			Match: anthropictest.Match{LastUserTextContains: "sum the numbers"},
			Response: anthropictest.Response{Blocks: []anthropictest.Block{anthropictest.ToolUse("Bash", map[string]string{
				"command":     "tail -n +2 data/numbers.csv | paste -sd+ | bc 2>/dev/null || awk 'NR>1{s+=$1} END{print s}' data/numbers.csv; awk 'NR>1{s+=$1} END{print \"sum=\" s}' data/numbers.csv > result.txt",
				"description": "sum",
			})}},
		}, {
			Match:    anthropictest.Match{HasToolResult: ptr(true)},
			Response: anthropictest.Response{Text: "Wrote result.txt."},
		}}})
		events := alice.chat(id, "Please sum the numbers in data/numbers.csv.")
		require.Equal(t, agent.EventResult, events[len(events)-1].Type, "%+v", events)
		reqs, err := e.mock.Requests(context.Background())
		require.NoError(t, err)
		require.Len(t, reqs, 2)
		assert.Contains(t, strings.Join(reqs[1].ToolResultTexts(), ""), "6", "the agent read the uploaded file")

		r = alice.do(http.MethodGet, "/api/agents/sessions/"+id+"/files/result.txt?download=1", nil, "")
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		assert.Equal(t, "sum=6\n", string(r.body))
		assert.Contains(t, r.header.Get("Content-Disposition"), "attachment")
		assert.Contains(t, r.header.Get("Content-Type"), "text/plain")

		r = alice.do(http.MethodPut, "/api/agents/sessions/"+id+"/files/notes/todo.md", strings.NewReader("- ship\n"), "text/markdown")
		assert.Equal(t, http.StatusCreated, r.status, string(r.body))
		r = alice.do(http.MethodGet, "/api/agents/sessions/"+id+"/files", nil, "")
		require.Equal(t, http.StatusOK, r.status)
		for _, p := range []string{"data/numbers.csv", "result.txt", "notes/todo.md"} {
			assert.Contains(t, string(r.body), `"path":"`+p+`"`)
		}

		r = alice.do(http.MethodGet, "/api/agents/sessions/"+id+"/archive", nil, "")
		require.Equal(t, http.StatusOK, r.status)
		dir := t.TempDir()
		untarTo(t, r.body, dir)
		for p, want := range map[string]string{"data/numbers.csv": "n\n1\n2\n3\n", "result.txt": "sum=6\n", "notes/todo.md": "- ship\n"} {
			got, err := os.ReadFile(filepath.Join(dir, p))
			require.NoError(t, err, p)
			assert.Equal(t, want, string(got), p)
		}

		big := make([]byte, 50<<20+1)
		r = alice.do(http.MethodPut, "/api/agents/sessions/"+id+"/files/big.bin", bytes.NewReader(big), "application/octet-stream")
		assert.Equal(t, http.StatusRequestEntityTooLarge, r.status)

		t.Run("traversal is refused", func(t *testing.T) {
			e.script(t, anthropictest.Script{Steps: []anthropictest.Step{{
				Match: anthropictest.Match{LastUserTextContains: "make links"},
				Response: anthropictest.Response{Blocks: []anthropictest.Block{anthropictest.ToolUse("Bash", map[string]string{
					"command": "ln -s /etc etc-link && ln -s /etc/passwd passwd-link && echo ok", "description": "links"})}},
			}, {Match: anthropictest.Match{HasToolResult: ptr(true)}, Response: anthropictest.Response{Text: "Linked."}}}})
			alice.t = t
			alice.chat(id, "Please make links.")
			base := "/api/agents/sessions/" + id + "/files/"
			for _, p := range []string{"../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "%2fetc%2fpasswd", "/etc/passwd",
				"data/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "etc-link/passwd", "passwd-link"} {
				r := alice.do(http.MethodGet, base+p, nil, "")
				assert.True(t, r.status >= 400 && r.status < 500, "%s: %d %s", p, r.status, r.body)
				assert.NotContains(t, string(r.body), "root:", p)
				r = alice.do(http.MethodPut, base+p, strings.NewReader("x"), "")
				assert.True(t, r.status >= 400 && r.status < 500, "PUT %s: %d", p, r.status)
			}
		})

		t.Run("resources", func(t *testing.T) {
			alice.t = t
			r := alice.do(http.MethodGet, "/api/agents/sessions/"+id+"/resources", nil, "")
			require.Equal(t, http.StatusOK, r.status)
			var res struct {
				CPUPercent    float64 `json:"cpu_percent"`
				MemoryUsed    int64   `json:"memory_used"`
				MemoryLimit   int64   `json:"memory_limit"`
				Pids          int64   `json:"pids"`
				UptimeSeconds float64 `json:"uptime_seconds"`
				Turns         int64   `json:"turns"`
				Busy          bool    `json:"busy"`
			}
			r.json(t, &res)
			assert.Positive(t, res.MemoryUsed)
			assert.Equal(t, int64(4<<30), res.MemoryLimit, "code-assistant's 4g")
			assert.Positive(t, res.Pids)
			assert.Positive(t, res.UptimeSeconds)
			assert.GreaterOrEqual(t, res.Turns, int64(2))
			assert.GreaterOrEqual(t, res.CPUPercent, 0.0)
		})

		t.Run("another owner gets 404 on every endpoint", func(t *testing.T) {
			bob.t = t
			for _, rt := range agentsapi.Routes() {
				if !rt.Owned {
					continue
				}
				p := strings.ReplaceAll(rt.Pattern, "{id}", id)
				p = strings.ReplaceAll(p, "{path...}", "result.txt")
				var body io.Reader
				if rt.Method != http.MethodGet {
					body = strings.NewReader(`{"prompt":"hi"}`)
				}
				r := bob.do(rt.Method, p, body, "application/json")
				assert.Equal(t, http.StatusNotFound, r.status, "%s %s", rt.Method, p)
				assert.NotContains(t, string(r.body), "sum=6")
			}
			r := bob.do(http.MethodGet, "/api/agents/sessions", nil, "")
			assert.NotContains(t, string(r.body), id, "Bob's list holds none of Alice's sessions")
		})

		t.Run("chat completions continue a launched session", func(t *testing.T) {
			e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Continuing."}})
			before := len(e.containers(t, g.runID))
			got, err := streamed(t, g.client(alice.key), openai.ChatCompletionNewParams{Model: "code-assistant",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What did you write?")}}, sessionHeader(id))
			require.NoError(t, err)
			assert.Equal(t, "Continuing.", got.Choices[0].Message.Content)
			assert.Len(t, e.containers(t, g.runID), before)
			reqs, err := e.mock.Requests(context.Background())
			require.NoError(t, err)
			assert.Contains(t, reqs[len(reqs)-1].AllText(), "sum the numbers", "same agent, same history")
		})
	})

	t.Run("bad launches are 400 with clear messages", func(t *testing.T) {
		alice.t = t
		before := len(e.containers(t, g.runID))
		for _, tc := range []struct {
			name string
			body map[string]any
			want string
		}{
			{"unknown config_id", map[string]any{"config_id": "nope"}, `unknown config_id "nope"`},
			{"unknown provider", map[string]any{"config_id": "code-assistant", "provider": "nomad"}, `unknown provider "nomad"`},
			{"invalid inline config", map[string]any{"config": map[string]any{"allowed_tools": []string{"Bassh"}}}, `allowed_tools[0]: unknown tool "Bassh"`},
			{"bad mcp spec", map[string]any{"config": map[string]any{"mcp_servers": map[string]any{"x": map[string]any{"type": "stdio"}}}}, "mcp_servers.x.command"},
			{"mcp_env for an undeclared key", map[string]any{"config_id": "github-code-review", "mcp_env": map[string]string{"GITHUB_PERSONAL_ACCESS_TOKEN": "t", "OTHER": "x"}}, "OTHER"},
			{"mcp_env with a reserved name", map[string]any{"config_id": "github-code-review", "mcp_env": map[string]string{"ANTHROPIC_API_KEY": "x"}}, "ANTHROPIC_API_KEY"},
			{"missing mcp_env", map[string]any{"config_id": "github-code-review"}, "GITHUB_PERSONAL_ACCESS_TOKEN"},
			{"neither", map[string]any{}, "config_id or config is required"},
		} {
			r := alice.post("/api/agents/launch", tc.body)
			assert.Equal(t, http.StatusBadRequest, r.status, tc.name)
			assert.Contains(t, r.errorMessage(t), tc.want, tc.name)
		}
		assert.Len(t, e.containers(t, g.runID), before, "no container for a bad launch")
		assert.Equal(t, http.StatusUnauthorized, api{t: t, g: g}.post("/api/agents/launch", map[string]any{"config_id": "code-assistant"}).status)
	})

	t.Run("every documented route answers", func(t *testing.T) {
		alice.t = t
		r := alice.do(http.MethodGet, "/api/agents/openapi.json", nil, "")
		require.Equal(t, http.StatusOK, r.status)
		var doc struct {
			OpenAPI string                               `json:"openapi"`
			Paths   map[string]map[string]map[string]any `json:"paths"`
		}
		r.json(t, &doc)
		assert.True(t, strings.HasPrefix(doc.OpenAPI, "3."))
		v := alice.launch(map[string]any{"config_id": "code-assistant"})
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "ok"}})
		require.Equal(t, http.StatusCreated, alice.do(http.MethodPut, "/api/agents/sessions/"+v.SessionID+"/files/any.txt", strings.NewReader("x"), "").status)
		n := 0
		for p, ops := range doc.Paths {
			for method := range ops {
				if method == "delete" {
					continue // last, below
				}
				path := strings.ReplaceAll(strings.ReplaceAll(p, "{id}", v.SessionID), "{path}", "any.txt")
				if path == "/api/configs/{id}" {
					path = "/api/configs/code-assistant"
				}
				path = strings.ReplaceAll(path, "/api/configs/"+v.SessionID, "/api/configs/code-assistant")
				var body io.Reader
				ct := "application/json"
				switch {
				case strings.HasSuffix(p, "/chat"):
					body = strings.NewReader(`{"prompt":"hi"}`)
				case strings.HasSuffix(p, "/launch"):
					body = strings.NewReader(`{"config_id":"code-assistant"}`)
				case method == "post" && strings.HasSuffix(p, "/files"):
					body, ct = strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u.txt\"\r\n\r\nhi\r\n--x--\r\n"), "multipart/form-data; boundary=x"
				case method == "put":
					body = strings.NewReader("hello")
				}
				if method == "put" {
					path += "?overwrite=true"
				}
				r := alice.do(strings.ToUpper(method), path, body, ct)
				assert.True(t, r.status < 300, "%s %s: %d %s", method, path, r.status, r.body)
				assert.NotContains(t, string(r.body), "no such endpoint")
				if strings.HasSuffix(p, "/launch") && r.status == http.StatusCreated {
					var lv agentsapi.SessionView
					r.json(t, &lv)
					alice.do(http.MethodDelete, "/api/agents/sessions/"+lv.SessionID, nil, "")
				}
				n++
			}
		}
		assert.GreaterOrEqual(t, n, 13)
		r = alice.do(http.MethodDelete, "/api/agents/sessions/"+v.SessionID, nil, "")
		assert.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, http.StatusNotFound, alice.do(http.MethodDelete, "/api/agents/sessions/"+v.SessionID, nil, "").status)
	})
}

// TestInvalidCustomConfigs: a configs directory with a bad file stops the
// config from loading, with the file, field and reason in the message.
func TestInvalidCustomConfigs(t *testing.T) {
	testenv.Integration(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "my-agent.json"), []byte(`{"id":"my-agent","allowed_tools":["Bassh"]}`), 0o644))
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(cfg, []byte("{\n\tadmin off\n\tagcluster {\n\t\tconfigs "+dir+"\n\t}\n}\n:0 {\n\tagcluster\n}\n"), 0o644))
	out, err := exec.Command(caddyBin(t), "validate", "--config", cfg, "--adapter", "caddyfile").CombinedOutput()
	require.Error(t, err, string(out))
	assert.Contains(t, string(out), "my-agent.json")
	assert.Contains(t, string(out), `allowed_tools[0]: unknown tool`)
	assert.Contains(t, string(out), `Bassh`)
}

func sessionHeader(id string) option.RequestOption { return option.WithHeader("X-Session-ID", id) }

func untarTo(t *testing.T, gz []byte, dir string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		target := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			require.NoError(t, os.MkdirAll(target, 0o755))
		case tar.TypeReg:
			require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o755))
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(target, b, 0o644))
		}
	}
}
