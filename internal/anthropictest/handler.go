package anthropictest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxBodyBytes caps request bodies; Claude Code sends ~50 KB per request
// plus the conversation history.
const maxBodyBytes = 64 << 20

// defaultChunkChars is the number of characters per delta event when
// [Response.ChunkChars] is not set.
const defaultChunkChars = 12

var (
	// errClientGone ends a response whose client went away.
	errClientGone = errors.New("client went away")
	// errServerClosing ends a response because the server is closing.
	errServerClosing = errors.New("server closing")
)

// apiRequest is what the mock reads from a request body.
type apiRequest struct {
	object   bool            // the body is a JSON object
	raw      []byte          // the body
	messages json.RawMessage // the "messages" value; nil when absent
	msgs     []Message       // messages, nil when they do not decode
	model    json.RawMessage // the "model" value; nil when absent
	stream   bool

	allTextDone bool
	allText     string
}

// parseAPIRequest decodes the parts of body the mock looks at.
func parseAPIRequest(body []byte) *apiRequest {
	req := &apiRequest{raw: body}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return req
	}
	req.object = true
	req.messages = fields["messages"]
	req.model = fields["model"]
	_ = json.Unmarshal(fields["stream"], &req.stream) // not a bool: no stream
	_ = json.Unmarshal(req.messages, &req.msgs)       // not a list of objects: no messages
	return req
}

// modelText is the model as Python's str() would print it for matching;
// "" when absent.
func (r *apiRequest) modelText() string {
	var s string
	if err := json.Unmarshal(r.model, &s); err == nil {
		return s
	}
	return string(r.model)
}

// modelValue is the model to echo in answers: as requested, or "mock".
func (r *apiRequest) modelValue() any {
	if r.model == nil {
		return "mock"
	}
	return r.model
}

// inputTokens is the Python mock's estimate for the request's messages.
func (r *apiRequest) inputTokens() int {
	if r.messages == nil {
		return estTokens([]byte("[]"))
	}
	return estTokens(r.messages)
}

// text returns the body as [RecordedRequest.AllText] renders it, computed
// once.
func (r *apiRequest) text() string {
	if !r.allTextDone {
		r.allText = RecordedRequest{Body: r.raw}.AllText()
		r.allTextDone = true
	}
	return r.allText
}

// matches reports whether every condition of m holds for the request.
func (m *Match) matches(path string, req *apiRequest) bool {
	prefix := m.PathPrefix
	if prefix == "" {
		prefix = "/v1/messages"
	}
	last, _ := lastUser(req.msgs)
	switch {
	case !strings.HasPrefix(path, prefix):
		return false
	case m.Stream != nil && *m.Stream != req.stream:
		return false
	case !strings.Contains(req.modelText(), m.ModelContains):
		return false
	case !strings.Contains(last.Text(), m.LastUserTextContains):
		return false
	case m.AnyTextContains != "" && !strings.Contains(req.text(), m.AnyTextContains):
		return false
	case m.HasToolResult != nil && *m.HasToolResult != last.HasToolResult():
		return false
	case len(req.msgs) < m.MinMessages:
		return false
	}
	return true
}

// serveHTTP routes control requests and records and answers the others.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, controlPrefix) {
		s.serveControl(w, r)
		return
	}
	start := time.Now()
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	req := parseAPIRequest(body)
	path := r.URL.Path
	isMessages := r.Method == http.MethodPost && strings.HasPrefix(path, "/v1/messages")
	isCount := isMessages && strings.Contains(path, "count_tokens")

	step, resp := -1, Response{}
	scripted := readErr == nil && isMessages && req.object && !isCount
	if scripted {
		step, resp = s.pick(path, req)
	}
	rec := s.record(r, start, body, step)

	var status int
	var err error
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(readErr, &tooLarge):
		status = http.StatusRequestEntityTooLarge
		err = s.writeError(w, status, "", fmt.Sprintf("mock: request body larger than %d bytes", maxBodyBytes), nil)
	case readErr != nil:
		err = errClientGone
	case !isMessages:
		status = http.StatusNotFound
		err = s.writeJSON(w, status, "", errorBody("not_found_error",
			fmt.Sprintf("mock: no such endpoint %s %s", r.Method, path), ""), nil)
	case !req.object:
		status = http.StatusBadRequest
		err = s.writeError(w, status, "", "mock: request body is not a JSON object", nil)
	case isCount:
		status = http.StatusOK
		err = s.writeJSON(w, status, "", object{{"input_tokens", req.inputTokens()}}, nil)
	default:
		status, err = s.answer(r.Context(), w, req, resp)
	}
	s.finish(rec, status, errors.Is(err, errClientGone), time.Since(start))
}

// answer writes the scripted response to a /v1/messages request.
func (s *Server) answer(ctx context.Context, w http.ResponseWriter, req *apiRequest, resp Response) (int, error) {
	if e := resp.Error; e != nil {
		status := e.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		msg := e.Message
		if msg == "" {
			msg = "mock error"
		}
		return status, s.writeError(w, status, e.Type, msg, e.Headers)
	}
	blocks, err := s.materialize(resp)
	if err != nil {
		status := http.StatusInternalServerError
		return status, s.writeError(w, status, "", "mock: invalid scripted response: "+err.Error(), nil)
	}
	if req.stream {
		return http.StatusOK, s.stream(ctx, w, req, resp, blocks)
	}
	return http.StatusOK, s.writeJSON(w, http.StatusOK, "", s.fullMessage(req, resp, blocks), nil)
}

