package claude

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/clienttools"
)

// process is one running CLI. Its stdout is split into lines: control
// responses go to whoever waits for them, the CLI's own control requests
// are answered, and everything else goes to lines for the running turn.
type process struct {
	cmd *exec.Cmd

	stdinMu sync.Mutex
	stdin   io.WriteCloser

	lines chan []byte   // closed when stdout ends
	done  chan struct{} // closed once the process has been waited for
	err   error         // the Wait error, valid after done

	pendingMu sync.Mutex
	pending   map[string]chan controlResponse
	nextReq   int

	stderr *tailBuffer

	// tools is the in-process MCP server of the client's functions
	// (declared in initialize; see package clienttools).
	tools *clienttools.Server
}

// startProcess runs bin with args in dir with env, in its own process group
// so the CLI and the tools it starts can be killed together.
func startProcess(bin string, args []string, dir string, env []string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	// Own process group, so the CLI and its tools are killed together; and
	// killed with the agent should the agent itself die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Tools the CLI started may keep its stderr open after it exits; do not
	// let them delay noticing the exit.
	cmd.WaitDelay = 2 * time.Second
	p := &process{
		cmd:     cmd,
		lines:   make(chan []byte, 256),
		done:    make(chan struct{}),
		pending: make(map[string]chan controlResponse),
		stderr:  &tailBuffer{max: 4096},
		tools:   clienttools.NewServer(),
	}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("claude stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("claude stdout: %w", err)
	}
	p.stdin = stdin
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go p.readLoop(stdout)
	return p, nil
}

func (p *process) pid() int {
	if p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// alive reports whether the process has not exited yet.
func (p *process) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

var controlMarker = []byte(`"control_`)

func (p *process) readLoop(stdout io.Reader) {
	r := bufio.NewReaderSize(stdout, 64<<10)
	for {
		raw, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(raw)) > 0 {
			if !bytes.Contains(raw, controlMarker) || !p.handleControl(raw) {
				p.lines <- raw
			}
		}
		if err != nil {
			break
		}
	}
	close(p.lines)
	p.err = p.cmd.Wait()
	close(p.done)
	p.pendingMu.Lock()
	for id, ch := range p.pending {
		close(ch)
		delete(p.pending, id)
	}
	p.pendingMu.Unlock()
}

