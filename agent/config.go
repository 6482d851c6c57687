package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/docker/go-units"
)

// Config is an agent configuration: which tools the agent may use, its
// system prompt, permission mode, model, MCP servers and sub-agents. The
// agent server reads it from AGENT_CONFIG; the control plane ships presets
// and loads custom ones from files.
type Config struct {
	// ID names the configuration (lowercase letters, digits and dashes).
	ID string `json:"id,omitempty"`
	// Name is a human-readable title.
	Name string `json:"name,omitempty"`
	// Description says what the agent is for.
	Description string `json:"description,omitempty"`
	// AllowedTools are tools the agent may use without asking, with
	// optional rule suffixes such as "Bash(git:*)".
	AllowedTools []string `json:"allowed_tools,omitempty"`
	// DisallowedTools are tools the agent may never use.
	DisallowedTools []string `json:"disallowed_tools,omitempty"`
	// SystemPrompt replaces or extends Claude Code's system prompt.
	SystemPrompt *SystemPrompt `json:"system_prompt,omitempty"`
	// PermissionMode is the CLI's permission mode: "default",
	// "acceptEdits", "bypassPermissions", "plan", "dontAsk", "auto" or
	// "manual". Tool calls that would need a prompt are denied, never left
	// hanging.
	PermissionMode string `json:"permission_mode,omitempty"`
	// MaxTurns caps the model calls of one turn (0 = the CLI's default).
	MaxTurns int `json:"max_turns,omitempty"`
	// Model is the model id or alias (empty = the CLI's default).
	Model string `json:"model,omitempty"`
	// MCPServers are the MCP servers the agent can use, by name.
	MCPServers map[string]MCPServer `json:"mcp_servers,omitempty"`
	// Agents are sub-agents the Task tool can start, by name.
	Agents map[string]SubAgent `json:"agents,omitempty"`
	// Env is extra environment for the CLI process.
	Env map[string]string `json:"env,omitempty"`
	// SettingSources selects which settings files the CLI loads ("user",
	// "project", "local"); nil loads none, so a workspace cannot change the
	// agent's permissions.
	SettingSources []string `json:"setting_sources,omitempty"`
	// Resources are the container limits the control plane applies.
	Resources *Resources `json:"resources,omitempty"`
	// Image overrides the agent image for this configuration.
	Image string `json:"image,omitempty"`
	// Provider names the gateway provider that runs this configuration's
	// agents (default: the gateway's default provider). The agent itself
	// ignores it.
	Provider string `json:"provider,omitempty"`
}

// SystemPrompt is either a whole prompt (Text) or Claude Code's own prompt
// (Preset "claude_code") with text appended. In JSON it is a string or an
// object {"type":"preset","preset":"claude_code","append":"..."}.
type SystemPrompt struct {
	// Text, when set, replaces the system prompt.
	Text string `json:"-"`
	// Preset names the built-in prompt to keep ("claude_code").
	Preset string `json:"-"`
	// Append is added to the end of the preset prompt.
	Append string `json:"-"`
}

type systemPromptObject struct {
	Type   string `json:"type"`
	Preset string `json:"preset"`
	Append string `json:"append,omitempty"`
}

// MarshalJSON writes a string for a replaced prompt, an object for a preset.
func (p SystemPrompt) MarshalJSON() ([]byte, error) {
	if p.Preset == "" {
		return json.Marshal(p.Text)
	}
	return json.Marshal(systemPromptObject{Type: "preset", Preset: p.Preset, Append: p.Append})
}

// UnmarshalJSON accepts a string or a preset object.
func (p *SystemPrompt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		*p = SystemPrompt{}
		return json.Unmarshal(b, &p.Text)
	}
	var o systemPromptObject
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return fmt.Errorf("system_prompt must be a string or {\"type\":\"preset\",\"preset\":\"claude_code\",\"append\":...}: %w", err)
	}
	if o.Type != "preset" {
		return fmt.Errorf("system_prompt.type must be \"preset\", got %q", o.Type)
	}
	*p = SystemPrompt{Preset: o.Preset, Append: o.Append}
	return nil
}

// MCPServer is one MCP server. Type "stdio" runs Command with Args and Env;
// "sse" and "http" connect to URL with Headers.
type MCPServer struct {
	// Type is "stdio" (default), "sse" or "http".
	Type string `json:"type,omitempty"`
	// Command is the program of a stdio server.
	Command string `json:"command,omitempty"`
	// Args are the program's arguments.
	Args []string `json:"args,omitempty"`
	// Env is the stdio server's environment. Values may be filled at launch.
	Env map[string]string `json:"env,omitempty"`
	// URL is the endpoint of an sse or http server.
	URL string `json:"url,omitempty"`
	// Headers are sent to an sse or http server.
	Headers map[string]string `json:"headers,omitempty"`
}

