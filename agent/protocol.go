// Package agent holds the wire protocol spoken between the control plane (the
// Caddy module) and the in-container agent server (cmd/agcluster-agent), and
// the agent configuration both sides share.
//
// The agent server streams a turn as Server-Sent Events. Each event is one
// `data:` line holding a JSON [Event]; the `event:` field is not used. Every
// stream ends with exactly one event of type [EventResult] or [EventError],
// or with an [EventClientToolCalls] event while its turn waits for POST
// /tool_results, whose stream goes on with the same turn.
package agent

import (
	"encoding/json"
	"maps"
	"slices"
)

// EventType names the kind of an [Event].
type EventType string

// The event types an agent stream carries.
const (
	// EventTextDelta is a piece of assistant text as the model produces it.
	EventTextDelta EventType = "text_delta"
	// EventText is a finished assistant text block (the concatenation of its
	// deltas). Consumers that render deltas should not render it again.
	EventText EventType = "text"
	// EventThinkingDelta is a piece of the model's thinking as it streams.
	EventThinkingDelta EventType = "thinking_delta"
	// EventThinking is a finished thinking block.
	EventThinking EventType = "thinking"
	// EventToolUse is a tool call with its complete input.
	EventToolUse EventType = "tool_use"
	// EventToolResult is the outcome of a tool call.
	EventToolResult EventType = "tool_result"
	// EventTodo is the agent's task list, sent whenever it changes.
	EventTodo EventType = "todo"
	// EventNotice is progress or a warning that is not part of the answer:
	// an API retry, a restarted CLI process, a lost turn.
	EventNotice EventType = "notice"
	// EventClientToolCalls: the model called functions of the client's own
	// (QueryRequest.Tools). The stream ends with it while the turn waits:
	// POST /tool_results with their outcomes continues the turn in a new
	// stream. Calls holds them all (one model message may call several).
	EventClientToolCalls EventType = "client_tool_calls"
	// EventResult ends a successful turn.
	EventResult EventType = "result"
	// EventError ends a failed turn.
	EventError EventType = "error"
)

// Event is one item of an agent stream. Which fields are set depends on Type;
// unset fields are omitted from the JSON.
type Event struct {
	// Type is the kind of event.
	Type EventType `json:"type"`
	// Seq numbers the events of one turn from 1.
	Seq int `json:"seq,omitempty"`
	// ParentToolUseID is set when the event comes from a sub-agent started
	// by the Task tool call with this id.
	ParentToolUseID string `json:"parent_tool_use_id,omitempty"`

	// Text is the text of text_delta, text, thinking_delta and thinking events.
	Text string `json:"text,omitempty"`

	// ToolUseID identifies the tool call of tool_use and tool_result events.
	ToolUseID string `json:"tool_use_id,omitempty"`
	// Name is the tool's name in tool_use events (e.g. "Bash").
	Name string `json:"name,omitempty"`
	// Input is the tool's input object in tool_use events.
	Input json.RawMessage `json:"input,omitempty"`
	// Output is the tool's output in tool_result events, as text.
	Output string `json:"output,omitempty"`
	// IsError tells whether a tool_result is a failure.
	IsError bool `json:"is_error,omitempty"`

	// Todos is the task list of todo events.
	Todos []Todo `json:"todos,omitempty"`

	// Calls are the client tool calls of client_tool_calls events.
	Calls []ToolCall `json:"calls,omitempty"`

	// Code classifies notice and error events; see the Code* constants.
	Code string `json:"code,omitempty"`
	// Message is the human-readable text of notice and error events.
	Message string `json:"message,omitempty"`

	// Result is set on result events, and on error events when the turn got
	// far enough to report usage.
	Result *Result `json:"result,omitempty"`
}

// Todo is one item of the agent's task list (the TodoWrite tool).
type Todo struct {
	// Content is what the task is.
	Content string `json:"content"`
	// Status is "pending", "in_progress" or "completed".
	Status string `json:"status"`
	// ActiveForm is the present-continuous label shown while the task runs.
	ActiveForm string `json:"active_form,omitempty"`
}

// ToolCall is one call of a client function (QueryRequest.Tools).
type ToolCall struct {
	// ID identifies the call; its result must name it (the model's
	// tool_use id).
	ID string `json:"id"`
	// Name is the function's name as the client declared it.
	Name string `json:"name"`
	// Arguments is the call's arguments, a JSON object as text.
	Arguments string `json:"arguments"`
}

