package vercelemu_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/internal/vercelemu"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

const (
	token   = "vercel-test-token"
	team    = "team_emulated"
	project = "prj_agents"
)

// env is one emulator with a Go client of the Sandbox API aimed at it.
type env struct {
	cli *client.Client
	emu *vercelemu.Emulator
	api *sandboxapi.Client
}

// setup starts an emulator on a test network (options as changed by
// change) and a client with its token and team; when the test ends the
// emulator closes and nothing it made may be left.
func setup(t *testing.T, change func(*vercelemu.Options)) *env {
	t.Helper()
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.BaseImage())
	o := vercelemu.Options{Token: token, TeamID: team, Projects: []string{project}, Image: testenv.BaseImage(),
		Network: testenv.TestNetwork(t, cli), Docker: cli, Logger: zaptest.NewLogger(t)}
	if change != nil {
		change(&o)
	}
	emu, err := vercelemu.New(ctxT(t, time.Minute), o)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, emu.Close())
		assertNothingLeft(t, cli, emu.ID())
	})
	return &env{cli: cli, emu: emu, api: newClient(t, emu, token)}
}

// newClient is a client of the emulator's API with tok.
func newClient(t *testing.T, emu *vercelemu.Emulator, tok string) *sandboxapi.Client {
	t.Helper()
	api, err := sandboxapi.New(sandboxapi.Options{BaseURL: emu.APIURL(), Token: tok, TeamID: team})
	require.NoError(t, err)
	t.Cleanup(api.CloseIdleConnections)
	return api
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// assertNothingLeft checks that no container or image of the emulator is
// left.
func assertNothingLeft(t *testing.T, cli *client.Client, id string) {
	t.Helper()
	ctx := context.Background()
	f := labelFilter(id)
	left, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	require.NoError(t, err)
	assert.Empty(t, left, "Close removes every container")
	imgs, err := cli.ImageList(ctx, image.ListOptions{Filters: f})
	require.NoError(t, err)
	assert.Empty(t, imgs, "Close removes every snapshot image")
}

// create makes a sandbox with r (in the test project) and deletes it when
// the test ends.
func (e *env) create(t *testing.T, r sandboxapi.CreateSandboxRequest) *sandboxapi.SandboxAndSession {
	t.Helper()
	r.ProjectID = project
	got, err := e.api.CreateSandbox(ctxT(t, 2*time.Minute), r)
	require.NoError(t, err)
	t.Cleanup(func() {
		err := e.api.DeleteSandbox(context.Background(), project, got.Sandbox.Name)
		if !sandboxapi.IsNotFound(err) {
			assert.NoError(t, err)
		}
	})
	return got
}

// sh runs a shell command in session id and returns its stdout; it must
// exit 0.
func (e *env) sh(t *testing.T, id, script string, sudo bool) string {
	t.Helper()
	res, err := e.api.RunCommandWait(ctxT(t, time.Minute), id, sandboxapi.CommandRequest{Command: "sh", Args: []string{"-c", script}, Sudo: sudo})
	require.NoError(t, err)
	require.Equal(t, 0, *res.Command.ExitCode, "%s: stderr %s", script, res.Stderr)
	return res.Stdout
}

// archive is a gzipped tar of files (name -> content, mode 0644, or 0755
// for names ending in ".bin"), made anew on every call.
func archive(files map[string][]byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for name, b := range files {
			mode := int64(0o644)
			if strings.HasSuffix(name, ".bin") {
				mode = 0o755
			}
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
				return nil, err
			}
			if _, err := tw.Write(b); err != nil {
				return nil, err
			}
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return io.NopCloser(&buf), nil
	}
}

// read returns the content of file p of session id.
func (e *env) read(t *testing.T, id, p string) string {
	t.Helper()
	rc, err := e.api.ReadFile(ctxT(t, time.Minute), id, p, "")
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return string(b)
}

