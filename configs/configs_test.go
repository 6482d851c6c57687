package configs_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/configs"
)

var presetIDs = []string{"code-assistant", "data-analysis", "fullstack-team", "github-code-review", "research-agent"}

func TestPresets(t *testing.T) {
	s := configs.New()
	require.Equal(t, presetIDs, s.IDs())

	tests := []struct {
		id       string
		tools    []string
		mode     string
		cpus     float64
		memory   string
		maxTurns int
		check    func(t *testing.T, c *agent.Config)
	}{
		{
			id:    "code-assistant",
			tools: []string{"Bash", "Read", "Write", "Edit", "Grep", "Glob", "Task", "TodoWrite"},
			mode:  "acceptEdits", cpus: 2, memory: "4g", maxTurns: 100,
			check: func(t *testing.T, c *agent.Config) {
				require.NotNil(t, c.SystemPrompt)
				assert.Equal(t, "claude_code", c.SystemPrompt.Preset)
				assert.Contains(t, c.SystemPrompt.Append, "/workspace")
			},
		},
		{
			id:    "research-agent",
			tools: []string{"WebFetch", "WebSearch", "Read", "Write", "Grep", "TodoWrite"},
			mode:  "acceptEdits", cpus: 1, memory: "2g", maxTurns: 50,
		},
		{
			id:    "data-analysis",
			tools: []string{"Bash", "Read", "Write", "Edit", "Grep", "Glob", "NotebookEdit", "TodoWrite"},
			mode:  "acceptEdits", cpus: 2, memory: "6g", maxTurns: 75,
		},
		{
			id:    "fullstack-team",
			tools: []string{"Task", "Read", "Glob", "Grep", "TodoWrite"},
			mode:  "acceptEdits", cpus: 3, memory: "6g", maxTurns: 150,
			check: func(t *testing.T, c *agent.Config) {
				require.Len(t, c.Agents, 3)
				for _, name := range []string{"frontend", "backend", "devops"} {
					a, ok := c.Agents[name]
					require.True(t, ok, "sub-agent %s", name)
					assert.NotEmpty(t, a.Description, name)
					assert.NotEmpty(t, a.Prompt, name)
					assert.NotEmpty(t, a.Tools, name)
					assert.Contains(t, []string{"", "inherit"}, a.Model, name)
				}
			},
		},
		{
			id:    "github-code-review",
			tools: []string{"Read", "Write", "Grep", "TodoWrite", "mcp__github__*"},
			mode:  "bypassPermissions", cpus: 1, memory: "2g", maxTurns: 100,
			check: func(t *testing.T, c *agent.Config) {
				gh, ok := c.MCPServers["github"]
				require.True(t, ok)
				assert.Contains(t, []string{"", "stdio"}, gh.Type)
				assert.Equal(t, "npx", gh.Command)
				assert.Equal(t, []string{"-y", "@modelcontextprotocol/server-github"}, gh.Args)
				assert.Equal(t, map[string]string{"GITHUB_PERSONAL_ACCESS_TOKEN": ""}, gh.Env)
				assert.Equal(t, map[string][]string{"github": {"GITHUB_PERSONAL_ACCESS_TOKEN"}}, configs.MCPEnvKeys(c))
				assert.Equal(t, []string{"GITHUB_PERSONAL_ACCESS_TOKEN"}, configs.MissingMCPEnv(c))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			// The shipped file parses and validates on its own.
			data, err := os.ReadFile(filepath.Join("presets", tt.id+".json"))
			require.NoError(t, err)
			parsed, err := agent.ParseConfig(data)
			require.NoError(t, err)

			c, ok := s.Get(tt.id)
			require.True(t, ok)
			assert.Equal(t, parsed, c)
			require.NoError(t, c.Validate())
			assert.True(t, s.Preset(tt.id))
			assert.Equal(t, tt.id, c.ID)
			assert.NotEmpty(t, c.Name)
			assert.NotEmpty(t, c.Description)
			assert.Equal(t, tt.tools, c.AllowedTools)
			assert.Equal(t, tt.mode, c.PermissionMode)
			assert.Equal(t, tt.maxTurns, c.MaxTurns)
			require.NotNil(t, c.Resources)
			assert.Equal(t, tt.cpus, c.Resources.CPUs)
			assert.Equal(t, tt.memory, c.Resources.Memory)
			assert.Empty(t, c.Model, "model left to the CLI's default")
			assert.Empty(t, c.Image)
			assert.Empty(t, c.Env)
			if c.SystemPrompt != nil && c.SystemPrompt.Preset != "" {
				assert.Equal(t, "claude_code", c.SystemPrompt.Preset)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
	assert.False(t, s.Preset("my-agent"))
	_, ok := s.Get("my-agent")
	assert.False(t, ok)
}

func TestGetReturnsCopies(t *testing.T) {
	s := configs.New()
	for _, id := range s.IDs() {
		t.Run(id, func(t *testing.T) {
			want, _ := s.Get(id)
			c, _ := s.Get(id)
			c.Name = "changed"
			c.AllowedTools[0] = "Changed"
			c.AllowedTools = append(c.AllowedTools, "More")
			if c.SystemPrompt != nil {
				c.SystemPrompt.Append = "changed"
			}
			c.Resources.CPUs = 99
			for name, srv := range c.MCPServers {
				srv.Env["GITHUB_PERSONAL_ACCESS_TOKEN"] = "leaked"
				srv.Args[0] = "changed"
				c.MCPServers[name] = srv
			}
			for name, a := range c.Agents {
				a.Tools[0] = "Changed"
				c.Agents[name] = a
			}
			c.Agents = nil

			got, _ := s.Get(id)
			assert.Equal(t, want, got)
			for i, l := range s.List() {
				if l.ID == id {
					assert.Equal(t, want, l, "List()[%d]", i)
					l.Resources.Memory = "1t"
				}
			}
			got, _ = s.Get(id)
			assert.Equal(t, want, got)
		})
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	return dir
}

func TestLoad(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"my-agent.json": `{"id": "my-agent", "name": "Mine", "allowed_tools": ["Read", "Bash(git:*)"],
			"system_prompt": "You only read.", "resources": {"cpus": 0.5, "memory": "512m"}}`,
		"notes.txt":  "not a config",
		".tmp.json":  "{broken",
		"README.md":  "# configs",
		"other.yaml": "id: other",
	})
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.json"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub.json", "x.json"), []byte("{broken"), 0o644))

	s, err := configs.Load(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{"code-assistant", "data-analysis", "fullstack-team", "github-code-review", "my-agent", "research-agent"}, s.IDs())
	assert.False(t, s.Preset("my-agent"))
	assert.True(t, s.Preset("code-assistant"))

	list := s.List()
	require.Len(t, list, 6)
	for i := 1; i < len(list); i++ {
		assert.Less(t, list[i-1].ID, list[i].ID)
	}
	c, ok := s.Get("my-agent")
	require.True(t, ok)
	assert.Equal(t, "Mine", c.Name)
	assert.Equal(t, []string{"Read", "Bash(git:*)"}, c.AllowedTools)
	assert.Equal(t, "You only read.", c.SystemPrompt.Text)
	assert.Equal(t, 0.5, c.Resources.CPUs)

	t.Run("empty dir name loads presets", func(t *testing.T) {
		s, err := configs.Load("")
		require.NoError(t, err)
		assert.Equal(t, presetIDs, s.IDs())
	})
	t.Run("empty dir", func(t *testing.T) {
		s, err := configs.Load(t.TempDir())
		require.NoError(t, err)
		assert.Equal(t, presetIDs, s.IDs())
	})
	t.Run("missing dir", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope")
		s, err := configs.Load(missing)
		require.Error(t, err)
		assert.Nil(t, s)
		assert.ErrorIs(t, err, fs.ErrNotExist)
		assert.Contains(t, err.Error(), missing)
	})
	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(dir, "my-agent.json")
		_, err := configs.Load(file)
		require.Error(t, err)
		assert.Equal(t, "configs: "+file+": not a directory", err.Error())
	})
}

