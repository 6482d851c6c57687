package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// sseResult is a parsed and checked chunk stream.
type sseResult struct {
	Chunks    []ChatCompletionChunk
	Content   string
	Reasoning string
	Finish    string
	Usage     *Usage
	Comments  int
	// ToolCalls are the delta.tool_calls, each whole in its chunk, in
	// index order.
	ToolCalls []ToolCall
}

// checkSSE parses a StreamWriter's output and checks every rule clients
// rely on: only data lines and comments; each data line but [DONE] is a
// chunk object without an "error" key that json.Marshal reproduces byte
// for byte (but for replaced invalid UTF-8); one id; the first delta has role assistant; every choice has a
// finish_reason key, null but in exactly one chunk; only the usage chunk
// follows the final chunk and its choices are []; the stream ends with
// exactly one data: [DONE].
func checkSSE(raw string) (*sseResult, error) {
	res := &sseResult{}
	if !strings.HasSuffix(raw, "data: [DONE]\n\n") {
		return nil, fmt.Errorf("stream does not end with data: [DONE]: %q", tailOf(raw))
	}
	if strings.Count(raw, "data: [DONE]") != 1 {
		return nil, fmt.Errorf("data: [DONE] appears %d times", strings.Count(raw, "data: [DONE]"))
	}
	events := strings.Split(strings.TrimSuffix(raw, "\n\n"), "\n\n")
	id := ""
	finishes := 0
	for i, ev := range events {
		if strings.Contains(ev, "\n") {
			return nil, fmt.Errorf("event %d spans several lines: %q", i, ev)
		}
		if strings.HasPrefix(ev, ":") {
			res.Comments++
			continue
		}
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok {
			return nil, fmt.Errorf("event %d is not a data line: %q", i, ev)
		}
		if data == "[DONE]" {
			if i != len(events)-1 {
				return nil, fmt.Errorf("[DONE] is not last")
			}
			break
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal([]byte(data), &top); err != nil {
			return nil, fmt.Errorf("event %d is not a JSON object: %v: %q", i, err, data)
		}
		if _, ok := top["error"]; ok {
			return nil, fmt.Errorf("event %d has an error key", i)
		}
		if string(top["choices"]) == "null" || top["choices"] == nil {
			return nil, fmt.Errorf("event %d has null choices", i)
		}
		var c ChatCompletionChunk
		dec := json.NewDecoder(strings.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("event %d: %v", i, err)
		}
		again, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		// json.Marshal writes a decoded U+FFFD as is; the chunk escapes the
		// invalid byte it replaced.
		if !bytes.Equal(again, []byte(data)) && !strings.Contains(data, `\ufffd`) {
			return nil, fmt.Errorf("event %d differs from json.Marshal:\n got %s\nwant %s", i, data, again)
		}
		if c.Object != ObjectChunk {
			return nil, fmt.Errorf("event %d: object %q", i, c.Object)
		}
		if id == "" {
			id = c.ID
			if !strings.HasPrefix(id, "chatcmpl-") {
				return nil, fmt.Errorf("id %q", id)
			}
		} else if c.ID != id {
			return nil, fmt.Errorf("event %d: id %q, want %q", i, c.ID, id)
		}
		if len(res.Chunks) == 0 {
			if len(c.Choices) != 1 || c.Choices[0].Delta.Role != "assistant" {
				return nil, fmt.Errorf("first chunk has no assistant role: %s", data)
			}
		} else if len(c.Choices) > 0 && c.Choices[0].Delta.Role != "" {
			return nil, fmt.Errorf("event %d repeats the role", i)
		}
		if finishes > 0 && (len(c.Choices) > 0 || c.Usage == nil) {
			return nil, fmt.Errorf("event %d follows the final chunk and is not a usage chunk: %s", i, data)
		}
		if c.Usage != nil {
			if len(c.Choices) != 0 || !strings.Contains(data, `"choices":[]`) {
				return nil, fmt.Errorf("usage chunk with choices: %s", data)
			}
			if res.Usage != nil {
				return nil, fmt.Errorf("two usage chunks")
			}
			res.Usage = c.Usage
		}
		for _, ch := range c.Choices {
			if !strings.Contains(data, `"finish_reason":`) {
				return nil, fmt.Errorf("event %d has no finish_reason key", i)
			}
			if ch.Index != 0 {
				return nil, fmt.Errorf("choice index %d", ch.Index)
			}
			if ch.Delta.Content != nil {
				res.Content += *ch.Delta.Content
			}
			if ch.Delta.ReasoningContent != nil {
				res.Reasoning += *ch.Delta.ReasoningContent
			}
			for _, tc := range ch.Delta.ToolCalls {
				if tc.Index != len(res.ToolCalls) || tc.Type != ToolTypeFunction || !strings.Contains(data, `"id":`) || !strings.Contains(data, `"name":`) {
					return nil, fmt.Errorf("event %d: tool call out of order or incomplete: %s", i, data)
				}
				res.ToolCalls = append(res.ToolCalls, ToolCall{ID: tc.ID, Type: tc.Type, Function: tc.Function})
			}
			if ch.FinishReason != nil && (*ch.FinishReason == FinishToolCalls) != (len(res.ToolCalls) > 0) {
				return nil, fmt.Errorf("event %d: finish_reason %q after %d tool calls", i, *ch.FinishReason, len(res.ToolCalls))
			}
			if ch.FinishReason != nil {
				finishes++
				res.Finish = *ch.FinishReason
			}
		}
		res.Chunks = append(res.Chunks, c)
	}
	if finishes != 1 {
		return nil, fmt.Errorf("%d chunks with a finish_reason, want 1", finishes)
	}
	return res, nil
}

func tailOf(s string) string {
	if len(s) > 200 {
		return s[len(s)-200:]
	}
	return s
}