// TestSandbox: a persistent sandbox from the base image runs commands as
// the default user (root with sudo) with its environment, takes and gives
// files, serves a port through its route, stops (its old session then
// answers 410) and resumes with its files, is found by tag, retagged and
// deleted.
func TestSandbox(t *testing.T) {
	e := setup(t, nil)
	ctx := ctxT(t, 5*time.Minute)
	persistent := true
	sb := e.create(t, sandboxapi.CreateSandboxRequest{Name: "box-" + testenv.RandomHex(3), Ports: []int{3000},
		Persistent: &persistent, Timeout: time.Minute.Milliseconds(), Resources: &sandboxapi.Resources{VCPUs: 1},
		Env: map[string]string{"GREETING": "hello"}, Tags: map[string]string{"suite": "emu"}})
	sid := sb.Session.ID
	assert.Equal(t, sandboxapi.StatusRunning, sb.Session.Status)
	assert.Equal(t, sandboxapi.StatusRunning, sb.Sandbox.Status)
	assert.Equal(t, sid, sb.Sandbox.CurrentSessionID)
	assert.Equal(t, 2048, sb.Session.Memory)
	assert.Equal(t, vercelemu.DefaultCwd, sb.Session.Cwd)
	require.Len(t, sb.Routes, 1)
	assert.Equal(t, 3000, sb.Routes[0].Port)
	assert.Equal(t, e.emu.ProxyURL()+"/"+sb.Routes[0].Subdomain, sb.Routes[0].URL)

	t.Run("commands run as the default user, or root with sudo", func(t *testing.T) {
		res, err := e.api.RunCommandWait(ctx, sid, sandboxapi.CommandRequest{Command: "sh",
			Args: []string{"-c", `id -un; pwd; echo "$GREETING $EXTRA"`}, Env: map[string]string{"EXTRA": "there"}})
		require.NoError(t, err)
		assert.Equal(t, "vercel-sandbox\n/vercel/sandbox\nhello there\n", res.Stdout, "the sandbox's env and the command's")
		assert.Equal(t, "root\n", e.sh(t, sid, "id -un", true))
		res, err = e.api.RunCommandWait(ctx, sid, sandboxapi.CommandRequest{Command: "sh", Args: []string{"-c", "echo oops >&2; exit 3"}})
		require.NoError(t, err)
		assert.Equal(t, 3, *res.Command.ExitCode)
		assert.Equal(t, "oops\n", res.Stderr)
	})

	t.Run("files go in and out", func(t *testing.T) {
		require.NoError(t, e.api.WriteFiles(ctx, sid, "/", archive(map[string][]byte{"vercel/sandbox/dir/hello.txt": []byte("hi there")})))
		assert.Equal(t, "hi there", e.read(t, sid, "dir/hello.txt"))
		assert.Equal(t, "vercel-sandbox\n", e.sh(t, sid, "stat -c %U /vercel/sandbox/dir/hello.txt", false), "written as the default user")
		_, err := e.api.ReadFile(ctx, sid, "/vercel/sandbox/missing.txt", "")
		assert.ErrorIs(t, err, sandboxapi.ErrNoFile)
		require.NoError(t, e.api.MkDir(ctx, sid, "made", ""))
		assert.Error(t, e.api.MkDir(ctx, sid, "made/a/b", ""), "mkdir makes no parents")
		err = e.api.WriteFiles(ctx, sid, "/", archive(map[string][]byte{"etc/forbidden.txt": []byte("x")}))
		assert.Equal(t, http.StatusBadRequest, sandboxapi.StatusOf(err), "the default user cannot write /etc: %v", err)
	})

	t.Run("a detached server answers through the route", func(t *testing.T) {
		server, err := os.ReadFile(testenv.GoBinary(t, "./internal/anthropictest/cmd/mock-anthropic"))
		require.NoError(t, err)
		require.NoError(t, e.api.WriteFiles(ctx, sid, "/vercel/sandbox", archive(map[string][]byte{"server.bin": server})))
		cmd, err := e.api.RunCommand(ctx, sid, sandboxapi.CommandRequest{Command: "./server.bin", Args: []string{"-addr", "0.0.0.0:3000"}})
		require.NoError(t, err)
		assert.Nil(t, cmd.ExitCode, "a detached command is running")
		testenv.Eventually(t, 30*time.Second, func() bool {
			resp, err := http.Get(sb.Routes[0].URL + "/_mock/requests")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, "the server never answered through the route")
		assert.Positive(t, e.emu.ProxiedRequests()[sb.Sandbox.Name])

		_, err = e.api.KillCommand(ctx, sid, cmd.ID, 15)
		require.NoError(t, err)
		done, err := e.api.GetCommand(ctx, sid, cmd.ID, true)
		require.NoError(t, err)
		require.NotNil(t, done.ExitCode)
		resp, err := http.Get(sb.Routes[0].URL + "/_mock/requests")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadGateway, resp.StatusCode, "nothing listens any more")
	})

	t.Run("stop, then resume with the files", func(t *testing.T) {
		_, err := e.api.StopSession(ctx, sid)
		require.NoError(t, err)
		waitStatus(t, e.api, sb.Sandbox.Name, sandboxapi.StatusStopped)
		_, err = e.api.RunCommand(ctx, sid, sandboxapi.CommandRequest{Command: "true"})
		assert.True(t, sandboxapi.IsStopped(err), "a stopped session answers 410: %v", err)
		assert.Equal(t, sandboxapi.CodeSandboxStopped, sandboxapi.CodeOf(err))
		resp, err := http.Get(sb.Routes[0].URL + "/")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusGone, resp.StatusCode, "the route of a stopped sandbox")

		got, err := e.api.GetSession(ctx, sid)
		require.NoError(t, err)
		assert.NotZero(t, got.Session.RequestedStopAt, "a stop asked for through the API")

		resumed, err := e.api.GetSandbox(ctx, project, sb.Sandbox.Name, true)
		require.NoError(t, err)
		assert.True(t, resumed.Resumed)
		assert.NotEqual(t, sid, resumed.Session.ID, "a new session")
		assert.Equal(t, sb.Routes, resumed.Routes, "the routes stay")
		assert.Equal(t, "hi there", e.read(t, resumed.Session.ID, "dir/hello.txt"))
		again, err := e.api.GetSandbox(ctx, project, sb.Sandbox.Name, true)
		require.NoError(t, err)
		assert.False(t, again.Resumed, "a running sandbox is not resumed again")
		sid = resumed.Session.ID
	})

	t.Run("found by tag, retagged, deleted", func(t *testing.T) {
		other := e.create(t, sandboxapi.CreateSandboxRequest{Tags: map[string]string{"suite": "other"}})
		list, err := e.api.AllSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: project, TagKey: "suite", TagValue: "emu"})
		require.NoError(t, err)
		require.Len(t, list, 1)
		assert.Equal(t, sb.Sandbox.Name, list[0].Name)
		assert.NotEqual(t, other.Sandbox.Name, list[0].Name)

		up, err := e.api.UpdateSandbox(ctx, project, sb.Sandbox.Name, sandboxapi.UpdateSandboxRequest{Tags: map[string]string{"suite": "moved"}})
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"suite": "moved"}, up.Sandbox.Tags)
		list, err = e.api.AllSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: project, TagKey: "suite", TagValue: "emu"})
		require.NoError(t, err)
		assert.Empty(t, list)

		require.NoError(t, e.api.DeleteSandbox(ctx, project, sb.Sandbox.Name))
		_, err = e.api.GetSandbox(ctx, project, sb.Sandbox.Name, false)
		assert.True(t, sandboxapi.IsNotFound(err), "%v", err)
		assert.Empty(t, e.emu.ContainerID(sb.Sandbox.Name))
		assert.True(t, sandboxapi.IsNotFound(e.api.DeleteSandbox(ctx, project, sb.Sandbox.Name)), "a second delete")
	})
}

