package vercel_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/internal/vercelemu"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
	"github.com/agcluster/caddy-agcluster/providers/vercel"
	"github.com/agcluster/caddy-agcluster/providers/vercel/sandboxapi"
)

const (
	token   = "vercel-test-token"
	team    = "team_agents"
	project = "prj_agents"
)

// emulated is a Vercel emulator on a test network with the Anthropic
// mock, and the binaries a provider installs in its snapshot.
type emulated struct {
	emu          *vercelemu.Emulator
	mock         *anthropictest.Remote
	agentBinary  string
	claudeBinary string
}

// startEmulator runs the Sandbox API and route emulator; its sandboxes are
// containers of the plain base image (no agent: the provider installs it)
// on a test network with the Anthropic mock.
func startEmulator(t *testing.T, change func(*vercelemu.Options)) *emulated {
	t.Helper()
	testenv.Integration(t)
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.BaseImage())
	netName := testenv.TestNetwork(t, cli)
	mock := testenv.StartMockContainer(t, cli, netName)
	o := vercelemu.Options{Token: token, TeamID: team, Projects: []string{project}, Image: testenv.BaseImage(),
		Network: netName, Docker: cli, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}
	if change != nil {
		change(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emu, err := vercelemu.New(ctx, o)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, emu.Close()) })
	return &emulated{emu: emu, mock: mock, agentBinary: testenv.GoBinary(t, "./agent/cmd/agcluster-agent"),
		claudeBinary: testenv.ClaudeBin(t)}
}

// options are provider options for the emulator: its API, the binaries to
// prepare the snapshot from, the mock as the agents' Anthropic API.
func (e *emulated) options() vercel.Options {
	return vercel.Options{
		Token: token, ProjectID: project, TeamID: team, APIURL: e.emu.APIURL(),
		AgentBinary: e.agentBinary, ClaudeBinary: e.claudeBinary, VCPUs: 1,
		Env: map[string]string{"ANTHROPIC_BASE_URL": "http://" + testenv.MockAlias + ":8080"},
		// Stops are noticed within a poll; a short one keeps tests fast.
		PollInterval: caddy.Duration(500 * time.Millisecond),
	}
}

func newProvider(t testing.TB, opts vercel.Options, logger *zap.Logger) *vercel.Provider {
	return providertest.NewProvider(t, vercel.New, opts, logger)
}

// stored is everything the Sandbox API received: every request's headers
// and body (the sandbox's env and tags, the commands, the uploads' start).
func (e *emulated) stored(context.Context, string) (string, error) {
	var out strings.Builder
	for _, r := range e.emu.Requests() {
		fmt.Fprintf(&out, "%s %s %v\n%s\n", r.Method, r.URI, r.Header, r.Body)
	}
	return out.String(), nil
}

// TestConformance runs the providers' conformance suite on the Vercel
// provider against the emulator: it prepares the agent snapshot on its
// first create, and reaches agents through their routes.
func TestConformance(t *testing.T) {
	e := startEmulator(t, nil)
	opts := e.options()
	other := opts
	other.Name = "vercel-other"
	providertest.Run(t, newProvider(t, opts, nil), providertest.Options{
		NewSpec:       providertest.NewSpec,
		Reopen:        func(t *testing.T) providers.Provider { return newProvider(t, opts, nil) },
		Other:         newProvider(t, other, nil),
		Kill:          e.emu.Crash,
		Stored:        e.stored,
		ModelRequests: e.mock.Bodies,
	})
	for name, status := range e.emu.Sandboxes() {
		assert.True(t, strings.HasPrefix(name, "agcluster-snapshot-"), "sandbox %s (%s) left", name, status)
	}
}

// create makes an agent and destroys it when the test ends.
func create(t *testing.T, p providers.Provider, spec providers.Spec) *providers.Instance {
	return providertest.CreateWithin(t, p, spec, 5*time.Minute)
}

// turn runs one turn on inst and returns its answer.
func turn(t *testing.T, inst *providers.Instance, prompt string) string {
	t.Helper()
	stream, err := inst.Client().Query(providertest.Context(t, 3*time.Minute), prompt, "sk-ant-api03-vercel-test-"+testenv.RandomHex(6))
	require.NoError(t, err)
	defer stream.Close()
	var answer strings.Builder
	for {
		ev, err := stream.Next()
		require.NoError(t, err, "the turn's stream")
		switch ev.Type {
		case agent.EventTextDelta:
			answer.WriteString(ev.Text)
		case agent.EventResult:
			return answer.String()
		case agent.EventError:
			t.Fatalf("the turn failed: %s: %s", ev.Code, ev.Message)
		}
	}
}

// observed is a logger that keeps Info and above for the test to read,
// and writes everything to the test log too.
func observed(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core())), logs
}

