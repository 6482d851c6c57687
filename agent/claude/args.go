// Package claude drives one long-lived Claude Code CLI process in
// stream-json mode and turns its output into agent events.
//
// The CLI is started before the first query and initialised with a
// control_request, so a new conversation does not wait for CLI start-up. Each
// turn writes one user line to the CLI's stdin and reads stdout until the
// turn's result line. A client that goes away interrupts the turn with the
// stream-json interrupt control request; a CLI that dies is restarted with
// --resume so the conversation keeps its context.
package claude

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/clienttools"
)

// Args builds the CLI's command line for cfg. sessionID is the Claude Code
// session to create (resume false) or to resume (resume true).
func Args(cfg *agent.Config, sessionID string, resume bool) ([]string, error) {
	args := []string{
		"-p",
		"--input-format", "stream-json",
		"--output-format", "stream-json",
		"--verbose",
		"--include-partial-messages",
		// Nobody answers permission prompts in a headless agent: anything
		// that would prompt is denied at once instead of hanging the turn.
		"--permission-prompts", "none",
	}
	if resume {
		args = append(args, "--resume", sessionID)
	} else if sessionID != "" {
		args = append(args, "--session-id", sessionID)
	}
	if cfg == nil {
		cfg = &agent.Config{}
	}
	// The client's functions (package clienttools) are always allowed:
	// under --permission-prompts none a call no rule allows is denied.
	allowed := append(slices.Clip(cfg.AllowedTools), clienttools.AllowRule)
	args = append(args, "--allowedTools="+strings.Join(allowed, ","))
	if len(cfg.DisallowedTools) > 0 {
		args = append(args, "--disallowedTools="+strings.Join(cfg.DisallowedTools, ","))
	}
	if p := cfg.SystemPrompt; p != nil {
		switch {
		case p.Preset != "" && p.Append != "":
			args = append(args, "--append-system-prompt", p.Append)
		case p.Preset == "" && p.Text != "":
			args = append(args, "--system-prompt", p.Text)
		}
	}
	if cfg.PermissionMode != "" {
		args = append(args, "--permission-mode", cfg.PermissionMode)
	}
	if cfg.MaxTurns > 0 {
		args = append(args, "--max-turns", strconv.Itoa(cfg.MaxTurns))
	}
	if cfg.Model != "" {
		args = append(args, "--model", cfg.Model)
	}
	if len(cfg.MCPServers) > 0 {
		b, err := json.Marshal(map[string]any{"mcpServers": cfg.MCPServers})
		if err != nil {
			return nil, fmt.Errorf("encode mcp_servers: %w", err)
		}
		args = append(args, "--mcp-config", string(b), "--strict-mcp-config")
	}
	if len(cfg.Agents) > 0 {
		b, err := json.Marshal(cfg.Agents)
		if err != nil {
			return nil, fmt.Errorf("encode agents: %w", err)
		}
		args = append(args, "--agents", string(b))
	}
	// Without an explicit list the CLI would load settings from the
	// workspace, which the agent (or a user upload) can write.
	args = append(args, "--setting-sources="+strings.Join(cfg.SettingSources, ","))
	return args, nil
}