// waitStatus waits until the API reports sandbox name's session in status.
func waitStatus(t *testing.T, api *sandboxapi.Client, name, status string) *sandboxapi.SandboxAndSession {
	t.Helper()
	var got *sandboxapi.SandboxAndSession
	testenv.Eventually(t, time.Minute, func() bool {
		var err error
		got, err = api.GetSandbox(context.Background(), project, name, false)
		return err == nil && got.Session.Status == status
	}, "sandbox %s never reached %s", name, status)
	return got
}

// TestSnapshots: a snapshot stops its session and new sandboxes start from
// it with its files; a non-persistent sandbox's next session starts
// afresh; a missing snapshot is 410 snapshot_not_found.
func TestSnapshots(t *testing.T) {
	e := setup(t, nil)
	ctx := ctxT(t, 5*time.Minute)
	off := false
	src := e.create(t, sandboxapi.CreateSandboxRequest{Name: "golden-" + testenv.RandomHex(3), Persistent: &off})
	require.NoError(t, e.api.WriteFiles(ctx, src.Session.ID, "/", archive(map[string][]byte{"vercel/sandbox/kept.txt": []byte("in the snapshot")})))
	e.sh(t, src.Session.ID, "install -m 0755 /dev/null /usr/local/bin/installed-by-root", true)

	never := time.Duration(0)
	snap, err := e.api.CreateSnapshot(ctx, src.Session.ID, &never)
	require.NoError(t, err)
	assert.Equal(t, sandboxapi.SnapshotCreated, snap.Snapshot.Status)
	assert.Equal(t, src.Session.ID, snap.Snapshot.SourceSessionID)
	assert.Zero(t, snap.Snapshot.ExpiresAt, "expiration 0: never")
	assert.Positive(t, snap.Snapshot.SizeBytes)
	waitStatus(t, e.api, src.Sandbox.Name, sandboxapi.StatusStopped)

	list, err := e.api.ListSnapshots(ctx, project, src.Sandbox.Name, "")
	require.NoError(t, err)
	require.Len(t, list.Snapshots, 1)
	assert.Equal(t, snap.Snapshot.ID, list.Snapshots[0].ID)
	got, err := e.api.GetSnapshot(ctx, snap.Snapshot.ID)
	require.NoError(t, err)
	assert.Equal(t, snap.Snapshot.ID, got.ID)

	child := e.create(t, sandboxapi.CreateSandboxRequest{Source: sandboxapi.FromSnapshot(snap.Snapshot.ID)})
	assert.Equal(t, snap.Snapshot.ID, child.Session.SourceSnapshotID)
	assert.Equal(t, "in the snapshot", e.read(t, child.Session.ID, "kept.txt"))
	e.sh(t, child.Session.ID, "test -x /usr/local/bin/installed-by-root", false)

	again, err := e.api.GetSandbox(ctx, project, src.Sandbox.Name, true)
	require.NoError(t, err)
	_, err = e.api.ReadFile(ctx, again.Session.ID, "kept.txt", "")
	assert.ErrorIs(t, err, sandboxapi.ErrNoFile, "a non-persistent sandbox starts afresh")

	_, err = e.api.CreateSandbox(ctx, sandboxapi.CreateSandboxRequest{ProjectID: project, Source: sandboxapi.FromSnapshot("snap_missing")})
	assert.True(t, sandboxapi.IsStopped(err), "%v", err)
	assert.Equal(t, sandboxapi.CodeSnapshotNotFound, sandboxapi.CodeOf(err))

	_, err = e.api.DeleteSnapshot(ctx, snap.Snapshot.ID)
	require.NoError(t, err)
	_, err = e.api.CreateSandbox(ctx, sandboxapi.CreateSandboxRequest{ProjectID: project, Source: sandboxapi.FromSnapshot(snap.Snapshot.ID)})
	assert.Equal(t, sandboxapi.CodeSnapshotNotFound, sandboxapi.CodeOf(err), "a deleted snapshot")
	assert.Empty(t, e.emu.Snapshots())
}