// Result describes a finished turn.
type Result struct {
	// TurnID identifies this turn in the agent's turn tree: a later query
	// may branch off after it (QueryRequest.Branch).
	TurnID string `json:"turn_id,omitempty"`
	// SessionID is the Claude Code session id; the agent resumes it after a
	// process restart.
	SessionID string `json:"session_id,omitempty"`
	// StopReason is the model's last stop reason (e.g. "end_turn").
	StopReason string `json:"stop_reason,omitempty"`
	// Text is the final answer text as the CLI reports it.
	Text string `json:"text,omitempty"`
	// NumTurns is how many model calls the turn took.
	NumTurns int `json:"num_turns,omitempty"`
	// DurationMS is the wall time of the turn in milliseconds.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// CostUSD is the CLI's cost estimate for this turn.
	CostUSD float64 `json:"cost_usd,omitempty"`
	// Usage is the token usage of this turn.
	Usage Usage `json:"usage"`
}

// Usage counts tokens.
type Usage struct {
	// InputTokens is the number of uncached input tokens.
	InputTokens int64 `json:"input_tokens"`
	// OutputTokens is the number of generated tokens.
	OutputTokens int64 `json:"output_tokens"`
	// CacheReadInputTokens is the number of input tokens read from cache.
	CacheReadInputTokens int64 `json:"cache_read_input_tokens,omitempty"`
	// CacheCreationInputTokens is the number of input tokens written to cache.
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens,omitempty"`
}

// Codes of error and notice events.
const (
	// CodeAuth: the Anthropic API refused the key (401/403).
	CodeAuth = "auth"
	// CodeRateLimit: the Anthropic API answered 429 until retries ran out.
	CodeRateLimit = "rate_limit"
	// CodeOverloaded: the Anthropic API answered 529 until retries ran out.
	CodeOverloaded = "overloaded"
	// CodeUpstream: any other API failure (5xx, connection refused, bad stream).
	CodeUpstream = "upstream"
	// CodeInterrupted: the turn was interrupted by the client.
	CodeInterrupted = "interrupted"
	// CodeMaxTurns: the turn hit the config's max_turns.
	CodeMaxTurns = "max_turns"
	// CodeTimeout: the turn ran past the agent's turn timeout.
	CodeTimeout = "timeout"
	// CodeInternal: the agent or the CLI failed.
	CodeInternal = "internal"

	// CodeAPIRetry (notice): the CLI is retrying an API call.
	CodeAPIRetry = "api_retry"
	// CodeRestarted (notice): the CLI process was restarted; the
	// conversation was resumed from its saved session.
	CodeRestarted = "restarted"
	// CodePermissionDenied (notice): a tool call was denied by the
	// permission mode or the allowed tools.
	CodePermissionDenied = "permission_denied"
	// CodeBranch (notice): the turn continues an earlier point of the
	// conversation; the message says what of the workspace could not be
	// restored to that point, if anything.
	CodeBranch = "branch"
	// CodeToolTimeout (notice): client tool calls were not answered in
	// time; the model was told so and the turn went on without them.
	CodeToolTimeout = "tool_timeout"
)

// CodeForHTTPStatus classifies an Anthropic API error status as an error
// code: 401/403 auth, 429 rate_limit, 529 overloaded, anything else upstream.
func CodeForHTTPStatus(status int) string {
	switch status {
	case 401, 403:
		return CodeAuth
	case 429:
		return CodeRateLimit
	case 529:
		return CodeOverloaded
	default:
		return CodeUpstream
	}
}

// QueryRequest is the body of POST /query.
type QueryRequest struct {
	// Prompt is the user's message for this turn.
	Prompt string `json:"prompt"`
	// APIKey is the Anthropic API key for this turn. It may instead come in
	// the X-Api-Key header. It is held in memory only.
	APIKey string `json:"api_key,omitempty"`
	// Images go to the model with the prompt, as image blocks after its
	// text.
	Images []Image `json:"images,omitempty"`
	// Tools are the client's own functions, callable by the model during
	// this turn next to its built-in tools. A call ends the stream with a
	// client_tool_calls event.
	Tools []ClientTool `json:"tools,omitempty"`
	// ToolChoice is "auto" (or empty), "required" (the model must call one
	// of Tools) or the name of the one it must call. The CLI has no such
	// switch: the agent tells the model in the turn's message.
	ToolChoice string `json:"tool_choice,omitempty"`
	// OneToolAtATime asks the model to call at most one of Tools per step
	// (OpenAI's parallel_tool_calls false), likewise by instruction.
	OneToolAtATime bool `json:"one_tool_at_a_time,omitempty"`
	// Branch, when set, continues the conversation after an earlier turn
	// rather than after the latest one.
	Branch *Branch `json:"branch,omitempty"`
}

