package keyproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// SetWarmUp turns warm-up mode on or off. In warm-up mode the proxy
// answers every API call itself with a short canned message and nothing
// goes upstream: the agent uses it to run the CLI's first turn (which
// loads much of the CLI lazily) before any user is waiting, with no key
// and no cost.
func (p *Proxy) SetWarmUp(on bool) { p.warmUp.Store(on) }

// answerWarmUp writes a minimal Messages API answer ("OK"), streamed when
// the request asks for a stream.
func answerWarmUp(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	_ = json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes)).Decode(&req)
	msg := map[string]any{
		"id": "msg_agcluster_warmup", "type": "message", "role": "assistant", "model": req.Model,
		"content": []any{}, "stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 1, "output_tokens": 0},
	}
	if !req.Stream {
		msg["content"] = []any{map[string]any{"type": "text", "text": "OK"}}
		msg["stop_reason"] = "end_turn"
		msg["usage"] = map[string]any{"input_tokens": 1, "output_tokens": 1}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(msg)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	events := []map[string]any{
		{"type": "message_start", "message": msg},
		{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}},
		{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": "OK"}},
		{"type": "content_block_stop", "index": 0},
		{"type": "message_delta", "delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil}, "usage": map[string]any{"output_tokens": 1}},
		{"type": "message_stop"},
	}
	for _, e := range events {
		b, _ := json.Marshal(e)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e["type"], b)
	}
}
