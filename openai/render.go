package openai

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Size caps of rendered tool activity, in bytes.
const (
	// toolArgMax caps the input shown on a tool call line.
	toolArgMax = 120
	// toolLineMax caps the first output line of a failed tool call.
	toolLineMax = 120
	// toolOutputMax caps the output shown in full rendering.
	toolOutputMax = 2000
)

// toolArgField is the most telling input field of the built-in tools.
var toolArgField = map[string]string{
	"Bash":         "command",
	"Read":         "file_path",
	"Write":        "file_path",
	"Edit":         "file_path",
	"MultiEdit":    "file_path",
	"NotebookEdit": "notebook_path",
	"NotebookRead": "notebook_path",
	"Grep":         "pattern",
	"Glob":         "pattern",
	"WebFetch":     "url",
	"WebSearch":    "query",
	"Task":         "description",
	"Agent":        "description",
	"LS":           "path",
	"Skill":        "skill",
	"BashOutput":   "bash_id",
	"KillShell":    "shell_id",
}

// fallbackArgFields are tried in order for other tools (MCP tools).
var fallbackArgFields = []string{"command", "file_path", "path", "pattern", "url", "query", "description", "prompt", "name", "title"}

// toolArg picks the input to show for a tool call: the tool's telling
// field, a common field, or the compact input JSON.
func toolArg(name string, input json.RawMessage) string {
	input = bytes.TrimSpace(input)
	if len(input) == 0 || string(input) == "null" || string(input) == "{}" {
		return ""
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(input, &fields) == nil {
		if f, ok := toolArgField[name]; ok {
			if v := stringField(fields, f); v != "" {
				return v
			}
		}
		for _, f := range fallbackArgFields {
			if v := stringField(fields, f); v != "" {
				return v
			}
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, input) != nil {
		return ""
	}
	return buf.String()
}

func stringField(fields map[string]json.RawMessage, name string) string {
	raw, ok := fields[name]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// clip collapses s to one line and cuts it to max bytes, marking a cut
// with "…".
func clip(s string, max int) string {
	s = oneLine(s)
	if len(s) <= max {
		return s
	}
	return strings.TrimSpace(s[:runeBoundary(s, max)]) + "…"
}

// inlineCode wraps s in a code span whose backtick run is longer than any
// run inside s.
func inlineCode(s string) string {
	n := longestRun(s, '`') + 1
	ticks := strings.Repeat("`", n)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		return ticks + " " + s + " " + ticks
	}
	return ticks + s + ticks
}

// longestRun returns the length of the longest run of c in s.
func longestRun(s string, c byte) int {
	best, cur := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			cur++
			if cur > best {
				best = cur
			}
		} else {
			cur = 0
		}
	}
	return best
}

// renderToolUse renders a call as "> 🔧 **Name** `arg`".
func renderToolUse(name string, input json.RawMessage) string {
	if name == "" {
		name = "tool"
	}
	line := "> 🔧 **" + clip(name, 80) + "**"
	if arg := clip(toolArg(name, input), toolArgMax); arg != "" {
		line += " " + inlineCode(arg)
	}
	return line + "\n\n"
}

// firstLine returns the first non-blank line of s.
func firstLine(s string) string {
	for s != "" {
		line, rest, _ := strings.Cut(s, "\n")
		if strings.TrimSpace(line) != "" {
			return line
		}
		s = rest
	}
	return ""
}

// renderToolResult renders a result: in summary mode only failures, as
// "> ❌ first line"; in full mode also the output in a fenced block.
func renderToolResult(output string, isError, full bool) string {
	var b strings.Builder
	if isError {
		line := clip(firstLine(output), toolLineMax)
		if line == "" {
			line = "failed"
		}
		b.WriteString("> ❌ ")
		b.WriteString(line)
		b.WriteString("\n\n")
	}
	if full && strings.TrimSpace(output) != "" {
		b.WriteString(fenced(output, toolOutputMax))
	}
	return b.String()
}

// fenced puts s, cut to max bytes, in a fenced code block that nothing in
// s can close.
func fenced(s string, max int) string {
	s = strings.TrimRight(s, "\n\r\t ")
	body := s
	note := ""
	if len(s) > max {
		cut := runeBoundary(s, max)
		body = s[:cut]
		note = "\n… (" + strconv.Itoa(len(s)-cut) + " more bytes)"
	}
	n := longestRun(body, '`') + 1
	if n < 3 {
		n = 3
	}
	fence := strings.Repeat("`", n)
	return fence + "\n" + body + note + "\n" + fence + "\n\n"
}

// renderTodos renders the task list as a checklist.
func renderTodos(todos []agent.Todo) string {
	if len(todos) == 0 {
		return ""
	}
	var b strings.Builder
	for _, t := range todos {
		switch t.Status {
		case "completed":
			b.WriteString("- [x] ")
		case "in_progress":
			b.WriteString("- [~] ")
		default:
			b.WriteString("- [ ] ")
		}
		text := clip(t.Content, 200)
		if text == "" {
			text = "(untitled)"
		}
		b.WriteString(text)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.String()
}

// renderDenied renders a permission_denied notice.
func renderDenied(tool, msg string) string {
	if tool == "" {
		tool = "tool call"
	}
	line := "> ⛔ " + clip(tool, 80) + " denied"
	if m := clip(msg, 200); m != "" {
		line += ": " + m
	}
	return line + "\n\n"
}

// restartedNote is the content note of a restarted notice.
const restartedNote = "_(the agent was restarted; the conversation was resumed from its saved session)_\n\n"

// restartNote renders a restarted notice: its own message when it has
// one, in the same italic form as restartedNote.
func restartNote(msg string) string {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return restartedNote
	}
	return "_(" + strings.TrimSuffix(msg, ".") + ")_\n\n"
}

// errorNote renders the content note of a failed turn.
func errorNote(msg string) string {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		msg = "the agent turn failed"
	}
	return "[error: " + msg + "]"
}
