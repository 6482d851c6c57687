// Package clienttools hosts the client's own functions (agent.QueryRequest
// Tools, OpenAI function tools) for the Claude Code CLI as an in-process
// MCP server, spoken over the stream-json control protocol the agent
// already has with the CLI on its stdin and stdout.
//
// What the CLI (2.1.328) does, as probed against the anthropictest mock:
//
//   - The server is declared in the initialize control request:
//     {"subtype":"initialize","sdkMcpServers":["client"],
//     "sdkMcpServerConfigs":{"client":{"disableAutoBackground":true,
//     "timeout":<ms>}}}. The CLI then connects to it by sending
//     {"type":"control_request","request_id":R,"request":{"subtype":
//     "mcp_message","server_name":"client","message":<JSON-RPC>}} and
//     expects {"type":"control_response","response":{"subtype":"success",
//     "request_id":R,"response":{"mcp_response":<JSON-RPC reply>}}}; a
//     JSON-RPC notification is answered with an empty result too.
//   - The handshake is initialize (answered before the initialize control
//     response arrives), then notifications/initialized; tools/list comes
//     with the first user message, and again after the host sends its own
//     mcp_message control request carrying notifications/tools/list_changed
//     (the CLI acknowledges it with an empty success, then lists). Once the
//     host has answered that tools/list, the next user message is built
//     with the new list. mcp_set_servers naming an already registered sdk
//     server changes nothing and does not list again.
//   - The model sees a tool as mcp__client__<name> (names of 64 characters
//     and '-' pass unchanged). Tools listed first with _meta
//     {"anthropic/alwaysLoad":true} go to the API in full; tools added
//     later go as defer_loading with a tool_reference "just became
//     available" message. A tool dropped from the list is refused by the
//     CLI itself ("No such tool available"), but the API request keeps its
//     definition (prompt caching) and says nothing of the removal unless the
//     tool was deferred: [Instructions] tells the model which functions it
//     may call when the set changes.
//   - tools/call carries {"name","arguments","_meta":{"claudecode/toolUseId":
//     the model's tool_use id,"progressToken":N}}. The CLI waits for the
//     answer as long as the server's timeout allows (no idle timeout for sdk
//     servers). With annotations {"readOnlyHint":true} the calls of one
//     message arrive together (concurrency-safe tools), before the message's
//     message_stop stream event; without it they come one at a time, each
//     after the previous was answered. readOnlyHint also keeps the calls
//     allowed in plan mode.
//   - With --permission-prompts none a call is denied unless an allow rule
//     covers it: the agent adds "mcp__client" to --allowedTools.
//   - An interrupt while a call waits makes the CLI send
//     notifications/cancelled {"requestId": <the call's JSON-RPC id>}; a late
//     answer to a cancelled call is ignored.
//   - A sub-agent (Task/Agent tool) may call the functions too; its
//     assistant lines carry parent_tool_use_id. Such calls are answered
//     with an error: only the main agent's calls reach the client.
package clienttools