// loadErrors flattens the joined errors of Load.
func loadErrors(t *testing.T, err error) []*configs.LoadError {
	t.Helper()
	var parts []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{err}
	}
	var out []*configs.LoadError
	for _, p := range parts {
		var le *configs.LoadError
		require.True(t, errors.As(p, &le), "%T %v", p, p)
		out = append(out, le)
	}
	return out
}

func TestLoadBadFile(t *testing.T) {
	tests := []struct {
		name    string // test and file name (without .json)
		content string
		field   string
		reason  string // substring of the reason
		line    int
		msg     string // whole message, with DIR for the directory
	}{
		{
			name:    "unknown-tool",
			content: `{"id": "unknown-tool", "allowed_tools": ["Bassh"]}`,
			field:   "allowed_tools[0]", reason: `unknown tool "Bassh"`,
			msg: `configs: DIR/unknown-tool.json: allowed_tools[0]: unknown tool "Bassh"`,
		},
		{
			name:    "stdio-without-command",
			content: `{"id": "stdio-without-command", "mcp_servers": {"db": {"type": "stdio", "args": ["x"]}}}`,
			field:   "mcp_servers.db.command", reason: "is required for a stdio server",
			msg: `configs: DIR/stdio-without-command.json: mcp_servers.db.command: is required for a stdio server`,
		},
		{
			name:    "mcp-tool-without-server",
			content: `{"id": "mcp-tool-without-server", "allowed_tools": ["mcp__jira__*"]}`,
			field:   "allowed_tools[0]", reason: `names MCP server "jira", which is not in mcp_servers`,
		},
		{
			name:    "Bad ID",
			content: `{"id": "Bad ID"}`,
			field:   "id", reason: `"Bad ID" must be 1-63 lowercase letters`,
		},
		{
			name:    "id-mismatch",
			content: `{"id": "something-else"}`,
			field:   "id", reason: `"something-else" does not match the file name: it must be "id-mismatch"`,
			msg: `configs: DIR/id-mismatch.json: id: "something-else" does not match the file name: it must be "id-mismatch"`,
		},
		{
			name:    "no-id",
			content: `{"name": "No id"}`,
			field:   "id", reason: `is required and must be "no-id"`,
		},
		{
			name:    "unknown-field",
			content: `{"id": "unknown-field", "colour": "blue"}`,
			field:   "colour", reason: "unknown field (known: id, name,",
		},
		{
			name:    "unknown-nested-field",
			content: `{"id": "unknown-nested-field", "resources": {"cpus": 1, "cpu": 2}}`,
			field:   "resources.cpu", reason: "unknown field (known: cpus, memory, pids, idle_timeout)",
			msg: `configs: DIR/unknown-nested-field.json: resources.cpu: unknown field (known: cpus, memory, pids, idle_timeout)`,
		},
		{
			name:    "unknown-sub-agent-field",
			content: `{"id": "unknown-sub-agent-field", "agents": {"qa": {"description": "d", "prompt": "p", "tool": ["Read"]}}}`,
			field:   "agents.qa.tool", reason: "unknown field (known: description, prompt, tools, model)",
		},
		{
			name:    "unknown-mcp-field",
			content: `{"id": "unknown-mcp-field", "mcp_servers": {"gh": {"cmd": "npx"}}}`,
			field:   "mcp_servers.gh.cmd", reason: "unknown field (known: type, command, args, env, url, headers)",
		},
		{
			name:    "not-an-object",
			content: `["code-assistant"]`,
			field:   "(document)", reason: "must be an object, not a JSON array", line: 1,
		},
		{
			name:    "trailing-data",
			content: `{"id": "trailing-data"} {"id": "x"}`,
			reason:  "trailing data after the JSON object",
		},
		{
			name:    "syntax-error",
			content: "{\n  \"id\": \"syntax-error\",\n  \"name\": \"x\",,\n}",
			line:    3, reason: "invalid JSON: invalid character ','",
			msg: `configs: DIR/syntax-error.json:3:15: invalid JSON: invalid character ',' looking for beginning of object key string`,
		},
		{
			name:    "truncated",
			content: "{\n  \"id\": \"truncated\",\n  \"allowed_tools\": [\"Read\"",
			line:    3, reason: "invalid JSON: unexpected end of input",
		},
		{
			name:    "wrong-type",
			content: `{"id": "wrong-type", "max_turns": "lots"}`,
			field:   "max_turns", reason: "must be a whole number, not a JSON string",
			line: 1,
		},
		{
			name:    "bad-system-prompt",
			content: `{"id": "bad-system-prompt", "system_prompt": {"type": "text", "preset": "claude_code"}}`,
			field:   "system_prompt.type", reason: `must be "preset", got "text"`,
		},
		{
			name:    "bad-permission-mode",
			content: `{"id": "bad-permission-mode", "permission_mode": "yolo"}`,
			field:   "permission_mode", reason: `unknown mode "yolo"`,
		},
		{
			name:    "reserved-env",
			content: `{"id": "reserved-env", "env": {"ANTHROPIC_API_KEY": "sk-x"}}`,
			field:   "env.ANTHROPIC_API_KEY", reason: "is reserved for the agent server",
		},
		{
			name:    "code-assistant",
			content: `{"id": "code-assistant", "allowed_tools": ["Read"]}`,
			field:   "id", reason: `"code-assistant" is the id of a shipped preset`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				tt.name + ".json": tt.content,
				"good.json":       `{"id": "good"}`,
			})
			file := filepath.Join(dir, tt.name+".json")
			s, err := configs.Load(dir)
			require.Error(t, err)
			assert.Nil(t, s)
			errs := loadErrors(t, err)
			require.Len(t, errs, 1, "%v", err)
			le := errs[0]
			assert.Equal(t, file, le.File)
			assert.Equal(t, tt.field, le.Field)
			assert.Contains(t, le.Reason, tt.reason)
			if tt.line > 0 {
				assert.Equal(t, tt.line, le.Line)
				assert.Positive(t, le.Column)
			}
			assert.Contains(t, err.Error(), file)
			assert.Contains(t, err.Error(), tt.field)
			assert.Contains(t, err.Error(), tt.reason)
			if tt.msg != "" {
				assert.Equal(t, strings.Replace(tt.msg, "DIR/", dir+string(filepath.Separator), 1), err.Error())
			}
		})
	}
}