// errorBody returns an Anthropic error object; requestID is left out when
// empty.
func errorBody(typ, msg, requestID string) object {
	o := object{
		{"type", "error"},
		{"error", object{{"type", typ}, {"message", msg}}},
	}
	if requestID != "" {
		o.set("request_id", requestID)
	}
	return o
}

// writeError writes an Anthropic error response; an empty typ means the
// type that goes with status.
func (s *Server) writeError(w http.ResponseWriter, status int, typ, msg string, headers map[string]string) error {
	if typ == "" {
		typ = errorType(status)
	}
	reqID := s.nextID(idRequest)
	return s.writeJSON(w, status, reqID, errorBody(typ, msg, reqID), headers)
}

// writeJSON writes a JSON response with a request-id header (a new one when
// reqID is empty) and extra headers.
func (s *Server) writeJSON(w http.ResponseWriter, status int, reqID string, v any, headers map[string]string) error {
	data, err := marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	if reqID == "" {
		reqID = s.nextID(idRequest)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("request-id", reqID)
	for k, v := range headers {
		h.Set(k, v)
	}
	w.WriteHeader(status)
	if _, err := w.Write(data); err != nil {
		return errClientGone
	}
	return nil
}

// block is a scripted content block with its defaults filled in.
type block struct {
	Block
	input string // tool input as the Python mock encodes it
}

// materialize fills in ids, inputs and signatures of the response's
// blocks, like the Python mock's _materialize.
func (s *Server) materialize(resp Response) ([]block, error) {
	src := resp.Blocks
	if src == nil {
		text := resp.Text
		if text == "" {
			text = "OK"
		}
		src = []Block{{Type: BlockText, Text: text}}
	}
	out := make([]block, 0, len(src))
	for i, b := range src {
		mb := block{Block: b}
		switch b.Type {
		case BlockText:
		case BlockThinking:
			if mb.Signature == "" {
				sum := sha256.Sum256([]byte(b.Thinking))
				mb.Signature = "mock-signature-" + hex.EncodeToString(sum[:])[:16]
			}
		case BlockToolUse:
			if mb.ID == "" {
				mb.ID = s.nextID(idTool)
			}
			if len(mb.Input) == 0 {
				mb.Input = json.RawMessage("{}")
			}
			in, err := pyJSON(mb.Input)
			if err != nil {
				return nil, fmt.Errorf("block %d: tool input: %w", i, err)
			}
			mb.input = in
		default:
			return nil, fmt.Errorf("block %d: unknown block type %q", i, b.Type)
		}
		out = append(out, mb)
	}
	return out, nil
}

// content returns the block as it appears in a non-streaming answer.
func (b *block) content() object {
	switch b.Type {
	case BlockThinking:
		return object{{"type", b.Type}, {"thinking", b.Thinking}, {"signature", b.Signature}}
	case BlockToolUse:
		return object{{"type", b.Type}, {"id", b.ID}, {"name", b.Name}, {"input", b.Input}}
	default:
		return object{{"type", b.Type}, {"text", b.Text}}
	}
}

// stopReason returns the scripted stop reason or the natural one.
func stopReason(resp Response, blocks []block) string {
	if resp.StopReason != "" {
		return resp.StopReason
	}
	if slices.ContainsFunc(blocks, func(b block) bool { return b.Type == BlockToolUse }) {
		return "tool_use"
	}
	return "end_turn"
}

// usage returns the usage object: estimates, overridden by the script.
func usage(inputTokens int, resp Response, outputTokens int) object {
	u := object{
		{"input_tokens", inputTokens},
		{"cache_creation_input_tokens", 0},
		{"cache_read_input_tokens", 0},
		{"output_tokens", outputTokens},
		{"service_tier", "standard"},
	}
	for _, k := range slices.Sorted(maps.Keys(resp.Usage)) {
		u.set(k, resp.Usage[k])
	}
	return u
}

// fullMessage returns the non-streaming answer.
func (s *Server) fullMessage(req *apiRequest, resp Response, blocks []block) object {
	content := make([]object, len(blocks))
	out := 0
	for i := range blocks {
		content[i] = blocks[i].content()
		raw, err := marshal(content[i])
		if err == nil {
			out += estTokens(raw)
		}
	}
	return object{
		{"id", s.nextID(idMessage)},
		{"type", "message"},
		{"role", "assistant"},
		{"model", req.modelValue()},
		{"content", content},
		{"stop_reason", stopReason(resp, blocks)},
		{"stop_sequence", nil},
		{"usage", usage(req.inputTokens(), resp, out)},
	}
}

// sseWriter writes server-sent events and flushes each one.
type sseWriter struct {
	s  *Server
	w  http.ResponseWriter
	rc *http.ResponseController
}

// event writes one event; a failure means the client went away.
func (e *sseWriter) event(name string, data object) error {
	payload, err := marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", name, err)
	}
	msg := make([]byte, 0, len(payload)+len(name)+16)
	msg = append(msg, "event: "...)
	msg = append(msg, name...)
	msg = append(msg, "\ndata: "...)
	msg = append(msg, payload...)
	msg = append(msg, "\n\n"...)
	if _, err := e.w.Write(msg); err != nil {
		return e.s.gone()
	}
	if err := e.rc.Flush(); err != nil {
		return e.s.gone()
	}
	return nil
}