// TestTimeouts: a session stops by itself when its timeout passes (no
// stop was asked for), persistent files kept; extend-timeout moves the
// deadline within the plan's maximum; Expire stops a session as its
// timeout would, now.
func TestTimeouts(t *testing.T) {
	e := setup(t, func(o *vercelemu.Options) { o.MaxTimeout = 10 * time.Minute })
	ctx := ctxT(t, 5*time.Minute)

	t.Run("the timeout stops the session", func(t *testing.T) {
		sb := e.create(t, sandboxapi.CreateSandboxRequest{Timeout: 2000})
		e.sh(t, sb.Session.ID, "echo kept > /vercel/sandbox/kept.txt", false)
		stopped := waitStatus(t, e.api, sb.Sandbox.Name, sandboxapi.StatusStopped)
		assert.Zero(t, stopped.Session.RequestedStopAt, "nobody asked for the stop")
		assert.GreaterOrEqual(t, stopped.Session.StoppedAt, stopped.Session.StartedAt+stopped.Session.Timeout)
		assert.Equal(t, stopped.Session.StartedAt+stopped.Session.Timeout, stopped.Sandbox.ExpiresAt)
		resumed, err := e.api.GetSandbox(ctx, project, sb.Sandbox.Name, true)
		require.NoError(t, err)
		assert.Equal(t, "kept\n", e.read(t, resumed.Session.ID, "kept.txt"))
	})

	t.Run("extend within the plan's maximum", func(t *testing.T) {
		sb := e.create(t, sandboxapi.CreateSandboxRequest{Timeout: time.Minute.Milliseconds()})
		s, err := e.api.ExtendTimeout(ctx, sb.Session.ID, 2*time.Minute)
		require.NoError(t, err)
		assert.Equal(t, (3 * time.Minute).Milliseconds(), s.Timeout)
		assert.Equal(t, time.UnixMilli(s.StartedAt).Add(3*time.Minute), s.ExpiresAt())
		_, err = e.api.ExtendTimeout(ctx, sb.Session.ID, 8*time.Minute)
		assert.Equal(t, http.StatusBadRequest, sandboxapi.StatusOf(err), "beyond the plan's 10 minutes: %v", err)
		_, err = e.api.CreateSandbox(ctx, sandboxapi.CreateSandboxRequest{ProjectID: project, Timeout: time.Hour.Milliseconds()})
		assert.Equal(t, http.StatusBadRequest, sandboxapi.StatusOf(err), "a create beyond the maximum")
	})

	t.Run("a waited command ends with an error line when the session stops", func(t *testing.T) {
		sb := e.create(t, sandboxapi.CreateSandboxRequest{Timeout: time.Minute.Milliseconds()})
		done := make(chan error, 1)
		go func() {
			_, err := e.api.RunCommandWait(ctx, sb.Session.ID, sandboxapi.CommandRequest{Command: "sh", Args: []string{"-c", "touch /tmp/started; sleep 60"}})
			done <- err
		}()
		testenv.Eventually(t, 30*time.Second, func() bool {
			res, err := e.api.RunCommandWait(ctx, sb.Session.ID, sandboxapi.CommandRequest{Command: "test", Args: []string{"-f", "/tmp/started"}})
			return err == nil && *res.Command.ExitCode == 0
		}, "the command never started")
		require.NoError(t, e.emu.Expire(ctx, sb.Sandbox.Name))
		err := <-done
		var se *sandboxapi.StreamError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, sandboxapi.CodeSandboxStopped, se.Code)
	})

	t.Run("Expire stops it now, as its timeout would", func(t *testing.T) {
		sb := e.create(t, sandboxapi.CreateSandboxRequest{Timeout: time.Minute.Milliseconds()})
		require.NoError(t, e.emu.Expire(ctx, sb.Sandbox.Name))
		got, err := e.api.GetSession(ctx, sb.Session.ID)
		require.NoError(t, err)
		assert.Equal(t, sandboxapi.StatusStopped, got.Session.Status)
		assert.Zero(t, got.Session.RequestedStopAt)
		assert.GreaterOrEqual(t, got.Session.StoppedAt, got.Session.StartedAt+got.Session.Timeout)
		_, err = e.api.ExtendTimeout(ctx, sb.Session.ID, time.Minute)
		assert.True(t, sandboxapi.IsStopped(err), "an ended session cannot be extended: %v", err)
	})
}