// TestSnapshotPreparedOnce: concurrent first creates prepare one snapshot
// (one upload, one snapshot, progress in the log), whose binaries root
// owns; a second gateway finds and reuses it by name, and so does a
// provider given its id; one deleted behind the provider's back is
// prepared again on the next create.
func TestSnapshotPreparedOnce(t *testing.T) {
	e := startEmulator(t, nil)
	logger, logs := observed(t)
	p := newProvider(t, e.options(), logger)

	var wg sync.WaitGroup
	insts := make([]*providers.Instance, 3)
	for i := range insts {
		wg.Go(func() { insts[i] = create(t, p, providertest.NewSpec()) })
	}
	wg.Wait()
	calls := e.emu.Calls()
	assert.Equal(t, 1, calls[vercelemu.RouteSnapshot], "one snapshot")
	assert.Equal(t, 1, calls[vercelemu.RouteWrite], "one upload")
	assert.Equal(t, 1, logs.FilterMessage("preparing the vercel agent snapshot (once: later gateways reuse it)").Len())
	assert.NotZero(t, logs.FilterMessage("preparing the vercel agent snapshot: uploading").Len(), "upload progress is logged")
	ready := logs.FilterMessage("vercel agent snapshot ready").All()
	require.Len(t, ready, 1)
	snapID := ready[0].ContextMap()["snapshot_id"].(string)
	assert.Equal(t, []string{snapID}, e.emu.Snapshots())

	api, err := sandboxapi.New(sandboxapi.Options{BaseURL: e.emu.APIURL(), Token: token, TeamID: team})
	require.NoError(t, err)
	sb, err := api.GetSandbox(providertest.Context(t, time.Minute), project, insts[0].ID, false)
	require.NoError(t, err)
	res, err := api.RunCommandWait(providertest.Context(t, time.Minute), sb.Session.ID, sandboxapi.CommandRequest{Command: "sh",
		Args: []string{"-c", "stat -c %U /usr/local/bin/claude /usr/local/bin/agcluster-agent; test -w /usr/local/bin/claude || echo read-only"}})
	require.NoError(t, err)
	assert.Equal(t, "root\nroot\nread-only\n", res.Stdout, "the agent's user cannot change the binaries")

	t.Run("a second gateway reuses it", func(t *testing.T) {
		logger, logs := observed(t)
		create(t, newProvider(t, e.options(), logger), providertest.NewSpec())
		assert.Equal(t, 1, e.emu.Calls()[vercelemu.RouteSnapshot], "no new snapshot")
		assert.Equal(t, 1, e.emu.Calls()[vercelemu.RouteWrite], "no new upload")
		found := logs.FilterMessage("vercel agent snapshot found").All()
		require.Len(t, found, 1)
		assert.Equal(t, snapID, found[0].ContextMap()["snapshot_id"])
	})

	t.Run("a provider given the snapshot uses it", func(t *testing.T) {
		opts := e.options()
		opts.AgentBinary, opts.ClaudeBinary, opts.Snapshot = "", "", snapID
		inst := create(t, newProvider(t, opts, nil), providertest.NewSpec())
		assert.Equal(t, "ready", health(t, inst))
		assert.Equal(t, 1, e.emu.Calls()[vercelemu.RouteSnapshot])
	})

	t.Run("a snapshot gone is prepared again", func(t *testing.T) {
		_, err := api.DeleteSnapshot(providertest.Context(t, time.Minute), snapID)
		require.NoError(t, err)
		create(t, p, providertest.NewSpec())
		assert.Equal(t, 2, e.emu.Calls()[vercelemu.RouteSnapshot], "a new snapshot")
		assert.Len(t, e.emu.Snapshots(), 1)
		assert.NotEqual(t, []string{snapID}, e.emu.Snapshots())
	})
}

// health is the agent's /health status.
func health(t *testing.T, inst *providers.Instance) string {
	t.Helper()
	h, _, err := inst.Client().Health(providertest.Context(t, time.Minute))
	require.NoError(t, err)
	return h.Status
}