func TestLoadReportsEveryBadFile(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"good.json":           `{"id": "good", "allowed_tools": ["Read"]}`,
		"bad-tool.json":       `{"id": "bad-tool", "allowed_tools": ["Bassh"]}`,
		"two-bad.json":        `{"id": "two-bad", "permission_mode": "yolo", "max_turns": -1}`,
		"syntax.json":         `{"id": "syntax"`,
		"mismatch.json":       `{"id": "other"}`,
		"fullstack-team.json": `{"id": "fullstack-team"}`,
	})
	_, err := configs.Load(dir)
	require.Error(t, err)
	errs := loadErrors(t, err)

	got := map[string][]string{} // file -> fields
	for _, e := range errs {
		got[filepath.Base(e.File)] = append(got[filepath.Base(e.File)], e.Field)
	}
	assert.Equal(t, map[string][]string{
		"bad-tool.json":       {"allowed_tools[0]"},
		"two-bad.json":        {"permission_mode", "max_turns"},
		"syntax.json":         {""},
		"mismatch.json":       {"id"},
		"fullstack-team.json": {"id"},
	}, got)
	for _, name := range []string{"bad-tool.json", "two-bad.json", "syntax.json", "mismatch.json", "fullstack-team.json"} {
		assert.Contains(t, err.Error(), filepath.Join(dir, name))
	}
	assert.NotContains(t, err.Error(), "good.json")
}

