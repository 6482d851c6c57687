package openai

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
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
func toolCallSummary(calls []ToolCall) string {
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

// Fingerprint returns a hex sha256 over msgs: for each message its role
// and its text ([Content.Text]) trimmed of surrounding white space, and
// for an assistant message the ids and names of its tool calls and for a
// tool message its tool_call_id. The same conversation always gets the
// same fingerprint, whatever the content form (string or parts), the
// encoding of attachments, the tool calls' arguments and the other
// fields; it lets the session layer recognise a conversation that comes
// without an id. It equals the last of [PrefixFingerprints].
func Fingerprint(msgs []Message) string {
	h := sha256.New()
	var scratch []byte
	for i := range msgs {
		scratch = fingerprintRecord(scratch[:0], &msgs[i])
		h.Write(scratch)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// OpeningFingerprint is the [Fingerprint] of msgs up to and including the
// first user message: how a conversation opened, which its later requests
// send again ("" when msgs has no user message). Gateways sharing a fleet
// name a conversation sent without an id by it.
func OpeningFingerprint(msgs []Message) string {
	for i := range msgs {
		if msgs[i].Role == RoleUser {
			return Fingerprint(msgs[:i+1])
		}
	}
	return ""
}

// PrefixFingerprints returns the fingerprint of every prefix of msgs:
// element i is [Fingerprint](msgs[:i]), for i from 0 to len(msgs). It
// hashes each message once: the hash of a prefix is the running hash's
// sum after its last message (a sum leaves the running state as it was),
// so the whole is O(total size).
func PrefixFingerprints(msgs []Message) []string {
	out := make([]string, 0, len(msgs)+1)
	h := sha256.New()
	var scratch []byte
	sum := make([]byte, 0, sha256.Size)
	out = append(out, hex.EncodeToString(h.Sum(sum)))
	for i := range msgs {
		scratch = fingerprintRecord(scratch[:0], &msgs[i])
		h.Write(scratch)
		out = append(out, hex.EncodeToString(h.Sum(sum[:0])))
	}
	return out
}

// fingerprintRecord appends a message's record to dst: its head and its
// trimmed text, each prefixed with its length as a uvarint. The head is
// the role alone for most messages, so that their fingerprints are the
// ones from before tool calls counted; for an assistant message with tool
// calls it is the role, a NUL and each call's id and name (each
// length-prefixed), for a tool message with a tool_call_id the role, a
// NUL and the id. Roles have no NUL, so no head is another's.
func fingerprintRecord(dst []byte, m *Message) []byte {
	text := strings.TrimSpace(m.Content.Text())
	head := append([]byte(nil), m.Role...)
	switch {
	case len(m.ToolCalls) > 0:
		head = append(head, 0)
		for _, c := range m.ToolCalls {
			head = appendField(head, c.ID)
			head = appendField(head, c.Function.Name)
		}
	case m.Role == RoleTool && m.ToolCallID != "":
		head = append(head, 0)
		head = append(head, m.ToolCallID...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(head)))
	dst = append(dst, head...)
	return appendField(dst, text)
}

// appendField appends s prefixed with its length as a uvarint.
func appendField(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
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