// Image is an image for the model, base64-encoded.
type Image struct {
	// MediaType is image/png, image/jpeg, image/gif or image/webp.
	MediaType string `json:"media_type"`
	// Data is the image, standard base64.
	Data string `json:"data"`
}

// ClientTool is a function the client runs itself (an OpenAI function tool).
type ClientTool struct {
	// Name is the function's name ([a-zA-Z0-9_-]{1,64}).
	Name string `json:"name"`
	// Description tells the model what it does.
	Description string `json:"description,omitempty"`
	// Parameters is the JSON Schema of its arguments (an object schema).
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

// Branch names the point of the conversation a turn continues from.
type Branch struct {
	// After is the id of the turn (Result.TurnID) the new turn follows;
	// empty starts over from the beginning of the conversation. The turns
	// that followed it stay in the agent's tree: a later branch after one
	// of them continues it exactly.
	After string `json:"after"`
}

// ToolResultsRequest is the body of POST /tool_results: the outcomes of a
// client_tool_calls event's calls. The turn continues in the response's
// event stream.
type ToolResultsRequest struct {
	// Results answer the calls, by id. A call left out gets an error
	// result saying the client did not run it.
	Results []ToolResult `json:"results"`
	// APIKey is the Anthropic API key for the rest of the turn, as in
	// QueryRequest.
	APIKey string `json:"api_key,omitempty"`
}

// ToolResult is the outcome of one client tool call.
type ToolResult struct {
	// ID is the call's id (ToolCall.ID).
	ID string `json:"id"`
	// Content is what the function returned, as text.
	Content string `json:"content"`
	// IsError marks a failed call.
	IsError bool `json:"is_error,omitempty"`
}

// Health is the body of GET /health.
type Health struct {
	// Status is "ready" when a query can start at once, otherwise
	// "starting" or "restarting" (with HTTP 503).
	Status string `json:"status"`
	// ClaudeVersion is the CLI's version string.
	ClaudeVersion string `json:"claude_version,omitempty"`
	// SessionID is the current Claude Code session id, once known.
	SessionID string `json:"session_id,omitempty"`
	// Busy tells whether a turn is running.
	Busy bool `json:"busy"`
	// Resumed tells that the agent, started again on its state directory
	// (AGENT_STATE_DIR), resumed the CLI session it held before: the
	// conversation goes on with its context. False for a fresh agent,
	// before the CLI is ready, and when the saved session could not be
	// resumed (the next turn then starts with a "restarted" notice). The
	// turn count and the binding are restored either way.
	Resumed bool `json:"resumed"`
	// Error explains the last start-up failure, if any.
	Error string `json:"error,omitempty"`
}

// Binding is what a warm-pool agent serves once it is handed out: the
// control plane sets it with PUT /binding, once, and reads it back with GET
// /binding after a restart. An agent made for one session from the start
// carries the same facts as container labels instead.
type Binding struct {
	// SessionID is the session the agent serves.
	SessionID string `json:"session_id"`
	// Owner is the owner's opaque id (a hash, never a key).
	Owner string `json:"owner"`
	// Conversation is the client's conversation id.
	Conversation string `json:"conversation"`
}

// BindingState is the body of GET /binding.
type BindingState struct {
	// Bound tells whether the agent was handed out.
	Bound bool `json:"bound"`
	// Binding is set when Bound.
	Binding *Binding `json:"binding,omitempty"`
}

// Stats is the body of GET /stats.
type Stats struct {
	// Agent is the agent server process.
	Agent ProcessStats `json:"agent"`
	// Claude is the CLI process (zero PID when it is not running).
	Claude ProcessStats `json:"claude"`
	// Cgroup holds the container's cgroup figures (v2 or v1) when readable.
	Cgroup *CgroupStats `json:"cgroup,omitempty"`
	// Turns counts finished turns since the agent started.
	Turns int64 `json:"turns"`
	// Busy tells whether a turn is running.
	Busy bool `json:"busy"`
	// UptimeSeconds is how long the agent server has run.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Restarts counts CLI process restarts.
	Restarts int64 `json:"restarts"`
	// CPUPercent is the CPU used since the previous /stats call (or since
	// start, on the first), in percent of one CPU, for the whole container
	// when cgroup figures are readable, else for the agent and the CLI.
	CPUPercent float64 `json:"cpu_percent"`
}

// SleepClaimRequest is the body of POST /sleep_claim.
type SleepClaimRequest struct {
	// MinIdleSeconds is how long the agent must have been idle (no turn
	// running or ended since) for the claim to be granted.
	MinIdleSeconds float64 `json:"min_idle_seconds"`
}

// SleepClaim is the answer to POST /sleep_claim (200 either way).
type SleepClaim struct {
	// Granted tells that the caller may put the agent to sleep now; new
	// turns are refused with 409 "sleeping" until the agent stops, the
	// claim is released (DELETE /sleep_claim), or two minutes pass.
	Granted bool `json:"granted"`
	// Reason says why the claim was refused: ClaimBusy, ClaimTaken or
	// ClaimRecentlyUsed.
	Reason string `json:"reason,omitempty"`
	// IdleSeconds is how long the agent has been idle (0 while a turn
	// runs).
	IdleSeconds float64 `json:"idle_seconds"`
}

// Reasons a sleep claim is refused (SleepClaim.Reason).
const (
	// ClaimBusy: a turn is running.
	ClaimBusy = "busy"
	// ClaimTaken: another gateway holds a claim.
	ClaimTaken = "claimed"
	// ClaimRecentlyUsed: the agent was used more recently than asked.
	ClaimRecentlyUsed = "recently_used"
)

// CodeSleeping is the error code of a turn refused (409) because a gateway
// is putting the agent to sleep.
const CodeSleeping = "sleeping"

// Transcript is the body of GET and PUT /transcript: the gateways' record
// of the conversation, kept with the agent (and across its sleeps) so that
// any gateway serving the conversation finds it. The agent stores it and
// never reads it.
type Transcript struct {
	// Tip is the fingerprint of the transcript the client sends back after
	// the latest turn ("" before the first).
	Tip string `json:"tip,omitempty"`
	// Turns maps the fingerprint after each finished turn to the agent's
	// id for that turn (agent.Result.TurnID): the points a request can
	// branch from.
	Turns map[string]string `json:"turns,omitempty"`
	// SentHistory tells that the client sends the conversation's history
	// with its messages.
	SentHistory bool `json:"sent_history,omitempty"`
	// Names are the client conversation ids bound to the conversation
	// after it was made (a client that sent its id from the second message
	// on).
	Names []string `json:"names,omitempty"`
	// Pending are the ids of the client tool calls the agent's turn waits
	// for.
	Pending []string `json:"pending,omitempty"`
}

// ProcessStats is one process's resource use.
type ProcessStats struct {
	// PID is the process id (0 if not running).
	PID int `json:"pid"`
	// RSSBytes is the resident set size.
	RSSBytes int64 `json:"rss_bytes"`
	// CPUSeconds is user+system CPU time consumed.
	CPUSeconds float64 `json:"cpu_seconds"`
}

// CgroupStats is the container's cgroup accounting.
type CgroupStats struct {
	// MemoryBytes is the memory in use (memory.current; v1 memory.usage_in_bytes).
	MemoryBytes int64 `json:"memory_bytes"`
	// MemoryLimitBytes is the memory limit (0 = unlimited).
	MemoryLimitBytes int64 `json:"memory_limit_bytes"`
	// Pids is the number of processes (pids.current).
	Pids int64 `json:"pids"`
	// PidsLimit is the process limit (pids.max; 0 = unlimited).
	PidsLimit int64 `json:"pids_limit"`
	// CPUSeconds is the CPU time used by the whole container.
	CPUSeconds float64 `json:"cpu_seconds"`
}

// HeaderServer is set (to "1") on every response of the agent server, so
// that a client behind a proxy (Fly's, a port-forward, a platform's
// router) can tell the agent's own answers from the proxy's: an error
// without it means the agent was not reached.
const HeaderServer = "Agcluster-Agent"

// ErrorBody is the JSON body of every non-2xx agent server response.
type ErrorBody struct {
	// Error describes what went wrong.
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the payload of [ErrorBody].
type ErrorDetail struct {
	// Code is a stable machine-readable reason ("busy", "unauthorized",
	// "invalid_path", ...).
	Code string `json:"code"`
	// Message is a human-readable explanation.
	Message string `json:"message"`
}

// Clone returns a deep copy of t.
func (t *Transcript) Clone() *Transcript {
	if t == nil {
		return nil
	}
	c := *t
	c.Turns = maps.Clone(t.Turns)
	c.Names = slices.Clone(t.Names)
	c.Pending = slices.Clone(t.Pending)
	return &c
}
