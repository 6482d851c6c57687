package vercelemu

import (
	"io"
	"net/http"
	"path"
	"strings"

	"github.com/docker/docker/pkg/stdcopy"

	"github.com/agcluster/caddy-agcluster/internal/emuhttp"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

// containerOf is the container of c's sandbox.
func (e *Emulator) containerOf(c *call) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return c.sb.container
}

// resolve makes p absolute: relative paths are under cwd (the session's
// working directory by default).
func resolve(p, cwd string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	if cwd == "" {
		cwd = DefaultCwd
	} else if !path.IsAbs(cwd) {
		cwd = path.Join(DefaultCwd, cwd)
	}
	return path.Join(cwd, p)
}

// writeFiles is POST .../fs/write: the body, a gzipped tar archive, is
// extracted into the x-cwd directory by tar running as the default user
// (so its permissions apply, as for Vercel's file API), streamed.
func (e *Emulator) writeFiles(c *call) {
	dir := resolve(c.r.Header.Get("X-Cwd"), "/")
	res, err := e.run(c.r.Context(), e.containerOf(c), DefaultUser,
		[]string{"tar", "-xzf", "-", "-C", dir, "--no-same-owner", "--no-overwrite-dir"}, nil, "/", c.r.Body)
	if err != nil {
		writeError(c.w, http.StatusInternalServerError, "internal_server_error", "Writing the files failed: "+err.Error())
		return
	}
	if res.exitCode != 0 {
		writeError(c.w, http.StatusBadRequest, "bad_request", "Writing the files failed: "+strings.TrimSpace(res.stderr))
		return
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, struct{}{})
}

// readFile is POST .../fs/read {"path", "cwd"}: the file's bytes as
// application/octet-stream, read as the default user; 404 without a body
// when it is not a readable file.
func (e *Emulator) readFile(c *call) {
	var in sandboxapi.PathRequest
	if !decode(c, &in) {
		return
	}
	p := resolve(in.Path, in.Cwd)
	cid := e.containerOf(c)
	res, err := e.run(c.r.Context(), cid, DefaultUser, []string{"test", "-f", p, "-a", "-r", p}, nil, "/", nil)
	if err != nil {
		writeError(c.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	if res.exitCode != 0 {
		c.w.WriteHeader(http.StatusNotFound)
		return
	}
	_, hj, err := e.startExec(c.r.Context(), cid, DefaultUser, []string{"cat", "--", p}, nil, "/", false)
	if err != nil {
		writeError(c.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	defer hj.Close()
	c.w.Header().Set("Content-Type", "application/octet-stream")
	c.w.WriteHeader(http.StatusOK)
	_, _ = stdcopy.StdCopy(c.w, io.Discard, hj.Reader)
}

// mkdir is POST .../fs/mkdir {"path", "cwd"}: one directory, not its
// parents, made by the default user.
func (e *Emulator) mkdir(c *call) {
	var in sandboxapi.PathRequest
	if !decode(c, &in) {
		return
	}
	res, err := e.run(c.r.Context(), e.containerOf(c), DefaultUser, []string{"mkdir", "--", resolve(in.Path, in.Cwd)}, nil, "/", nil)
	if err != nil {
		writeError(c.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	if res.exitCode != 0 {
		writeError(c.w, http.StatusBadRequest, "bad_request", "mkdir failed: "+strings.TrimSpace(res.stderr))
		return
	}
	emuhttp.WriteJSON(c.w, http.StatusOK, struct{}{})
}
