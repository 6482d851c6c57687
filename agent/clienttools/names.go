package clienttools

import (
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// ServerName is the name of the in-process MCP server that hosts the
// client's functions. A configuration may not give an MCP server of its own
// this name.
const ServerName = agent.ClientToolsServer

// modelPrefix starts the name the model sees for each client function.
const modelPrefix = "mcp__" + ServerName + "__"

// AllowRule is the --allowedTools entry that lets the model call every
// client function without a permission prompt (which --permission-prompts
// none would deny).
const AllowRule = "mcp__" + ServerName

// ModelName is the name the model sees for the client function name.
func ModelName(name string) string { return modelPrefix + name }

// ClientName is the client's name of the function the model called as
// model, and whether model names a client function at all.
func ClientName(model string) (string, bool) {
	name, ok := strings.CutPrefix(model, modelPrefix)
	if !ok || name == "" {
		return "", false
	}
	return name, true
}
