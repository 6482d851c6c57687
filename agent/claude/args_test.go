package claude

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

func TestArgs(t *testing.T) {
	base := []string{"-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
		"--include-partial-messages", "--permission-prompts", "none"}
	tests := []struct {
		name   string
		cfg    string
		launch Launch
		want   []string
	}{{
		name: "defaults", cfg: `{}`, launch: Launch{SessionID: "s1"},
		want: append(append([]string{}, base...), "--session-id", "s1", "--allowedTools=mcp__client", "--setting-sources="),
	}, {
		name: "resume", cfg: `{}`, launch: Launch{SessionID: "s1", Resume: true},
		want: append(append([]string{}, base...), "--resume", "s1", "--allowedTools=mcp__client", "--setting-sources="),
	}, {
		name: "fork", cfg: `{}`, launch: Launch{SessionID: "s2", ForkFrom: "s1", ForkAt: "u1"},
		want: append(append([]string{}, base...), "--resume", "s1", "--resume-session-at", "u1", "--fork-session",
			"--session-id", "s2", "--allowedTools=mcp__client", "--setting-sources="),
	}, {
		name: "everything",
		cfg: `{"allowed_tools":["Bash","Read"],"disallowed_tools":["WebFetch"],
			"system_prompt":{"type":"preset","preset":"claude_code","append":"Be brief."},
			"permission_mode":"acceptEdits","max_turns":7,"model":"claude-sonnet-4-5",
			"mcp_servers":{"t":{"type":"http","url":"http://127.0.0.1:1/mcp"}},
			"agents":{"helper":{"description":"d","prompt":"p"}},"setting_sources":["project","local"]}`,
		want: append(append([]string{}, base...),
			"--allowedTools=Bash,Read,mcp__client", "--disallowedTools=WebFetch",
			"--append-system-prompt", "Be brief.",
			"--permission-mode", "acceptEdits", "--max-turns", "7", "--model", "claude-sonnet-4-5",
			"--mcp-config", `{"mcpServers":{"t":{"type":"http","url":"http://127.0.0.1:1/mcp"}}}`, "--strict-mcp-config",
			"--agents", `{"helper":{"description":"d","prompt":"p"}}`,
			"--setting-sources=project,local"),
	}, {
		name: "replaced system prompt", cfg: `{"system_prompt":"Only say yes."}`,
		want: append(append([]string{}, base...), "--allowedTools=mcp__client", "--system-prompt", "Only say yes.", "--setting-sources="),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := agent.ParseConfig([]byte(tt.cfg))
			require.NoError(t, err)
			got, err := LaunchArgs(cfg, tt.launch)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
