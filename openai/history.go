package openai

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultHistoryChars is the size cap of [FormatHistory], in bytes.
const DefaultHistoryChars = 24000

// historyHeader starts every transcript.
const historyHeader = "Earlier in this conversation:\n"

// FormatHistory renders earlier messages (typically
// [ChatCompletionRequest.History]) as a compact transcript that gives a
// fresh agent the context of a conversation it has not seen:
//
//	Earlier in this conversation:
//	User: ...
//	Assistant: ...
//
// It keeps the most recent messages that fit in [DefaultHistoryChars] and
// notes how many earlier ones were left out. System and developer messages
// are not rendered (pass them with [ChatCompletionRequest.SystemText]). It
// returns "" when there is nothing to render.
func FormatHistory(msgs []Message) string {
	return FormatHistoryLimit(msgs, DefaultHistoryChars)
}

// FormatHistoryLimit is [FormatHistory] with a size cap of maxChars bytes
// (at least a few hundred bytes are always allowed). A single message
// longer than the cap is cut, keeping its start.
func FormatHistoryLimit(msgs []Message, maxChars int) string {
	if maxChars < 256 {
		maxChars = 256
	}
	budget := maxChars - len(historyHeader)
	// The note about dropped messages is reserved for up front so it always fits.
	const noteReserve = 64
	var lines []string // newest first
	total, kept, renderable := 0, 0, 0
	full := false
	for i := len(msgs) - 1; i >= 0; i-- {
		line := historyLine(&msgs[i])
		if line == "" {
			continue
		}
		renderable++
		if full {
			continue
		}
		room := budget - noteReserve - total
		if len(line)+1 > room {
			if kept == 0 && room > 64 {
				lines = append(lines, truncateText(line, room-32))
				total += len(lines[len(lines)-1]) + 1
				kept++
			}
			full = true
			continue
		}
		lines = append(lines, line)
		total += len(line) + 1
		kept++
	}
	if renderable == 0 {
		return ""
	}
	var b strings.Builder
	b.Grow(len(historyHeader) + total + noteReserve)
	b.WriteString(historyHeader)
	if dropped := renderable - kept; dropped > 0 {
		b.WriteString("(")
		b.WriteString(strconv.Itoa(dropped))
		if dropped == 1 {
			b.WriteString(" earlier message omitted)\n")
		} else {
			b.WriteString(" earlier messages omitted)\n")
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		b.WriteString(lines[i])
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// historyLine renders one message ("" for messages left out).
func historyLine(m *Message) string {
	text := strings.TrimSpace(m.Content.Text())
	var who string
	switch m.Role {
	case RoleUser:
		who = "User"
	case RoleAssistant:
		who = "Assistant"
		if calls := toolCallSummary(m.ToolCalls); calls != "" {
			if text != "" {
				text += "\n"
			}
			text += calls
		}
	case RoleTool:
		who = "Tool result"
		if m.ToolCallID != "" {
			who += " (" + m.ToolCallID + ")"
		}
	default:
		return ""
	}
	if text == "" {
		return ""
	}
	if m.Name != "" && m.Role != RoleTool {
		who += " (" + m.Name + ")"
	}
	return who + ": " + text
}

// toolCallSummary renders an assistant message's tool_calls as
// "[called name(arguments)]" lines.
func toolCallSummary(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var calls []struct {
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	if json.Unmarshal(raw, &calls) != nil {
		return ""
	}
	var b strings.Builder
	for _, c := range calls {
		if c.Function.Name == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("[called ")
		b.WriteString(c.Function.Name)
		b.WriteString("(")
		b.WriteString(truncateText(oneLine(c.Function.Arguments), 200))
		b.WriteString(")]")
	}
	return b.String()
}

// Fingerprint returns a hex sha256 over the (role, text) pairs of msgs,
// texts trimmed of surrounding whitespace. The same conversation always
// gets the same fingerprint, whatever the content form (string or parts)
// and the other fields; it lets the session layer recognise a
// conversation that comes without an id.
func Fingerprint(msgs []Message) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for i := range msgs {
		role := msgs[i].Role
		text := strings.TrimSpace(msgs[i].Content.Text())
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(role)))])
		h.Write([]byte(role))
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(text)))])
		h.Write([]byte(text))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// truncateText cuts s to at most max bytes at a rune boundary, marking the
// cut with "… (N more bytes)".
func truncateText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := runeBoundary(s, max)
	return s[:cut] + "… (" + strconv.Itoa(len(s)-cut) + " more bytes)"
}

// runeBoundary returns the largest n <= max at which s can be cut without
// splitting a UTF-8 sequence.
func runeBoundary(s string, max int) int {
	if max >= len(s) {
		return len(s)
	}
	if max < 0 {
		return 0
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return max
}

// oneLine collapses runs of whitespace (including newlines) into single
// spaces and trims the ends.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\n\r\t") && !strings.Contains(s, "  ") {
		return strings.TrimSpace(s)
	}
	return strings.Join(strings.Fields(s), " ")
}
