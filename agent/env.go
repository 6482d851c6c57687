package agent

// The agent server's environment variables (see the agcluster-agent
// command's documentation). Control planes that start agents set them by
// these names.
const (
	// EnvToken is the bearer token every endpoint but /health requires
	// (required).
	EnvToken = "AGENT_TOKEN"
	// EnvConfig is the agent configuration as JSON (see [Config]).
	EnvConfig = "AGENT_CONFIG"
	// EnvWorkspace is the workspace directory (default /workspace).
	EnvWorkspace = "AGENT_WORKSPACE"
	// EnvAddr is the listen address (default :8080).
	EnvAddr = "AGENT_ADDR"
	// EnvTurnTimeout is the longest a turn may run, as a Go duration
	// (default 30m; 0 = no limit).
	EnvTurnTimeout = "AGENT_TURN_TIMEOUT"
	// EnvToolResultTimeout is how long a turn waits for the results of the
	// client's function calls (POST /tool_results), as a Go duration
	// (default 10m).
	EnvToolResultTimeout = "AGENT_TOOL_RESULT_TIMEOUT"
	// EnvMaxFileBytes is the upload limit of PUT /files in bytes
	// (default 100 MiB).
	EnvMaxFileBytes = "AGENT_MAX_FILE_BYTES"
	// EnvWarmUp, when "1", makes the agent run a first turn answered by
	// itself, then /clear, before it reports ready (warm-pool agents).
	EnvWarmUp = "AGENT_WARM_UP"
	// EnvStateDir is a directory on a persistent volume where the agent
	// keeps what must survive a container stop: the CLI's session files
	// (<dir>/claude, as CLAUDE_CONFIG_DIR) and the agent's own state
	// (<dir>/agent.json: CLI session id, turn count, turn tree, binding;
	// <dir>/branches: files of the branches the conversation left). A
	// restarted agent resumes its conversation from there. Unset or empty: nothing
	// survives a restart of the agent process.
	EnvStateDir = "AGENT_STATE_DIR"
	// EnvRestore, when "1", makes the agent wait, before it opens its
	// state and starts the CLI, until the control plane restores its disk
	// with PUT /snapshot (a snapshot made by GET /snapshot, or an empty
	// body for none): for platforms whose containers start with an empty
	// disk every time, such as Cloudflare Containers. /health says
	// "restoring" meanwhile.
	EnvRestore = "AGENT_RESTORE"
)