func githubReview(t *testing.T) *agent.Config {
	t.Helper()
	c, ok := configs.New().Get("github-code-review")
	require.True(t, ok)
	return c
}

func TestApplyMCPEnv(t *testing.T) {
	const token = "GITHUB_PERSONAL_ACCESS_TOKEN"
	tests := []struct {
		name    string
		values  map[string]string
		wantErr []configs.MCPEnvError // nil = success
		msg     string                // substring of the error message
	}{
		{name: "fills the token", values: map[string]string{token: "ghp_secret"}},
		{
			name:    "missing token",
			values:  nil,
			wantErr: []configs.MCPEnvError{{Config: "github-code-review", Key: token, Missing: true, Reason: "declared by MCP server github without a value"}},
			msg:     "configs: github-code-review needs mcp_env GITHUB_PERSONAL_ACCESS_TOKEN",
		},
		{
			name:    "empty token",
			values:  map[string]string{token: " "},
			wantErr: []configs.MCPEnvError{{Config: "github-code-review", Key: token, Missing: true, Reason: "declared by MCP server github without a value"}},
			msg:     "needs mcp_env GITHUB_PERSONAL_ACCESS_TOKEN",
		},
		{
			name:    "undeclared key",
			values:  map[string]string{token: "ghp_secret", "GITLAB_TOKEN": "x"},
			wantErr: []configs.MCPEnvError{{Config: "github-code-review", Key: "GITLAB_TOKEN", Reason: "not declared by any MCP server of this configuration (declared: GITHUB_PERSONAL_ACCESS_TOKEN)"}},
			msg:     "configs: github-code-review: mcp_env GITLAB_TOKEN: not declared by any MCP server",
		},
		{
			name:    "reserved key",
			values:  map[string]string{token: "ghp_secret", "ANTHROPIC_API_KEY": "sk-ant"},
			wantErr: []configs.MCPEnvError{{Config: "github-code-review", Key: "ANTHROPIC_API_KEY", Reason: "is reserved for the agent server"}},
			msg:     "mcp_env ANTHROPIC_API_KEY: is reserved for the agent server",
		},
		{
			name:    "bad name",
			values:  map[string]string{token: "ghp_secret", "BAD-NAME": "x"},
			wantErr: []configs.MCPEnvError{{Config: "github-code-review", Key: "BAD-NAME", Reason: "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"}},
			msg:     "mcp_env BAD-NAME: not a valid environment variable name",
		},
		{
			name:    "NUL in value",
			values:  map[string]string{token: "ghp\x00secret"},
			wantErr: []configs.MCPEnvError{{Config: "github-code-review", Key: token, Reason: "value contains a NUL byte"}, {Config: "github-code-review", Key: token, Missing: true, Reason: "declared by MCP server github without a value"}},
		},
		{
			name:   "several problems at once",
			values: map[string]string{"HOME": "/root", "1X": "y"},
			wantErr: []configs.MCPEnvError{
				{Config: "github-code-review", Key: "1X", Reason: "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"},
				{Config: "github-code-review", Key: "HOME", Reason: "is reserved for the agent server"},
				{Config: "github-code-review", Key: token, Missing: true, Reason: "declared by MCP server github without a value"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := githubReview(t)
			before := githubReview(t)
			got, err := configs.ApplyMCPEnv(c, tt.values)
			assert.Equal(t, before, c, "input config must not change")
			if tt.wantErr == nil {
				require.NoError(t, err)
				assert.Equal(t, tt.values[token], got.MCPServers["github"].Env[token])
				assert.Empty(t, configs.MissingMCPEnv(got))
				require.NoError(t, got.Validate())
				// Nothing else changed, and the result shares nothing with c.
				got.MCPServers["github"].Env[token] = ""
				assert.Equal(t, before, got)
				got.MCPServers["github"].Args[0] = "changed"
				assert.Equal(t, before, c)
				return
			}
			require.Error(t, err)
			assert.Nil(t, got)
			var gotErrs []configs.MCPEnvError
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var me *configs.MCPEnvError
				require.True(t, errors.As(e, &me), "%T", e)
				gotErrs = append(gotErrs, *me)
			}
			assert.Equal(t, tt.wantErr, gotErrs)
			var me *configs.MCPEnvError
			assert.ErrorAs(t, err, &me)
			if tt.msg != "" {
				assert.Contains(t, err.Error(), tt.msg)
			}
		})
	}
}