// gone returns the error for a response that cannot go on: the server is
// closing, or else the client went away.
func (s *Server) gone() error {
	select {
	case <-s.closing:
		return errServerClosing
	default:
		return errClientGone
	}
}

// pause sleeps for ms milliseconds unless the client goes away or the
// server closes first.
func (s *Server) pause(ctx context.Context, ms int) error {
	if ms <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return s.gone()
	case <-s.closing:
		return errServerClosing
	}
}

// stall blocks until the client goes away or the server closes.
func (s *Server) stall(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return s.gone()
	case <-s.closing:
		return errServerClosing
	}
}

// stream writes the answer as server-sent events, like the Python mock's
// _stream.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, req *apiRequest, resp Response, blocks []block) error {
	ev := &sseWriter{s: s, w: w, rc: http.NewResponseController(w)}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("request-id", s.nextID(idRequest))
	w.WriteHeader(http.StatusOK)
	if err := ev.rc.Flush(); err != nil {
		return s.gone()
	}
	if err := s.pause(ctx, resp.FirstByteDelayMS); err != nil {
		return err
	}

	u := usage(req.inputTokens(), resp, 1)
	err := ev.event("message_start", object{{"type", "message_start"}, {"message", object{
		{"id", s.nextID(idMessage)},
		{"type", "message"},
		{"role", "assistant"},
		{"model", req.modelValue()},
		{"content", []any{}},
		{"stop_reason", nil},
		{"stop_sequence", nil},
		{"usage", u},
	}}})
	if err != nil {
		return err
	}

	chunk := resp.ChunkChars
	if chunk <= 0 {
		chunk = defaultChunkChars
	}
	deltas, outTokens := 0, 0
	for i, b := range blocks {
		var start object
		var deltaType, key, text string
		switch b.Type {
		case BlockThinking:
			start = object{{"type", BlockThinking}, {"thinking", ""}, {"signature", ""}}
			deltaType, key, text = "thinking_delta", "thinking", b.Thinking
		case BlockToolUse:
			start = object{{"type", BlockToolUse}, {"id", b.ID}, {"name", b.Name}, {"input", object{}}}
			deltaType, key, text = "input_json_delta", "partial_json", b.input
		default:
			start = object{{"type", BlockText}, {"text", ""}}
			deltaType, key, text = "text_delta", "text", b.Text
		}
		if err := ev.event("content_block_start", object{
			{"type", "content_block_start"}, {"index", i}, {"content_block", start},
		}); err != nil {
			return err
		}
		if i == 0 {
			if err := ev.event("ping", object{{"type", "ping"}}); err != nil {
				return err
			}
		}
		outTokens += estTextTokens(text)
		runes := []rune(text)
		for j := 0; j < max(len(runes), 1); j += chunk {
			if n := resp.StreamErrorAfterDeltas; n != nil && deltas >= *n {
				return ev.event("error", errorBody("overloaded_error", "Overloaded", ""))
			}
			if n := resp.HangAfterDeltas; n != nil && deltas >= *n {
				return s.stall(ctx)
			}
			piece := string(runes[j:min(j+chunk, len(runes))])
			if resp.StampDeltas && deltaType == "text_delta" {
				piece = strconv.FormatInt(time.Now().UnixMicro(), 10) + " "
			}
			if err := ev.event("content_block_delta", object{
				{"type", "content_block_delta"}, {"index", i},
				{"delta", object{{"type", deltaType}, {key, piece}}},
			}); err != nil {
				return err
			}
			deltas++
			if err := s.pause(ctx, resp.ChunkDelayMS); err != nil {
				return err
			}
		}
		if b.Type == BlockThinking {
			if err := ev.event("content_block_delta", object{
				{"type", "content_block_delta"}, {"index", i},
				{"delta", object{{"type", "signature_delta"}, {"signature", b.Signature}}},
			}); err != nil {
				return err
			}
		}
		if err := ev.event("content_block_stop", object{{"type", "content_block_stop"}, {"index", i}}); err != nil {
			return err
		}
	}

	final := u.without("service_tier")
	if _, ok := resp.Usage["output_tokens"]; !ok {
		final.set("output_tokens", outTokens)
	}
	if err := ev.event("message_delta", object{
		{"type", "message_delta"},
		{"delta", object{{"stop_reason", stopReason(resp, blocks)}, {"stop_sequence", nil}}},
		{"usage", final},
	}); err != nil {
		return err
	}
	return ev.event("message_stop", object{{"type", "message_stop"}})
}
