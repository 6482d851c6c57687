package claude

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Most of a turn's stdout lines are text or thinking deltas, written by the
// CLI with a fixed field order:
//
//	{"type":"stream_event","event":{"type":"content_block_delta","index":N,
//	 "delta":{"type":"text_delta","text":"..."}},"session_id":"...",
//	 "parent_tool_use_id":null,...}
//
// translateDelta reads exactly that shape without a general JSON decode.
// Any other line, or any deviation from the shape, reports ok=false and
// the caller decodes the line in full, so the result is always the same
// as the full decode (FuzzTranslate checks that).
var (
	deltaPrefix     = []byte(`{"type":"stream_event","event":{"type":"content_block_delta","index":`)
	textDelta       = []byte(`,"delta":{"type":"text_delta","text":`)
	thinkingDelta   = []byte(`,"delta":{"type":"thinking_delta","thinking":`)
	deltaSessionID  = []byte(`}},"session_id":"`)
	deltaParentNull = []byte(`,"parent_tool_use_id":null`)
	deltaParentStr  = []byte(`,"parent_tool_use_id":"`)
)

// deltaTailKeys are the fields the CLI writes after parent_tool_use_id on
// delta lines; none of them is a field the full decode reads.
var deltaTailKeys = [][]byte{[]byte("uuid"), []byte("api_message_id"), []byte("thinking_display")}

func (t *Translator) translateDelta(raw []byte, out []agent.Event) (_ []agent.Event, ok bool) {
	rest, ok := bytes.CutPrefix(raw, deltaPrefix)
	if !ok {
		return out, false
	}
	// index: a JSON integer that fits an int, as the full decode needs.
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i > 9 || (i > 1 && rest[0] == '0') {
		return out, false
	}
	rest = rest[i:]
	typ := agent.EventTextDelta
	if r, ok := bytes.CutPrefix(rest, textDelta); ok {
		rest = r
	} else if r, ok := bytes.CutPrefix(rest, thinkingDelta); ok {
		rest, typ = r, agent.EventThinkingDelta
	} else {
		return out, false
	}
	text, rest, ok := cutJSONString(rest)
	if !ok {
		return out, false
	}
	if rest, ok = bytes.CutPrefix(rest, deltaSessionID); !ok {
		return out, false
	}
	session, rest, ok := cutPlainString(rest)
	if !ok {
		return out, false
	}
	var parent []byte
	if r, ok := bytes.CutPrefix(rest, deltaParentNull); ok {
		rest = r
	} else if r, ok := bytes.CutPrefix(rest, deltaParentStr); ok {
		if parent, rest, ok = cutPlainString(r); !ok {
			return out, false
		}
	} else {
		return out, false
	}
	// Then only known fields with plain string values, and the end.
	for len(rest) > 1 {
		if rest[0] != ',' || len(rest) < 2 || rest[1] != '"' {
			return out, false
		}
		key, r, ok := cutPlainString(rest[2:])
		if !ok || !isTailKey(key) || len(r) == 0 || r[0] != ':' || len(r) < 2 || r[1] != '"' {
			return out, false
		}
		if _, rest, ok = cutPlainString(r[2:]); !ok {
			return out, false
		}
	}
	if len(rest) != 1 || rest[0] != '}' {
		return out, false
	}
	if len(session) > 0 && string(session) != t.SessionID { // no allocation when equal
		t.SessionID = string(session)
	}
	if len(text) == 0 {
		return out, true
	}
	e := agent.Event{Type: typ, Text: text}
	if parent != nil {
		p := string(parent)
		return append(out, t.event(e, &p)), true
	}
	return append(out, t.event(e, nil)), true
}

func isTailKey(k []byte) bool {
	for _, want := range deltaTailKeys {
		if bytes.Equal(k, want) {
			return true
		}
	}
	return false
}

// cutPlainString reads the rest of a JSON string whose opening quote is
// already consumed, if it has no escapes, no control characters and is
// valid UTF-8 (so its bytes are its value); it returns the value and what
// follows the closing quote.
func cutPlainString(b []byte) (value, rest []byte, ok bool) {
	for i, c := range b {
		switch {
		case c == '"':
			if !utf8.Valid(b[:i]) {
				return nil, b, false
			}
			return b[:i], b[i+1:], true
		case c == '\\' || c < 0x20:
			return nil, b, false
		}
	}
	return nil, b, false
}

// cutJSONString reads the JSON string at the start of b and returns its
// value and what follows it.
func cutJSONString(b []byte) (value string, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", b, false
	}
	if v, r, ok := cutPlainString(b[1:]); ok {
		return string(v), r, true
	}
	// Escapes (or bytes the decoder would replace): find the closing quote
	// and let encoding/json produce the value.
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\\':
			i++
		case c < 0x20:
			return "", b, false
		case c == '"':
			if err := json.Unmarshal(b[:i+1], &value); err != nil {
				return "", b, false
			}
			return value, b[i+1:], true
		}
	}
	return "", b, false
}
