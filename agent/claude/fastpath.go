package claude

import (
	"bytes"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/internal/jsonscan"
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
	if _, rest, ok = jsonscan.CutInt(rest); !ok {
		return out, false
	}
	typ := agent.EventTextDelta
	if r, ok := bytes.CutPrefix(rest, textDelta); ok {
		rest = r
	} else if r, ok := bytes.CutPrefix(rest, thinkingDelta); ok {
		rest, typ = r, agent.EventThinkingDelta
	} else {
		return out, false
	}
	text, rest, ok := jsonscan.CutString(rest)
	if !ok {
		return out, false
	}
	if rest, ok = bytes.CutPrefix(rest, deltaSessionID); !ok {
		return out, false
	}
	session, rest, ok := jsonscan.CutPlainString(rest)
	if !ok {
		return out, false
	}
	var parent []byte
	if r, ok := bytes.CutPrefix(rest, deltaParentNull); ok {
		rest = r
	} else if r, ok := bytes.CutPrefix(rest, deltaParentStr); ok {
		if parent, rest, ok = jsonscan.CutPlainString(r); !ok {
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
		key, r, ok := jsonscan.CutPlainString(rest[2:])
		if !ok || !isTailKey(key) || len(r) == 0 || r[0] != ':' || len(r) < 2 || r[1] != '"' {
			return out, false
		}
		if _, rest, ok = jsonscan.CutPlainString(r[2:]); !ok {
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
