package vercelemu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// sdkDir is the harness's source in the checkout.
var sdkDir = filepath.Join(testenv.RepoRoot(), "internal", "vercelemu", "testdata", "sdk")

// sdkModules finds node and the installed @vercel/sandbox, which
// scripts/ensure-vercel-sandbox.sh installs into
// $AGCLUSTER_CACHE/vercel-sandbox-<version> (or $VERCEL_SANDBOX_DIR). A
// missing one fails the test with what provides it.
func sdkModules(t *testing.T) (node, modules string) {
	t.Helper()
	testenv.Integration(t)
	const fix = "run scripts/ensure-vercel-sandbox.sh (it installs internal/vercelemu/testdata/sdk with npm ci) or set VERCEL_SANDBOX_DIR"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not available (%v); install Node.js 20 or later, then %s", err, fix)
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(sdkDir, "package.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &pkg))
	version := pkg.Dependencies["@vercel/sandbox"]
	dir := os.Getenv("VERCEL_SANDBOX_DIR")
	if dir == "" {
		cache := os.Getenv("AGCLUSTER_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "agcluster")
		}
		dir = filepath.Join(cache, "vercel-sandbox-"+version)
	}
	modules = filepath.Join(dir, "node_modules")
	b, err = os.ReadFile(filepath.Join(modules, "@vercel", "sandbox", "package.json"))
	if err != nil {
		t.Fatalf("@vercel/sandbox %s is not installed (%v); %s", version, err, fix)
	}
	var installed struct {
		Version string `json:"version"`
	}
	require.NoError(t, json.Unmarshal(b, &installed))
	if installed.Version != version {
		t.Fatalf("%s holds @vercel/sandbox %s, the harness pins %s; %s", dir, installed.Version, version, fix)
	}
	return node, modules
}

// sdkReport is what harness.mjs observed.
type sdkReport struct {
	Created struct {
		Name       string            `json:"name"`
		Status     string            `json:"status"`
		Persistent bool              `json:"persistent"`
		Memory     int               `json:"memory"`
		Cwd        string            `json:"cwd"`
		Routes     int               `json:"routes"`
		Tags       map[string]string `json:"tags"`
	} `json:"created"`
	Whoami, Sudo, Failing, AfterStop commandOut
	Read                             string  `json:"read"`
	ReadMissing                      *string `json:"readMissing"`
	MadeDir                          int     `json:"madeDir"`
	DetachedExitCode                 *int    `json:"detachedExitCode"`
	RouteStatus                      int     `json:"routeStatus"`
	KilledExitCode                   *int    `json:"killedExitCode"`
	FetchedCommand                   bool    `json:"fetchedCommand"`
	Extended                         int64   `json:"extended"`
	Listed                           []string
	TakenName                        int               `json:"takenName"`
	TakenNameKept                    map[string]string `json:"takenNameKept"`
	StopStatus                       string            `json:"stopStatus"`
	ResumedNewSession                bool              `json:"resumedNewSession"`
	GetStatus                        string            `json:"getStatus"`
	Snapshot                         struct {
		Status  string `json:"status"`
		Source  bool   `json:"source"`
		Expires *int64 `json:"expires"`
	} `json:"snapshot"`
	SnapshotsListed int    `json:"snapshotsListed"`
	SnapshotGot     string `json:"snapshotGot"`
	Child           struct {
		Read   string `json:"read"`
		Source bool   `json:"source"`
	} `json:"child"`
	UpdatedTags     map[string]string `json:"updatedTags"`
	DeletedGet      int               `json:"deletedGet"`
	BadToken        int               `json:"badToken"`
	BadProject      int               `json:"badProject"`
	MissingSnapshot int               `json:"missingSnapshot"`
}

// commandOut is a finished command as the harness reports it.
type commandOut struct {
	ExitCode int    `json:"exitCode"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// TestOfficialSDK: @vercel/sandbox 3.5.0 itself, through its fetch
// option, drives the emulator: create, commands (waited, detached with
// logs and kill), files, the route, extend, list by tag, a second create
// of a name (409), stop and the SDK's automatic resume, snapshots,
// update, delete and the errors the SDK reads (404, 403, 410). Every
// answer passed the SDK's validators, or the harness would have failed.
// Its first calls meet 429s, which the SDK waits out.
func TestOfficialSDK(t *testing.T) {
	node, modules := sdkModules(t)
	e := setup(t, nil)
	dir := t.TempDir()
	script, err := os.ReadFile(filepath.Join(sdkDir, "harness.mjs"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "harness.mjs"), script, 0o644))
	require.NoError(t, os.Symlink(modules, filepath.Join(dir, "node_modules")))

	e.emu.Throttle(2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "harness.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EMU_API="+e.emu.APIURL(), "EMU_TOKEN="+token, "EMU_TEAM="+team, "EMU_PROJECT="+project,
		"SERVER_BIN="+testenv.GoBinary(t, "./internal/anthropictest/cmd/mock-anthropic"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "node harness.mjs:\n%s", stderr.String())
	var r sdkReport
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &r), "report: %s\nstderr: %s", stdout.String(), stderr.String())
	t.Logf("@vercel/sandbox: %s", bytes.TrimSpace(stdout.Bytes()))

	assert.Equal(t, "running", r.Created.Status)
	assert.True(t, r.Created.Persistent)
	assert.Equal(t, 2048, r.Created.Memory)
	assert.Equal(t, "/vercel/sandbox", r.Created.Cwd)
	assert.Equal(t, 1, r.Created.Routes)
	assert.Equal(t, map[string]string{"suite": "sdk"}, r.Created.Tags)
	assert.Equal(t, commandOut{Stdout: "vercel-sandbox\nhello sdk\n"}, r.Whoami)
	assert.Equal(t, commandOut{Stdout: "root\n"}, r.Sudo)
	assert.Equal(t, commandOut{ExitCode: 7, Stderr: "bad\n"}, r.Failing)
	assert.Equal(t, "written by the sdk", r.Read)
	assert.Nil(t, r.ReadMissing, "a missing file reads as null")
	assert.Zero(t, r.MadeDir)
	assert.Nil(t, r.DetachedExitCode, "a detached command runs")
	assert.Equal(t, http.StatusOK, r.RouteStatus, "the server answered through the route")
	require.NotNil(t, r.KilledExitCode)
	assert.True(t, r.FetchedCommand)
	assert.Equal(t, int64(60_000), r.Extended)
	assert.Equal(t, []string{r.Created.Name}, r.Listed)
	assert.Equal(t, http.StatusConflict, r.TakenName, "a sandbox name is unique in its project")
	assert.Equal(t, map[string]string{"suite": "sdk"}, r.TakenNameKept, "the sandbox of the name is left as it was")
	assert.Contains(t, []string{"stopping", "stopped"}, r.StopStatus)
	assert.Equal(t, commandOut{Stdout: "written by the sdk"}, r.AfterStop, "the SDK resumed the stopped sandbox with its files")
	assert.True(t, r.ResumedNewSession)
	assert.Equal(t, "running", r.GetStatus)
	assert.Equal(t, "created", r.Snapshot.Status)
	assert.True(t, r.Snapshot.Source)
	assert.Nil(t, r.Snapshot.Expires, "expiration 0: never")
	assert.Equal(t, 1, r.SnapshotsListed)
	assert.Equal(t, "created", r.SnapshotGot)
	assert.Equal(t, "written by the sdk", r.Child.Read, "a sandbox from the snapshot has its files")
	assert.True(t, r.Child.Source)
	assert.Equal(t, map[string]string{"suite": "sdk-updated"}, r.UpdatedTags)
	assert.Equal(t, http.StatusNotFound, r.DeletedGet)
	assert.Equal(t, http.StatusForbidden, r.BadToken)
	assert.Equal(t, http.StatusNotFound, r.BadProject)
	assert.Equal(t, http.StatusGone, r.MissingSnapshot)

	var sdkCalls, limited int
	for _, req := range e.emu.Requests() {
		if strings.HasPrefix(req.Header.Get("User-Agent"), "vercel/sandbox/3.5.0") {
			sdkCalls++
			if req.Status == http.StatusTooManyRequests {
				limited++
			}
		}
	}
	assert.Positive(t, sdkCalls, "the requests came from the SDK")
	assert.Equal(t, 2, limited, "the SDK met the two 429s and went on")
	assert.Empty(t, e.emu.Sandboxes(), "the harness deleted its sandboxes")
}