// TestAPIErrors: a refused token, an unknown project and a snapshot that
// does not exist are clear errors wrapping the contract's sentinels,
// without the token in them; so is an agent binary that cannot be read.
func TestAPIErrors(t *testing.T) {
	e := startEmulator(t, nil)
	for _, tc := range []struct {
		name   string
		change func(o *vercel.Options)
		is     error
		want   string
	}{
		{"bad token", func(o *vercel.Options) { o.Token = "wrong-token-secret" }, providers.ErrUnavailable, "refused the token"},
		{"unknown project", func(o *vercel.Options) { o.ProjectID = "prj_missing" }, providers.ErrUnavailable, `Vercel project "prj_missing" not found`},
		{"foreign team", func(o *vercel.Options) { o.TeamID = "team_other" }, providers.ErrUnavailable, "refused the token"},
		{"missing snapshot", func(o *vercel.Options) { o.Snapshot, o.AgentBinary, o.ClaudeBinary = "snap_missing", "", "" },
			providers.ErrImageMissing, "the agent snapshot is gone"},
		{"unreadable agent binary", func(o *vercel.Options) { o.AgentBinary = "/nonexistent/agcluster-agent" },
			providers.ErrImageMissing, "/nonexistent/agcluster-agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.options()
			tc.change(&opts)
			p := newProvider(t, opts, nil)
			ctx := providertest.Context(t, 2*time.Minute)
			inst, err := p.Create(ctx, providertest.NewSpec())
			assert.Nil(t, inst)
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "wrong-token-secret")
			if tc.is == providers.ErrUnavailable {
				assert.ErrorIs(t, p.Ping(ctx), providers.ErrUnavailable, "Ping")
			}
		})
	}
	assert.Empty(t, e.emu.Sandboxes(), "nothing was left")
}

// TestRateLimitsAbsorbed: creates beyond the vCPU allocation rate get
// 429s from the emulator, which the provider waits out.
func TestRateLimitsAbsorbed(t *testing.T) {
	e := startEmulator(t, func(o *vercelemu.Options) { o.RateLimits = vercelemu.RateLimits{VCPUsPerMinute: 120, Burst: 2} })
	p := newProvider(t, e.options(), nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { create(t, p, providertest.NewSpec()) })
	}
	wg.Wait()
	limited := 0
	for _, r := range e.emu.Requests() {
		if r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	assert.Positive(t, limited, "the emulator rate-limited some creates")
}

// TestTimeLimit: Vercel's time limit, for real, with a 20 s timeout (the
// keeper extends within a quarter of it: 5 s of margin under load). A
// sandbox whose agent is busy when the timeout nears is extended (the
// turn outlives the first timeout), and once more for the turn it
// finished; left idle for a whole timeout, Vercel stops it, which is
// reported as expired (the conversation went to sleep), not as a death;
// woken, it goes on with its files and context.
func TestTimeLimit(t *testing.T) {
	e := startEmulator(t, nil)
	opts := e.options()
	opts.Timeout = caddy.Duration(20 * time.Second)
	p := newProvider(t, opts, nil)
	ctx := providertest.Context(t, 5*time.Minute)
	events, errs := p.Events(ctx)
	inst := create(t, p, providertest.NewSpec())
	require.NoError(t, e.mock.SetScript(ctx, anthropictest.Script{
		Steps: []anthropictest.Step{{Match: anthropictest.Match{LastUserTextContains: "slowly"},
			Response: anthropictest.Response{Text: "Done, slowly.", FirstByteDelayMS: 30_000}}},
		Default: &anthropictest.Response{Text: "Noted."},
	}))
	first := time.Now()
	expires := p.ExpiresAt(inst)
	require.False(t, expires.IsZero())
	assert.WithinDuration(t, first.Add(20*time.Second), expires, 20*time.Second)
	assert.Equal(t, "Done, slowly.", turn(t, inst, "Remember the word kumquat, then answer slowly."))
	assert.True(t, time.Now().After(expires), "the turn outlived the first timeout")
	assert.Equal(t, "running", e.emu.Status(inst.ID), "the busy sandbox was extended")
	assert.True(t, p.ExpiresAt(inst).After(expires), "its expiry moved")
	extended := 0
	for _, r := range e.emu.Requests() {
		if r.Route == vercelemu.RouteExtend && r.Status == http.StatusOK {
			extended++
		}
	}
	assert.Positive(t, extended)

	var got providers.Event
	for got.InstanceID != inst.ID {
		select {
		case got = <-events:
		case err := <-errs:
			t.Fatalf("the event stream failed: %v", err)
		case <-ctx.Done():
			t.Fatal("no event for the idle sandbox")
		}
	}
	assert.Equal(t, providers.ReasonExpired, got.Reason, "Vercel's stop is an expiry, not a death")
	assert.Equal(t, inst.SessionID, got.SessionID)
	// The event comes once the sandbox no longer runs; "stopping" may
	// still precede "stopped".
	testenv.Eventually(t, time.Minute, func() bool { return e.emu.Status(inst.ID) == "stopped" }, "the expired sandbox did not stop")

	woken, err := p.Wake(ctx, inst.ID)
	require.NoError(t, err)
	assert.Equal(t, "Noted.", turn(t, woken, "Which word? marker-after-expiry"))
	reqs, err := e.mock.Bodies(ctx)
	require.NoError(t, err)
	last := reqs[len(reqs)-1]
	assert.Contains(t, last, "marker-after-expiry")
	assert.Contains(t, last, "kumquat", "the woken agent resumed its CLI session")
}