// SubAgent is a sub-agent definition for the Task tool.
type SubAgent struct {
	// Description tells the main agent when to use this sub-agent.
	Description string `json:"description"`
	// Prompt is the sub-agent's system prompt.
	Prompt string `json:"prompt"`
	// Tools restricts the sub-agent's tools (empty = inherit).
	Tools []string `json:"tools,omitempty"`
	// Model is "sonnet", "opus", "haiku", "inherit" or a model id.
	Model string `json:"model,omitempty"`
}

// Resources are container limits for an agent configuration.
type Resources struct {
	// CPUs is the CPU limit (e.g. 2 or 0.5).
	CPUs float64 `json:"cpus,omitempty"`
	// Memory is the memory limit ("4g", "512m").
	Memory string `json:"memory,omitempty"`
	// Pids is the process-count limit.
	Pids int64 `json:"pids,omitempty"`
	// IdleTimeout is how long an idle session lives ("30m").
	IdleTimeout string `json:"idle_timeout,omitempty"`
}

// ParseConfig decodes and validates a JSON configuration. Unknown fields
// are errors, so a typo never silently widens or narrows an agent.
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse agent config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse agent config: trailing data after the JSON object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var (
	configIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	toolPattern     = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_]*)(\((.+)\))?$`)
	mcpToolPattern  = regexp.MustCompile(`^mcp__([A-Za-z0-9_-]+?)(__([A-Za-z0-9_*-]+))?$`)
	envNamePattern  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	agentNamePatten = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	mcpNamePattern  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// KnownTools are the Claude Code tool names a configuration may name,
// including names older CLI versions used.
var KnownTools = map[string]bool{
	"Agent": true, "Bash": true, "BashOutput": true, "CronCreate": true, "CronDelete": true,
	"CronList": true, "Edit": true, "EnterWorktree": true, "ExitPlanMode": true, "ExitWorktree": true,
	"Glob": true, "Grep": true, "KillBash": true, "KillShell": true, "LS": true, "ListAgents": true,
	"ListMcpResourcesTool": true, "Monitor": true, "MultiEdit": true, "NotebookEdit": true,
	"NotebookRead": true, "Read": true, "ReadMcpResourceTool": true, "ReportFindings": true,
	"ScheduleWakeup": true, "SendMessage": true, "Skill": true, "SlashCommand": true, "Task": true,
	"TaskOutput": true, "TaskStop": true, "TodoWrite": true, "ToolSearch": true, "WebFetch": true,
	"WebSearch": true, "Workflow": true, "Write": true,
}

// PermissionModes are the accepted permission_mode values.
var PermissionModes = map[string]bool{
	"default": true, "acceptEdits": true, "bypassPermissions": true, "plan": true,
	"dontAsk": true, "auto": true, "manual": true,
}

// ReservedEnv are environment names a configuration may not set: the agent
// server owns them (credentials, where the API is, where the CLI keeps state).
var ReservedEnv = map[string]bool{
	"AGENT_TOKEN": true, "AGENT_CONFIG": true, "AGENT_ADDR": true, "AGENT_WORKSPACE": true,
	"ANTHROPIC_API_KEY": true, "ANTHROPIC_AUTH_TOKEN": true, "ANTHROPIC_BASE_URL": true,
	"CLAUDE_CONFIG_DIR": true, "HOME": true, "PATH": true, "CLAUDE_BIN": true,
}

// ConfigError reports one invalid field of a configuration.
type ConfigError struct {
	// Field is the JSON path of the field, e.g. "mcp_servers.github.command".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("agent config: %s: %s", e.Field, e.Reason)
}

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks every field and returns all problems found, joined.
func (c *Config) Validate() error {
	var errs []error
	if c.ID != "" && !configIDPattern.MatchString(c.ID) {
		errs = append(errs, fieldErr("id", "%q must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit", c.ID))
	}
	for i, t := range c.AllowedTools {
		if err := c.validateTool(t); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("allowed_tools[%d]", i), "%v", err))
		}
	}
	for i, t := range c.DisallowedTools {
		if err := c.validateTool(t); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("disallowed_tools[%d]", i), "%v", err))
		}
	}
	if p := c.SystemPrompt; p != nil && p.Preset != "" && p.Preset != "claude_code" {
		errs = append(errs, fieldErr("system_prompt.preset", "unknown preset %q (only \"claude_code\")", p.Preset))
	}
	if c.PermissionMode != "" && !PermissionModes[c.PermissionMode] {
		errs = append(errs, fieldErr("permission_mode", "unknown mode %q (one of %s)", c.PermissionMode, slices.Sorted(maps.Keys(PermissionModes))))
	}
	if c.MaxTurns < 0 {
		errs = append(errs, fieldErr("max_turns", "must not be negative, got %d", c.MaxTurns))
	}
	if strings.ContainsAny(c.Model, " \t\n\x00") {
		errs = append(errs, fieldErr("model", "%q must not contain white space", c.Model))
	}
	for _, name := range slices.Sorted(maps.Keys(c.MCPServers)) {
		errs = append(errs, validateMCPServer(name, c.MCPServers[name])...)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Agents)) {
		a := c.Agents[name]
		f := "agents." + name
		if !agentNamePatten.MatchString(name) {
			errs = append(errs, fieldErr(f, "name must be lowercase letters, digits or dashes"))
		}
		if strings.TrimSpace(a.Description) == "" {
			errs = append(errs, fieldErr(f+".description", "is required"))
		}
		if strings.TrimSpace(a.Prompt) == "" {
			errs = append(errs, fieldErr(f+".prompt", "is required"))
		}
		for i, t := range a.Tools {
			if err := c.validateTool(t); err != nil {
				errs = append(errs, fieldErr(fmt.Sprintf("%s.tools[%d]", f, i), "%v", err))
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Env)) {
		if !envNamePattern.MatchString(k) {
			errs = append(errs, fieldErr("env."+k, "not a valid environment variable name"))
		} else if ReservedEnv[k] {
			errs = append(errs, fieldErr("env."+k, "is reserved for the agent server"))
		}
	}
	for i, s := range c.SettingSources {
		if s != "user" && s != "project" && s != "local" {
			errs = append(errs, fieldErr(fmt.Sprintf("setting_sources[%d]", i), "unknown source %q (user, project or local)", s))
		}
	}
	if r := c.Resources; r != nil {
		if r.CPUs < 0 {
			errs = append(errs, fieldErr("resources.cpus", "must not be negative"))
		}
		if r.Pids < 0 {
			errs = append(errs, fieldErr("resources.pids", "must not be negative"))
		}
		if r.Memory != "" {
			if n, err := units.RAMInBytes(r.Memory); err != nil || n <= 0 {
				errs = append(errs, fieldErr("resources.memory", "%q is not a size such as 512m or 4g", r.Memory))
			}
		}
		if r.IdleTimeout != "" {
			if d, err := time.ParseDuration(r.IdleTimeout); err != nil || d < 0 {
				errs = append(errs, fieldErr("resources.idle_timeout", "%q is not a duration such as 30m", r.IdleTimeout))
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateTool(t string) error {
	if m := mcpToolPattern.FindStringSubmatch(t); m != nil {
		// Server names may hold "__" themselves: the tool names a server
		// when it is "mcp__<server>" or starts with "mcp__<server>__".
		for name := range c.MCPServers {
			if t == "mcp__"+name || strings.HasPrefix(t, "mcp__"+name+"__") {
				return nil
			}
		}
		return fmt.Errorf("%q names MCP server %q, which is not in mcp_servers", t, m[1])
	}
	m := toolPattern.FindStringSubmatch(t)
	if m == nil {
		return fmt.Errorf("%q is not a tool name (like \"Bash\", \"Bash(git:*)\" or \"mcp__server__tool\")", t)
	}
	if !KnownTools[m[1]] {
		return fmt.Errorf("unknown tool %q", m[1])
	}
	return nil
}

// ClientToolsServer is the name of the MCP server through which the agent
// offers the client's own functions (QueryRequest.Tools) to the model, as
// mcp__client__<name>. A configuration's mcp_servers may not use it.
const ClientToolsServer = "client"

func validateMCPServer(name string, s MCPServer) []error {
	f := "mcp_servers." + name
	var errs []error
	if !mcpNamePattern.MatchString(name) {
		errs = append(errs, fieldErr(f, "server name must be letters, digits, '_' or '-'"))
	}
	if name == ClientToolsServer {
		errs = append(errs, fieldErr(f, "server name %q is reserved for the client's own functions", name))
	}
	switch s.Type {
	case "", "stdio":
		if strings.TrimSpace(s.Command) == "" {
			errs = append(errs, fieldErr(f+".command", "is required for a stdio server"))
		}
		if s.URL != "" {
			errs = append(errs, fieldErr(f+".url", "is not used by a stdio server"))
		}
	case "sse", "http":
		if !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://") {
			errs = append(errs, fieldErr(f+".url", "%s server needs an http(s) URL, got %q", s.Type, s.URL))
		}
		if s.Command != "" {
			errs = append(errs, fieldErr(f+".command", "is not used by a %s server", s.Type))
		}
	default:
		errs = append(errs, fieldErr(f+".type", "unknown type %q (stdio, sse or http)", s.Type))
	}
	for k := range s.Env {
		switch {
		case !envNamePattern.MatchString(k):
			errs = append(errs, fieldErr(f+".env."+k, "not a valid environment variable name"))
		case ReservedEnv[k]:
			errs = append(errs, fieldErr(f+".env."+k, "is reserved for the agent server"))
		}
	}
	return errs
}