// TestCrash: a sandbox whose container dies behind the API's back has a
// failed session; resumed, a persistent one has its files.
func TestCrash(t *testing.T) {
	e := setup(t, nil)
	ctx := ctxT(t, 3*time.Minute)
	sb := e.create(t, sandboxapi.CreateSandboxRequest{})
	e.sh(t, sb.Session.ID, "echo survived > /vercel/sandbox/f.txt", false)
	require.NoError(t, e.emu.Crash(ctx, sb.Sandbox.Name))
	got, err := e.api.GetSandbox(ctx, project, sb.Sandbox.Name, false)
	require.NoError(t, err)
	assert.Equal(t, sandboxapi.StatusFailed, got.Sandbox.Status)
	resumed, err := e.api.GetSandbox(ctx, project, sb.Sandbox.Name, true)
	require.NoError(t, err)
	assert.Equal(t, "survived\n", e.read(t, resumed.Session.ID, "f.txt"))
}

// TestErrors: Vercel's answers to a bad token (403 with invalidToken), a
// foreign team (403), an unknown project (404), and rate limits (429 with
// Retry-After, which the client waits out).
func TestErrors(t *testing.T) {
	// One vCPU back every 15 s: the second create below comes well within
	// that, however slow the first one is under load.
	e := setup(t, func(o *vercelemu.Options) { o.RateLimits = vercelemu.RateLimits{VCPUsPerMinute: 4, Burst: 2} })
	ctx := ctxT(t, 3*time.Minute)

	_, err := newClient(t, e.emu, "wrong-token").ListSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: project})
	assert.Equal(t, http.StatusForbidden, sandboxapi.StatusOf(err))
	var ae *sandboxapi.APIError
	require.ErrorAs(t, err, &ae)
	assert.Contains(t, ae.Body, `"invalidToken":true`)

	other, err := sandboxapi.New(sandboxapi.Options{BaseURL: e.emu.APIURL(), Token: token, TeamID: "team_other"})
	require.NoError(t, err)
	_, err = other.ListSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: project})
	assert.Equal(t, http.StatusForbidden, sandboxapi.StatusOf(err))

	_, err = e.api.CreateSandbox(ctx, sandboxapi.CreateSandboxRequest{ProjectID: "prj_missing"})
	assert.True(t, sandboxapi.IsNotFound(err))
	assert.Contains(t, err.Error(), "Project not found")

	e.emu.Throttle(2)
	_, err = e.api.ListSandboxes(ctx, sandboxapi.ListSandboxesRequest{ProjectID: project})
	require.NoError(t, err, "the client waits out the 429s")
	assert.Equal(t, []int{429, 429, 200}, statuses(e.emu.Requests()[len(e.emu.Requests())-3:]))

	// Two vCPUs of burst: the second 1-vCPU sandbox after a 2-vCPU one is
	// refused until a vCPU is back, and the client waits for it.
	e.emu.ResetCalls()
	e.create(t, sandboxapi.CreateSandboxRequest{Resources: &sandboxapi.Resources{VCPUs: 2}})
	e.create(t, sandboxapi.CreateSandboxRequest{Resources: &sandboxapi.Resources{VCPUs: 1}})
	reqs := e.emu.Requests()
	limited := 0
	for _, r := range reqs {
		if r.Route == vercelemu.RouteCreate && r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	assert.Positive(t, limited, "the vCPU allocation rate answered 429")
}

// labelFilter selects what emulator id made.
func labelFilter(id string) filters.Args {
	return filters.NewArgs(filters.Arg("label", vercelemu.LabelEmulator+"="+id))
}

func statuses(reqs []vercelemu.Request) []int {
	out := make([]int, len(reqs))
	for i, r := range reqs {
		out[i] = r.Status
	}
	return out
}
