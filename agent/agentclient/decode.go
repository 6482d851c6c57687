package agentclient

import (
	"bytes"
	"encoding/json"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/internal/jsonscan"
)

// Text and thinking deltas are most of a turn's events. The agent writes
// them with encoding/json in field order:
//
//	{"type":"text_delta","seq":N[,"parent_tool_use_id":"..."],"text":"..."}
//
// decodeEvent reads that shape directly and decodes anything else with
// encoding/json; both give the same Event (FuzzDecodeEvent checks that).
var (
	textDeltaPrefix     = []byte(`{"type":"text_delta","seq":`)
	thinkingDeltaPrefix = []byte(`{"type":"thinking_delta","seq":`)
	parentField         = []byte(`,"parent_tool_use_id":"`)
	textField           = []byte(`,"text":`)
)

func decodeEvent(data []byte) (agent.Event, error) {
	if e, ok := decodeDelta(data); ok {
		return e, nil
	}
	var e agent.Event
	err := json.Unmarshal(data, &e)
	return e, err
}

func decodeDelta(data []byte) (agent.Event, bool) {
	var e agent.Event
	rest, ok := bytes.CutPrefix(data, textDeltaPrefix)
	e.Type = agent.EventTextDelta
	if !ok {
		if rest, ok = bytes.CutPrefix(data, thinkingDeltaPrefix); !ok {
			return e, false
		}
		e.Type = agent.EventThinkingDelta
	}
	if e.Seq, rest, ok = jsonscan.CutInt(rest); !ok {
		return e, false
	}
	if r, ok := bytes.CutPrefix(rest, parentField); ok {
		parent, r, ok := jsonscan.CutPlainString(r)
		if !ok {
			return e, false
		}
		e.ParentToolUseID, rest = string(parent), r
	}
	if rest, ok = bytes.CutPrefix(rest, textField); !ok {
		return e, false
	}
	if e.Text, rest, ok = jsonscan.CutString(rest); !ok {
		return e, false
	}
	return e, len(rest) == 1 && rest[0] == '}'
}
