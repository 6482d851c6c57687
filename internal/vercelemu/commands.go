package vercelemu

import (
	"context"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/docker/docker/pkg/stdcopy"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// maxLogBytes is how much of a command's output the emulator keeps (the
// oldest goes first): the agent server logs for as long as it runs.
const maxLogBytes = 1 << 20

// command is a command started in a session: a Docker exec whose output
// is kept for its logs.
type command struct {
	id, name, cwd string
	args          []string
	s             *session
	container     string
	startedAt     int64
	pidFile       string

	mu       sync.Mutex
	logs     []logEntry // logs[i] has sequence number first+i
	first    int
	size     int
	exitCode *int
	duration int64
	done     chan struct{}
	updated  chan struct{} // closed and replaced on new output or exit
}

// logEntry is one piece of output.
type logEntry struct {
	stream, data string
}

// view is c as the API reports it.
func (c *command) view() sandboxapi.Command {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := sandboxapi.Command{ID: c.id, Name: c.name, Args: slices.Clone(c.args), Cwd: c.cwd,
		SessionID: c.s.id, StartedAt: c.startedAt, DurationMs: c.duration}
	if c.exitCode != nil {
		code := *c.exitCode
		out.ExitCode = &code
	}
	return out
}

// add appends output.
func (c *command) add(stream string, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.logs = append(c.logs, logEntry{stream: stream, data: string(p)})
	c.size += len(p)
	for c.size > maxLogBytes && len(c.logs) > 1 {
		c.size -= len(c.logs[0].data)
		c.logs = c.logs[1:]
		c.first++
	}
	close(c.updated)
	c.updated = make(chan struct{})
}

// finish records the exit code.
func (c *command) finish(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exitCode = &code
	c.duration = now() - c.startedAt
	close(c.done)
	close(c.updated)
	c.updated = make(chan struct{})
}

// since returns the output from sequence number seq on, the next
// sequence number, whether the command has finished, and a channel
// closed when there is more.
func (c *command) since(seq int) ([]logEntry, int, bool, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq = max(seq, c.first)
	out := slices.Clone(c.logs[seq-c.first:])
	return out, c.first + len(c.logs), c.exitCode != nil, c.updated
}

// follow calls fn with each piece of output from the start (what is
// kept) until the command finishes, or ctx ends.
func (c *command) follow(ctx context.Context, fn func(logEntry) error) error {
	for seq := 0; ; {
		entries, next, finished, more := c.since(seq)
		for _, l := range entries {
			if err := fn(l); err != nil {
				return err
			}
		}
		seq = next
		if finished { // all output was in before the exit was recorded
			return nil
		}
		select {
		case <-more:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// logWriter adds what is written to a command's stream.
type logWriter struct {
	c      *command
	stream string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.c.add(w.stream, p)
	return len(p), nil
}

// startCommand starts r in running session s as the default user (root
// with sudo), with the sandbox's environment plus r's, in r's working
// directory (the session's by default). The command runs under a shell
// that records its pid, so that kill can signal it.
func (e *Emulator) startCommand(ctx context.Context, s *session, r sandboxapi.CommandRequest) (*command, error) {
	e.mu.Lock()
	sb := s.sb
	cid := sb.container
	env := maps.Clone(sb.env)
	e.mu.Unlock()
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, r.Env)
	cwd := r.Cwd
	if cwd == "" {
		cwd = DefaultCwd
	} else if !path.IsAbs(cwd) {
		cwd = path.Join(DefaultCwd, cwd)
	}
	user := DefaultUser
	if r.Sudo {
		user = "root"
	}
	c := &command{id: "cmd_" + randhex.String(12), name: r.Command, args: slices.Clone(r.Args), cwd: cwd, s: s,
		container: cid, startedAt: now(), done: make(chan struct{}), updated: make(chan struct{})}
	if c.args == nil {
		c.args = []string{}
	}
	c.pidFile = "/tmp/.vercelemu-" + c.id + ".pid"
	argv := append([]string{"/bin/sh", "-c", `echo $$ >"$0" && exec "$@"`, c.pidFile, r.Command}, r.Args...)
	envList := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		envList = append(envList, k+"="+env[k])
	}
	execID, hj, err := e.startExec(ctx, cid, user, argv, envList, cwd, false)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.commands[c.id] = c
	e.spawn(func() {
		defer hj.Close()
		_, _ = stdcopy.StdCopy(logWriter{c, "stdout"}, logWriter{c, "stderr"}, hj.Reader)
		ctx, cancel := e.opContext(time.Minute)
		defer cancel()
		code, err := e.exitCode(ctx, execID)
		if err != nil {
			code = 137 // the container went away with it
		}
		c.finish(code)
	})
	return c, nil
}

// killCommand sends signal to c's process (nothing when it has exited).
func (e *Emulator) killCommand(ctx context.Context, c *command, signal int) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	res, err := e.run(ctx, c.container, "root",
		[]string{"sh", "-c", `kill -"$1" "$(cat "$0")" 2>/dev/null || true`, c.pidFile, strconv.Itoa(signal)}, nil, "/", nil)
	if err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	if res.exitCode != 0 {
		return fmt.Errorf("kill: exit %d: %s", res.exitCode, res.stderr)
	}
	return nil
}
