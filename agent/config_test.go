package agent

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConfigAccepts(t *testing.T) {
	tests := []struct {
		name  string
		input string
		check func(t *testing.T, c *Config)
	}{{
		name:  "empty",
		input: `{}`,
		check: func(t *testing.T, c *Config) { assert.Equal(t, &Config{}, c) },
	}, {
		name:  "string system prompt",
		input: `{"id":"code-assistant","system_prompt":"You are terse.","allowed_tools":["Bash","Read","Bash(git:*)"]}`,
		check: func(t *testing.T, c *Config) {
			assert.Equal(t, "You are terse.", c.SystemPrompt.Text)
			assert.Empty(t, c.SystemPrompt.Preset)
		},
	}, {
		name:  "preset system prompt",
		input: `{"system_prompt":{"type":"preset","preset":"claude_code","append":"Be brief."},"permission_mode":"acceptEdits","max_turns":5}`,
		check: func(t *testing.T, c *Config) {
			assert.Equal(t, SystemPrompt{Preset: "claude_code", Append: "Be brief."}, *c.SystemPrompt)
			assert.Equal(t, 5, c.MaxTurns)
		},
	}, {
		name: "mcp servers and sub-agents",
		input: `{"allowed_tools":["mcp__github__*","mcp__time","Task","mcp__my__srv__tool"],
			"mcp_servers":{"github":{"command":"npx","args":["-y","server-github"],"env":{"GITHUB_TOKEN":""}},
			               "time":{"type":"http","url":"http://127.0.0.1:9/mcp"},
			               "my__srv":{"type":"sse","url":"http://127.0.0.1:9/sse"}},
			"agents":{"frontend":{"description":"UI work","prompt":"You build UIs.","tools":["Read","Write"],"model":"sonnet"}},
			"env":{"FOO":"bar"},"setting_sources":["project"],"resources":{"cpus":2,"memory":"4g","pids":256,"idle_timeout":"30m"}}`,
		check: func(t *testing.T, c *Config) {
			assert.Len(t, c.MCPServers, 3)
			assert.Equal(t, "UI work", c.Agents["frontend"].Description)
			assert.Equal(t, 2.0, c.Resources.CPUs)
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.input))
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestParseConfigRejects(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string // substring of the error, naming field and reason
	}{
		{"unknown field", `{"allowed_tool":["Bash"]}`, `unknown field "allowed_tool"`},
		{"not json", `{`, "parse agent config"},
		{"trailing data", `{} {}`, "trailing data"},
		{"bad id", `{"id":"Code Assistant"}`, "id:"},
		{"unknown tool", `{"allowed_tools":["Bassh"]}`, `allowed_tools[0]: unknown tool "Bassh"`},
		{"malformed tool", `{"disallowed_tools":["rm -rf"]}`, "disallowed_tools[0]"},
		{"mcp tool without server", `{"allowed_tools":["mcp__github__x"]}`, `names MCP server "github"`},
		{"bad permission mode", `{"permission_mode":"yolo"}`, `permission_mode: unknown mode "yolo"`},
		{"negative max turns", `{"max_turns":-1}`, "max_turns"},
		{"bad preset", `{"system_prompt":{"type":"preset","preset":"other"}}`, "system_prompt.preset"},
		{"bad prompt type", `{"system_prompt":{"type":"file"}}`, "system_prompt.type"},
		{"stdio without command", `{"mcp_servers":{"x":{"type":"stdio"}}}`, "mcp_servers.x.command: is required"},
		{"http without url", `{"mcp_servers":{"x":{"type":"http"}}}`, "mcp_servers.x.url"},
		{"unknown mcp type", `{"mcp_servers":{"x":{"type":"ws","url":"ws://h"}}}`, `mcp_servers.x.type: unknown type "ws"`},
		{"sub-agent without prompt", `{"agents":{"a":{"description":"d"}}}`, "agents.a.prompt: is required"},
		{"reserved env", `{"env":{"ANTHROPIC_API_KEY":"x"}}`, "env.ANTHROPIC_API_KEY: is reserved"},
		{"bad env name", `{"env":{"1X":"x"}}`, "env.1X"},
		{"bad setting source", `{"setting_sources":["global"]}`, "setting_sources[0]"},
		{"model with spaces", `{"model":"a b"}`, "model"},
		{"bad memory", `{"resources":{"memory":"4 gigs"}}`, "resources.memory"},
		{"bad idle timeout", `{"resources":{"idle_timeout":"soon"}}`, "resources.idle_timeout"},
		{"reserved mcp env", `{"mcp_servers":{"x":{"command":"c","env":{"PATH":""}}}}`, "mcp_servers.x.env.PATH: is reserved"},
		{"reserved mcp server name", `{"mcp_servers":{"client":{"command":"c"}}}`, `mcp_servers.client: server name "client" is reserved`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.input))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	_, err := ParseConfig([]byte(`{"id":"BAD","permission_mode":"x","max_turns":-2}`))
	require.Error(t, err)
	for _, field := range []string{"id:", "permission_mode:", "max_turns:"} {
		assert.Contains(t, err.Error(), field)
	}
}

func TestSystemPromptRoundTrip(t *testing.T) {
	for _, in := range []string{`"plain prompt"`, `{"type":"preset","preset":"claude_code","append":"more"}`} {
		var p SystemPrompt
		require.NoError(t, json.Unmarshal([]byte(in), &p))
		out, err := json.Marshal(p)
		require.NoError(t, err)
		assert.JSONEq(t, in, string(out))
	}
}
