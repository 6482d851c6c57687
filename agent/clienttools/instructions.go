package clienttools

import (
	"fmt"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// The CLI has no tool_choice or parallel_tool_calls switch, and keeps the
// definitions of functions the client no longer offers in its API requests
// (see the package documentation). What the model must know about the
// client's functions for one turn is therefore said in words, appended to
// the turn's message by [Instructions]; all of that text is here.
const (
	instructionsStart = "\n\n<system-reminder>\n"
	instructionsEnd   = "\n</system-reminder>"

	// availableNow lists the functions after the set changed (%s: the
	// model names, comma-separated).
	availableNow = "The client's functions you can call now are: %s. Call them directly, without searching for them; no other mcp__" + ServerName + "__ function is available now."
	// noneAvailable follows a change to no functions at all.
	noneAvailable = "None of the client's functions (mcp__" + ServerName + "__...) are available now; do not call them."
	// mustCallOne is tool_choice "required" (%s: the model names).
	mustCallOne = "Your reply to this message must begin with a call of one of the client's functions: %s."
	// mustCallThis is tool_choice naming a function (%s: its model name).
	mustCallThis = "Your reply to this message must begin with a call of the client's function %s."
	// oneAtATime is OneToolAtATime (parallel_tool_calls false).
	oneAtATime = "Call at most one of the client's functions per reply, and wait for its result before you call another."
)

// Instructions is the text appended to the message of a turn with query
// q's tools: "" when nothing needs saying, else a <system-reminder> block
// (the form the CLI gives its own notes to the model) holding
//
//   - when changed (the set of functions differs from the previous turn's,
//     which offered some): which functions can be called now;
//   - for ToolChoice "required" or a function's name: that the reply must
//     begin with such a call;
//   - for OneToolAtATime: at most one call per reply.
func Instructions(q agent.QueryRequest, changed bool) string {
	names := make([]string, len(q.Tools))
	for i, t := range q.Tools {
		names[i] = ModelName(t.Name)
	}
	list := strings.Join(names, ", ")
	var lines []string
	if changed {
		if len(names) == 0 {
			lines = append(lines, noneAvailable)
		} else {
			lines = append(lines, fmt.Sprintf(availableNow, list))
		}
	}
	if len(names) > 0 {
		switch q.ToolChoice {
		case "", ChoiceAuto:
		case ChoiceRequired:
			lines = append(lines, fmt.Sprintf(mustCallOne, list))
		default:
			lines = append(lines, fmt.Sprintf(mustCallThis, ModelName(q.ToolChoice)))
		}
		if q.OneToolAtATime {
			lines = append(lines, oneAtATime)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return instructionsStart + strings.Join(lines, "\n") + instructionsEnd
}

// Signature identifies a set of functions by their names and definitions,
// so a turn can tell whether the set changed from the previous turn's.
func Signature(tools []agent.ClientTool) string {
	var b strings.Builder
	for _, t := range tools {
		b.WriteString(t.Name)
		b.WriteByte(0)
		b.WriteString(t.Description)
		b.WriteByte(0)
		b.Write(t.Parameters)
		b.WriteByte(0)
	}
	return b.String()
}

// The error results the model gets for calls the client did not answer.
const (
	// NotRun: the client's results left the call out.
	NotRun = "The client did not run this function: its results did not include this call."
	// TimedOut: the client did not answer within the limit (%s).
	TimedOut = "The client did not answer this call in time (within %s)."
	// NewMessage: the client sent a new message instead of the results.
	NewMessage = "The client sent a new message instead of the results of this call."
	// ClientLeft: the client went away while the turn ran.
	ClientLeft = "The client went away, so this call was not run."
	// SubAgent: a sub-agent called a client function.
	SubAgent = "This is a function of the client, which only the main agent can call, not a sub-agent."
	// TurnOver: the call came after its turn ended.
	TurnOver = "The turn of this call is over, so the client cannot run it."
)