// handleControl consumes control_response lines (routing them to their
// waiter) and control_request lines (answering them). It reports whether
// the line was one of those.
func (p *process) handleControl(raw []byte) bool {
	var l struct {
		Type      string           `json:"type"`
		RequestID string           `json:"request_id"`
		Request   json.RawMessage  `json:"request"`
		Response  *controlResponse `json:"response"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return false
	}
	switch l.Type {
	case "control_response":
		if l.Response == nil {
			return true
		}
		p.pendingMu.Lock()
		ch := p.pending[l.Response.RequestID]
		delete(p.pending, l.Response.RequestID)
		p.pendingMu.Unlock()
		if ch != nil {
			ch <- *l.Response
		}
		return true
	case "control_request":
		p.answerControl(l.RequestID, l.Request)
		return true
	}
	return false
}

// answerControl answers a control request of the CLI. mcp_message
// requests carry JSON-RPC messages for the client's functions' MCP server
// ({"subtype":"mcp_message","server_name":"client","message":{...}}); the
// answer is {"subtype":"success","request_id":...,"response":
// {"mcp_response":{...}}}, sent when the server has it (a tools/call waits
// for the client). Anything else (a permission prompt, a hook callback)
// has nobody to answer it, so it is denied at once rather than left to
// hang the turn.
func (p *process) answerControl(requestID string, raw json.RawMessage) {
	var req struct {
		Subtype    string          `json:"subtype"`
		ServerName string          `json:"server_name"`
		Message    json.RawMessage `json:"message"`
	}
	_ = json.Unmarshal(raw, &req)
	switch {
	case req.Subtype == "mcp_message" && req.ServerName == clienttools.ServerName:
		p.tools.Handle(req.Message, func(msg json.RawMessage) {
			_ = p.writeJSON(map[string]any{
				"type": "control_response",
				"response": map[string]any{
					"subtype":    "success",
					"request_id": requestID,
					"response":   map[string]any{"mcp_response": msg},
				},
			})
		})
	case req.Subtype == "mcp_message":
		_ = p.writeJSON(map[string]any{
			"type": "control_response",
			"response": map[string]any{
				"subtype":    "error",
				"request_id": requestID,
				"error":      "no such SDK MCP server: " + req.ServerName,
			},
		})
	default:
		_ = p.writeJSON(map[string]any{
			"type": "control_response",
			"response": map[string]any{
				"subtype":    "success",
				"request_id": requestID,
				"response":   map[string]any{"behavior": "deny", "message": "no interactive approver in this agent"},
			},
		})
	}
}

func (p *process) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode stdin line: %w", err)
	}
	b = append(b, '\n')
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if _, err := p.stdin.Write(b); err != nil {
		return fmt.Errorf("write to claude stdin: %w", err)
	}
	return nil
}

// sendUser writes one user turn.
func (p *process) sendUser(prompt string) error {
	return p.send(userMessage{Text: prompt})
}

// userMessage is a turn's user message.
type userMessage struct {
	// UUID, if set, becomes the message's uuid in the session: the CLI
	// takes the "uuid" of a stream-json user line as the transcript
	// entry's uuid (answering with command_lifecycle lines "queued" and
	// "started" that name it as command_uuid), and keys the turn's file
	// checkpoint by it (rewind_files user_message_id).
	UUID string
	// Text is the message's text.
	Text string
	// Images follow the text as image blocks.
	Images []agent.Image
}

// content is the message content: the text alone, or a text block
// followed by base64 image blocks (the CLI passes them to the API as
// they are, adding a text block naming the file it saved the image to).
func (m userMessage) content() any {
	if len(m.Images) == 0 {
		return m.Text
	}
	blocks := make([]map[string]any, 0, len(m.Images)+1)
	if m.Text != "" {
		blocks = append(blocks, map[string]any{"type": "text", "text": m.Text})
	}
	for _, img := range m.Images {
		blocks = append(blocks, map[string]any{"type": "image", "source": map[string]any{
			"type": "base64", "media_type": img.MediaType, "data": img.Data,
		}})
	}
	return blocks
}

// send writes one user turn.
func (p *process) send(m userMessage) error {
	line := map[string]any{
		"type":    "user",
		"message": map[string]any{"role": "user", "content": m.content()},
	}
	if m.UUID != "" {
		line["uuid"] = m.UUID
	}
	return p.writeJSON(line)
}

// control sends a control request and returns without waiting; the answer
// arrives on the returned channel (closed without a value if the process
// exits first).
func (p *process) control(subtype string) (<-chan controlResponse, error) {
	return p.request(map[string]any{"subtype": subtype})
}

// request sends the control request req (its subtype and fields) like
// control.
func (p *process) request(req map[string]any) (<-chan controlResponse, error) {
	p.pendingMu.Lock()
	p.nextReq++
	id := fmt.Sprint(req["subtype"]) + "-" + strconv.Itoa(p.nextReq)
	ch := make(chan controlResponse, 1)
	p.pending[id] = ch
	p.pendingMu.Unlock()
	err := p.writeJSON(map[string]any{
		"type":       "control_request",
		"request_id": id,
		"request":    req,
	})
	if err != nil {
		p.pendingMu.Lock()
		delete(p.pending, id)
		p.pendingMu.Unlock()
		return nil, err
	}
	return ch, nil
}

// toolsChanged tells the CLI that the client's functions changed: an
// mcp_message from the host carrying notifications/tools/list_changed,
// after which the CLI lists them again (clienttools.Server.WaitListed).
func (p *process) toolsChanged() error {
	_, err := p.request(map[string]any{
		"subtype":     "mcp_message",
		"server_name": clienttools.ServerName,
		"message":     map[string]any{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
	})
	return err
}

// call sends the control request req and waits for its answer, which it
// decodes into out. A refusal (subtype "error") is an error.
func (p *process) call(ctx context.Context, req map[string]any, out any) error {
	ch, err := p.request(req)
	if err != nil {
		return err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return fmt.Errorf("claude exited before answering %s", req["subtype"])
		}
		if resp.Subtype != "success" {
			return fmt.Errorf("claude refused %s: %s", req["subtype"], resp.Error)
		}
		if out == nil || len(resp.Response) == 0 {
			return nil
		}
		if err := json.Unmarshal(resp.Response, out); err != nil {
			return fmt.Errorf("decode %s answer: %w", req["subtype"], err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", req["subtype"], ctx.Err())
	}
}

// rewindResult is the answer to a rewind_files control request.
type rewindResult struct {
	// CanRewind tells whether a checkpoint for the message exists.
	CanRewind bool `json:"canRewind"`
	// Error says why not.
	Error string `json:"error"`
	// FilesChanged are the absolute paths a rewind changes (dry runs only).
	FilesChanged []string `json:"filesChanged"`
}

// rewindFiles puts the files the session's file tools touched back as they
// were when the user message with uuid id arrived (the turn's start), or
// with dryRun only tells which files that would change.
//
// Facts (claude 2.1.328): the control request is {"subtype":
// "rewind_files", "user_message_id": <uuid>, "dry_run": bool}; it needs
// CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING in the CLI's environment (else
// "File rewinding is not enabled."). A dry run answers success with
// {canRewind, filesChanged, insertions, deletions}, or {canRewind: false,
// error: "No file checkpoint found for this message."}; a rewind answers
// {canRewind: true, skippedLinks: 0}, or an error response. Files written
// by Write are removed, Edit changes reverted; what Bash did is not
// touched (only files the file tools touched are tracked). It works after
// the process was restarted with --resume and in forks, which carry the
// checkpoints of the session they were made from.
func (p *process) rewindFiles(ctx context.Context, id string, dryRun bool) (rewindResult, error) {
	var res rewindResult
	err := p.call(ctx, map[string]any{"subtype": "rewind_files", "user_message_id": id, "dry_run": dryRun}, &res)
	if err == nil && !res.CanRewind {
		err = fmt.Errorf("claude cannot rewind files to %s: %s", id, res.Error)
	}
	return res, err
}

// initialize sends the initialize control request and waits for its answer:
// once it comes, the CLI has loaded and a user turn starts without delay.
//
// It declares the MCP server of the client's functions, hosted by the agent
// (sdkMcpServers), with calls that are never moved to the background
// (they wait on the client) and a timeout beyond any wait for the client.
func (p *process) initialize(ctx context.Context) error {
	ch, err := p.request(map[string]any{
		"subtype":       "initialize",
		"sdkMcpServers": []string{clienttools.ServerName},
		"sdkMcpServerConfigs": map[string]any{clienttools.ServerName: map[string]any{
			"disableAutoBackground": true,
			"timeout":               clientToolCallTimeout.Milliseconds(),
		}},
	})
	if err != nil {
		return err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			<-p.done
			return fmt.Errorf("claude exited during start-up (%v): %s", p.err, p.stderr.String())
		}
		if resp.Subtype != "success" {
			return fmt.Errorf("claude refused initialize: %s", resp.Error)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("claude did not initialise: %w", ctx.Err())
	}
}

// clientToolCallTimeout is the CLI's own limit on a call of a client
// function; the agent's wait for the client (Options.ToolResultTimeout)
// ends long before it.
const clientToolCallTimeout = 24 * time.Hour

// kill ends the CLI and every process it started.
func (p *process) kill() {
	if pid := p.pid(); pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// stop asks the CLI to finish (stdin closed), then kills it after grace.
func (p *process) stop(grace time.Duration) {
	p.stdinMu.Lock()
	_ = p.stdin.Close()
	p.stdinMu.Unlock()
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
		<-p.done
	}
}

// exitDescription says how the process ended, with the tail of stderr.
func (p *process) exitDescription() string {
	msg := "exited"
	if p.err != nil {
		msg = p.err.Error()
	}
	if tail := p.stderr.String(); tail != "" {
		msg += ": " + tail
	}
	return msg
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}
