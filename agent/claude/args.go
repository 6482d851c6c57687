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
	return LaunchArgs(cfg, Launch{SessionID: sessionID, Resume: resume})
}

// Launch says which Claude Code session a CLI process starts on.
type Launch struct {
	// SessionID is the session to resume (Resume), else the id of the
	// session to create (fresh, or as a fork of ForkFrom).
	SessionID string
	// Resume continues SessionID as it is.
	Resume bool
	// ForkFrom, when set (and not Resume), starts SessionID as a copy of
	// this session's messages up to and including the chain entry ForkAt;
	// ForkFrom itself is left as it is.
	ForkFrom string
	// ForkAt is the uuid of a message of ForkFrom (set with ForkFrom).
	ForkAt string
}

// LaunchArgs builds the CLI's command line for cfg, starting on the
// session l describes.
//
// A fork is "--resume <from> --resume-session-at <uuid> --fork-session
// --session-id <new>" (claude 2.1.328; --resume-session-at is a hidden
// flag: "only messages up to and including the chain entry with
// <message.id> — any chain-entry UUID, typically the kept turn's last
// entry (use with --resume in print mode)"). --session-id names the fork
// (without it the CLI picks a random id). The fork's session file is only
// written with its first turn, and it carries the original's file
// checkpoints (all of them, also those of the cut-off turns). An unknown
// uuid is not refused at start-up: the first turn fails with "No message
// found with message.uuid of: <uuid>".
func LaunchArgs(cfg *agent.Config, l Launch) ([]string, error) {
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
	switch {
	case l.Resume:
		args = append(args, "--resume", l.SessionID)
	case l.ForkFrom != "":
		args = append(args, "--resume", l.ForkFrom, "--resume-session-at", l.ForkAt, "--fork-session", "--session-id", l.SessionID)
	case l.SessionID != "":
		args = append(args, "--session-id", l.SessionID)
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