func TestApplyMCPEnvWithoutMCP(t *testing.T) {
	c, ok := configs.New().Get("code-assistant")
	require.True(t, ok)
	assert.Empty(t, configs.MCPEnvKeys(c))
	assert.Empty(t, configs.MissingMCPEnv(c))

	got, err := configs.ApplyMCPEnv(c, nil)
	require.NoError(t, err)
	assert.Equal(t, c, got)
	assert.NotSame(t, c, got)

	_, err = configs.ApplyMCPEnv(c, map[string]string{"GITHUB_PERSONAL_ACCESS_TOKEN": "x"})
	var me *configs.MCPEnvError
	require.ErrorAs(t, err, &me)
	assert.Equal(t, "configs: code-assistant: mcp_env GITHUB_PERSONAL_ACCESS_TOKEN: not declared by any MCP server of this configuration", me.Error())

	_, err = configs.ApplyMCPEnv(nil, nil)
	require.ErrorAs(t, err, &me)
}

func TestMCPEnvSharedKey(t *testing.T) {
	// Two servers declaring the same key both get the value; a filled
	// declared key is not missing.
	c := &agent.Config{
		ID: "two",
		MCPServers: map[string]agent.MCPServer{
			"a": {Command: "a", Env: map[string]string{"TOKEN": "", "REGION": "eu"}},
			"b": {Command: "b", Env: map[string]string{"TOKEN": ""}},
			"c": {Type: "http", URL: "https://example.com/mcp"},
		},
	}
	require.NoError(t, c.Validate())
	assert.Equal(t, map[string][]string{"a": {"REGION", "TOKEN"}, "b": {"TOKEN"}}, configs.MCPEnvKeys(c))
	assert.Equal(t, []string{"TOKEN"}, configs.MissingMCPEnv(c))

	_, err := configs.ApplyMCPEnv(c, nil)
	assert.EqualError(t, err, "configs: two needs mcp_env TOKEN (declared by MCP server a, b without a value)")

	got, err := configs.ApplyMCPEnv(c, map[string]string{"TOKEN": "t", "REGION": "us"})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"TOKEN": "t", "REGION": "us"}, got.MCPServers["a"].Env)
	assert.Equal(t, map[string]string{"TOKEN": "t"}, got.MCPServers["b"].Env)
	assert.Equal(t, "", c.MCPServers["a"].Env["TOKEN"])
	assert.Equal(t, "eu", c.MCPServers["a"].Env["REGION"])
}
