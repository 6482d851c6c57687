package flyemu_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/flyemu"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

const (
	app   = "agents"
	token = "fly-test-token"
)

// env is one emulator on a test network with the Anthropic mock.
type env struct {
	cli  *client.Client
	emu  *flyemu.Emulator
	fc   *flaps.Client
	mock *anthropictest.Remote
}

// setup starts an emulator (rate limits as given) on its own IPv6
// network, the Anthropic mock on that network, and a flaps client pointed
// at the emulator.
func setup(t *testing.T, limits flyemu.RateLimits) *env {
	t.Helper()
	return setupOn(t, "", limits)
}

// setupOn is setup on the Docker network netName ("" = the emulator's
// own).
func setupOn(t *testing.T, netName string, limits flyemu.RateLimits) *env {
	t.Helper()
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.AgentImage())
	emu, err := flyemu.New(ctxT(t, time.Minute), flyemu.Options{
		Token: token, Apps: []string{app}, Network: netName, Docker: cli,
		RateLimits: limits, Logger: zaptest.NewLogger(t),
	})
	require.NoError(t, err)
	t.Cleanup(func() { // after the mock's cleanup: it is on the network
		require.NoError(t, emu.Close())
		assertNothingLeft(t, cli, emu.ID())
	})
	mock := testenv.StartMockContainer(t, cli, emu.Network())
	return &env{cli: cli, emu: emu, fc: flapsClient(t, emu, token), mock: mock}
}

// flapsClient is fly-go's own client for the emulator (flaps reads its
// base URL from FLY_FLAPS_BASE_URL only).
func flapsClient(t *testing.T, emu *flyemu.Emulator, tok string) *flaps.Client {
	t.Helper()
	t.Setenv("FLY_FLAPS_BASE_URL", emu.APIURL())
	fc, err := flaps.NewWithOptions(context.Background(), flaps.NewClientOpts{Tokens: tokens.Parse(tok)})
	require.NoError(t, err)
	return fc
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func assertNothingLeft(t *testing.T, cli *client.Client, emuID string) {
	t.Helper()
	f := filters.NewArgs(filters.Arg("label", flyemu.LabelEmulator+"="+emuID))
	left, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: f})
	require.NoError(t, err)
	assert.Empty(t, left, "Close removes every container")
	nets, err := cli.NetworkList(context.Background(), network.ListOptions{Filters: f})
	require.NoError(t, err)
	assert.Empty(t, nets, "Close removes its network")
}

// agentConfig is a machine config running the agent image the way the
// fly provider does: a service on 8080 with HTTP handlers, restart "no",
// a check on /health, metadata to find it by.
func agentConfig(agentToken string, metadata map[string]string) *fly.MachineConfig {
	port := 8080
	checkType, path := "http", "/health"
	return &fly.MachineConfig{
		Image: testenv.AgentImage(),
		Env: map[string]string{
			agent.EnvToken:       agentToken,
			"ANTHROPIC_BASE_URL": "http://" + testenv.MockAlias + ":8080",
		},
		Guest:    &fly.MachineGuest{CPUKind: "shared", CPUs: 1, MemoryMB: 1024},
		Metadata: metadata,
		Services: []fly.MachineService{{
			Protocol: "tcp", InternalPort: port,
			Ports: []fly.MachinePort{{Port: &[]int{443}[0], Handlers: []string{"tls", "http"}}},
		}},
		Restart: &fly.MachineRestart{Policy: fly.MachineRestartPolicyNo},
		Checks:  map[string]fly.MachineCheck{"health": {Type: &checkType, Port: &port, HTTPPath: &path}},
	}
}

// launchAgent creates a machine running the agent and waits until it is
// started and its agent ready through the proxy.
func (e *env) launchAgent(t *testing.T, metadata map[string]string) (*fly.Machine, *agentclient.Client) {
	t.Helper()
	agentToken := testenv.RandomHex(16)
	m, err := e.fc.Launch(ctxT(t, time.Minute), app, fly.LaunchMachineInput{Region: "ams", Config: agentConfig(agentToken, metadata)})
	require.NoError(t, err)
	assert.Equal(t, "created", m.State)
	require.NoError(t, e.fc.Wait(ctxT(t, time.Minute), app, m.ID, flaps.WithWaitStates("started"), flaps.WithWaitTimeout(60*time.Second)))
	ac := e.viaProxy(m.ID, agentToken)
	waitReady(t, ac)
	return m, ac
}

// viaProxy is an agent client that reaches machine id through the proxy.
func (e *env) viaProxy(id, agentToken string) *agentclient.Client {
	return &agentclient.Client{BaseURL: e.emu.ProxyURL(), Token: agentToken,
		Header: http.Header{"Fly-Force-Instance-Id": {id}}}
}

func waitReady(t *testing.T, ac *agentclient.Client) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() bool {
		h, status, err := ac.HealthWait(context.Background(), 5*time.Second)
		return err == nil && status == http.StatusOK && h.Status == "ready"
	}, "the agent never became ready")
}

func statusOf(err error) int {
	var fe *flaps.FlapsError
	if errors.As(err, &fe) {
		return fe.ResponseStatusCode
	}
	return 0
}

func TestAuthAndUnknownNames(t *testing.T) {
	testenv.Integration(t)
	e := setup(t, flyemu.RateLimits{Off: true})
	m, err := e.fc.Launch(ctxT(t, time.Minute), app, fly.LaunchMachineInput{SkipLaunch: true, Config: &fly.MachineConfig{Image: testenv.AgentImage()}})
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		call  func() error
		want  int
		wants string
	}{
		{"wrong token", func() error { _, err := flapsClient(t, e.emu, "nope").List(ctxT(t, time.Minute), app, ""); return err }, 401, "unauthorized"},
		{"no token", func() error {
			fc, err := flaps.NewWithOptions(context.Background(), flaps.NewClientOpts{})
			require.NoError(t, err)
			_, err = fc.Get(ctxT(t, time.Minute), app, m.ID)
			return err
		}, 401, "unauthorized"},
		{"unknown app", func() error { _, err := e.fc.List(ctxT(t, time.Minute), "other-app", ""); return err }, 404, "app not found"},
		{"unknown machine", func() error { _, err := e.fc.Get(ctxT(t, time.Minute), app, "0123456789abcd"); return err }, 404, "machine not found"},
		{"machine of another app", func() error {
			return e.fc.Destroy(ctxT(t, time.Minute), "other-app", fly.RemoveMachineInput{ID: m.ID, Kill: true}, "")
		}, 404, "app not found"},
		{"unpullable image", func() error {
			_, err := e.fc.Launch(ctxT(t, time.Minute), app, fly.LaunchMachineInput{Config: &fly.MachineConfig{Image: "agcluster/missing-" + testenv.RandomHex(4) + ":latest"}})
			return err
		}, 422, "could not resolve image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			assert.Equal(t, tc.want, statusOf(err), "%v", err)
			assert.Contains(t, err.Error(), tc.wants)
		})
	}

	t.Run("FlyV1 scheme", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, e.emu.APIURL()+"/v1/apps/"+app+"/machines/"+m.ID, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "FlyV1 "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})
}

// TestMachineLifecycle drives one agent machine through Fly's states with
// flaps: create, started, reached through the proxy and privately, listed
// by metadata, suspended and resumed with its memory, stopped and started
// on a fresh root filesystem, destroyed.
func TestMachineLifecycle(t *testing.T) {
	testenv.Integration(t)
	e := setup(t, flyemu.RateLimits{Off: true}) // TestRateLimits covers them

	meta := map[string]string{"agcluster_session": "s-" + testenv.RandomHex(4), "agcluster_owner": "o1"}
	m, ac := e.launchAgent(t, meta)
	ctx := ctxT(t, 5*time.Minute)

	got, err := e.fc.Get(ctx, app, m.ID)
	require.NoError(t, err)
	assert.Equal(t, "started", got.State)
	assert.Equal(t, "ams", got.Region)
	assert.Equal(t, m.InstanceID, got.InstanceID)
	assert.Equal(t, "agcluster/agent", got.ImageRef.Repository)
	assert.Equal(t, 1024, got.Config.Guest.MemoryMB)
	require.NotEmpty(t, got.PrivateIP)
	require.Len(t, got.Checks, 1)
	assert.Equal(t, fly.Passing, got.Checks[0].Status, got.Checks[0].Output)

	t.Run("private address", func(t *testing.T) {
		assert.True(t, strings.HasPrefix(got.PrivateIP, "fdaa:"), "an IPv6 address like Fly's 6PN: %s", got.PrivateIP)
		private := &agentclient.Client{BaseURL: "http://[" + got.PrivateIP + "]:8080", Token: ac.Token}
		h, status, err := private.Health(ctx)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, status)
		assert.Equal(t, "ready", h.Status)
	})

	t.Run("proxy streams event by event", func(t *testing.T) {
		require.NoError(t, e.mock.SetScript(ctx, anthropictest.Script{Default: &anthropictest.Response{
			Text: "I will never finish this sentence", ChunkChars: 4, HangAfterDeltas: new(2)}}))
		st, err := ac.Query(ctx, "Start talking.", "sk-ant-test-proxy")
		require.NoError(t, err)
		defer st.Close()
		for {
			ev, err := st.Next()
			require.NoError(t, err, "the stalled turn's first deltas arrive before its end")
			if ev.Type == agent.EventTextDelta {
				break
			}
		}
		interrupted, err := ac.Interrupt(ctx)
		require.NoError(t, err)
		assert.True(t, interrupted)
	})

	t.Run("list by metadata", func(t *testing.T) {
		list, err := e.fc.List(ctx, app, "metadata.agcluster_session="+meta["agcluster_session"])
		require.NoError(t, err)
		require.Len(t, list, 1)
		assert.Equal(t, m.ID, list[0].ID)
		assert.Equal(t, meta, list[0].Config.Metadata)
		list, err = e.fc.List(ctx, app, "metadata.agcluster_session="+meta["agcluster_session"]+"&metadata.agcluster_owner=o2")
		require.NoError(t, err)
		assert.Empty(t, list)
	})

	t.Run("suspend keeps memory", func(t *testing.T) {
		_, err := ac.WriteFile(ctx, "notes/kept.txt", []byte("still here"))
		require.NoError(t, err)
		before, err := ac.Stats(ctx)
		require.NoError(t, err)

		require.NoError(t, e.fc.Suspend(ctx, app, m.ID, ""))
		require.NoError(t, e.fc.Wait(ctx, app, m.ID, flaps.WithWaitStates("suspended")))
		assert.Equal(t, http.StatusServiceUnavailable, proxyStatus(t, e, m.ID), "a suspended machine is not served")
		info, err := e.cli.ContainerInspect(ctx, e.emu.ContainerID(m.ID))
		require.NoError(t, err)
		assert.True(t, info.State.Paused)

		res, err := e.fc.Start(ctx, app, m.ID, "")
		require.NoError(t, err)
		assert.Equal(t, "suspended", res.PreviousState)
		require.NoError(t, e.fc.Wait(ctx, app, m.ID, flaps.WithWaitStates("started")))
		after, err := ac.Stats(ctx)
		require.NoError(t, err)
		assert.Equal(t, before.Agent.PID, after.Agent.PID, "the same agent process")
		assert.Greater(t, after.UptimeSeconds, before.UptimeSeconds, "not restarted")
		status, body := readFile(t, ac, "notes/kept.txt")
		assert.Equal(t, http.StatusOK, status)
		assert.Equal(t, "still here", body)
	})

	t.Run("stop and start reset the root filesystem", func(t *testing.T) {
		require.NoError(t, e.fc.Stop(ctx, app, fly.StopMachineInput{ID: m.ID}, ""))
		require.NoError(t, e.fc.Wait(ctx, app, m.ID, flaps.WithWaitStates("stopped")))
		assert.Equal(t, http.StatusServiceUnavailable, proxyStatus(t, e, m.ID))

		res, err := e.fc.Start(ctx, app, m.ID, "")
		require.NoError(t, err)
		assert.Equal(t, "stopped", res.PreviousState)
		_, err = e.fc.Start(ctx, app, m.ID, "")
		assert.Equal(t, http.StatusPreconditionFailed, statusOf(err), "a starting machine refuses another start: %v", err)
		require.NoError(t, e.fc.Wait(ctx, app, m.ID, flaps.WithWaitStates("started")))
		waitReady(t, ac)
		status, _ := readFile(t, ac, "notes/kept.txt")
		assert.Equal(t, http.StatusNotFound, status, "a fresh root filesystem")
	})

	t.Run("destroy", func(t *testing.T) {
		err := e.fc.Destroy(ctx, app, fly.RemoveMachineInput{ID: m.ID}, "")
		assert.Equal(t, http.StatusPreconditionFailed, statusOf(err), "a running machine needs kill: %v", err)
		require.NoError(t, e.fc.Destroy(ctx, app, fly.RemoveMachineInput{ID: m.ID, Kill: true}, ""))
		require.NoError(t, e.fc.Wait(ctx, app, m.ID, flaps.WithWaitStates("destroyed")))
		got, err := e.fc.Get(ctx, app, m.ID)
		require.NoError(t, err)
		assert.Equal(t, "destroyed", got.State)
		err = e.fc.Destroy(ctx, app, fly.RemoveMachineInput{ID: m.ID, Kill: true}, "")
		assert.ErrorIs(t, err, flaps.ErrFlapsNotFound, "a destroyed machine is gone")
		list, err := e.fc.List(ctx, app, "")
		require.NoError(t, err)
		assert.Empty(t, list)
		list, err = e.fc.List(ctx, app, "include_deleted=true")
		require.NoError(t, err)
		assert.Len(t, list, 1)
		assert.Equal(t, http.StatusNotFound, proxyStatus(t, e, m.ID))
		assert.Empty(t, e.emu.ContainerID(m.ID))
	})

	t.Run("calls are counted and logged", func(t *testing.T) {
		calls := e.emu.Calls()
		assert.Equal(t, 1, calls["POST /v1/apps/{app}/machines"])
		assert.Equal(t, 3, calls["POST /v1/apps/{app}/machines/{id}/start"], "two starts and one refused")
		assert.Equal(t, 1, calls["POST /v1/apps/{app}/machines/{id}/suspend"])
		var create flyemu.Request
		for _, r := range e.emu.Requests() {
			if r.Route == "POST /v1/apps/{app}/machines" {
				create = r
			}
		}
		assert.Contains(t, string(create.Body), ac.Token, "bodies are recorded for scanning")
		assert.NotContains(t, string(create.Body), "sk-ant-test-proxy")
	})
}

func proxyStatus(t *testing.T, e *env, id string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.emu.ProxyURL()+"/health", nil)
	require.NoError(t, err)
	req.Header.Set(flyemu.ForceInstanceHeader, id)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// readFile fetches a workspace file through the agent's files API and
// returns its status and content.
func readFile(t *testing.T, ac *agentclient.Client, path string) (int, string) {
	t.Helper()
	resp, err := ac.Forward(context.Background(), http.MethodGet, "/files/"+path, nil, nil, nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestLeases: a leased machine refuses mutations without the lease's
// nonce; flaps acquires, refreshes, finds and releases.
func TestLeases(t *testing.T) {
	testenv.Integration(t)
	e := setup(t, flyemu.RateLimits{Off: true})
	ctx := ctxT(t, time.Minute)
	m, err := e.fc.Launch(ctx, app, fly.LaunchMachineInput{SkipLaunch: true, Config: &fly.MachineConfig{Image: testenv.AgentImage()}})
	require.NoError(t, err)

	ttl := 30
	l, err := e.fc.AcquireLease(ctx, app, m.ID, &ttl)
	require.NoError(t, err)
	require.NotNil(t, l.Data)
	nonce := l.Data.Nonce
	require.NotEmpty(t, nonce)
	assert.InDelta(t, time.Now().Add(30*time.Second).Unix(), l.Data.ExpiresAt, 5)

	found, err := e.fc.FindLease(ctx, app, m.ID)
	require.NoError(t, err)
	assert.Equal(t, nonce, found.Data.Nonce)

	assert.Equal(t, http.StatusConflict, rawStatus(t, e, http.MethodPost, "/"+m.ID+"/lease?ttl=10", ""), "a held lease cannot be acquired again")

	err = e.fc.Destroy(ctx, app, fly.RemoveMachineInput{ID: m.ID, Kill: true}, "")
	assert.Equal(t, http.StatusConflict, statusOf(err), "no nonce: %v", err)
	err = e.fc.Destroy(ctx, app, fly.RemoveMachineInput{ID: m.ID, Kill: true}, "wrong-nonce")
	assert.Equal(t, http.StatusConflict, statusOf(err), "wrong nonce: %v", err)

	ttl = 120
	refreshed, err := e.fc.RefreshLease(ctx, app, m.ID, &ttl, nonce)
	require.NoError(t, err)
	assert.Equal(t, nonce, refreshed.Data.Nonce)
	assert.Greater(t, refreshed.Data.ExpiresAt, l.Data.ExpiresAt)

	require.NoError(t, e.fc.ReleaseLease(ctx, app, m.ID, nonce))
	_, err = e.fc.FindLease(ctx, app, m.ID)
	assert.ErrorIs(t, err, flaps.ErrFlapsNotFound)

	t.Run("a lease taken at create", func(t *testing.T) {
		m2, err := e.fc.Launch(ctx, app, fly.LaunchMachineInput{SkipLaunch: true, LeaseTTL: 60, Config: &fly.MachineConfig{Image: testenv.AgentImage()}})
		require.NoError(t, err)
		require.NotEmpty(t, m2.LeaseNonce)
		err = e.fc.Destroy(ctx, app, fly.RemoveMachineInput{ID: m2.ID}, "")
		assert.Equal(t, http.StatusConflict, statusOf(err))
		require.NoError(t, e.fc.Destroy(ctx, app, fly.RemoveMachineInput{ID: m2.ID}, m2.LeaseNonce))
	})
}

// rawStatus sends a request flaps cannot send as is (flaps retries a
// refused lease for a minute) and returns the status.
func rawStatus(t *testing.T, e *env, method, machinePath, nonce string) int {
	t.Helper()
	req, err := http.NewRequest(method, e.emu.APIURL()+"/v1/apps/"+app+"/machines"+machinePath, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	if nonce != "" {
		req.Header.Set(flaps.NonceHeader, nonce)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// TestRateLimits: Fly's documented limits are on by default; a burst on
// one action of one machine gets 429 with Retry-After, other actions and
// machines are not affected.
func TestRateLimits(t *testing.T) {
	testenv.Integration(t)
	e := setup(t, flyemu.RateLimits{})
	ctx := ctxT(t, time.Minute)
	var ids []string
	for range 2 {
		m, err := e.fc.Launch(ctx, app, fly.LaunchMachineInput{SkipLaunch: true, Config: &fly.MachineConfig{Image: testenv.AgentImage()}})
		require.NoError(t, err)
		ids = append(ids, m.ID)
	}
	var statuses []int
	for range 4 { // burst 3 at 1/s: the fourth within a second is refused
		statuses = append(statuses, statusOf(e.fc.Stop(ctx, app, fly.StopMachineInput{ID: ids[0]}, "")))
	}
	assert.Equal(t, []int{0, 0, 0, http.StatusTooManyRequests}, statuses)
	last := e.emu.Requests()[len(e.emu.Requests())-1]
	assert.Equal(t, http.StatusTooManyRequests, last.Status)

	require.NoError(t, e.fc.Stop(ctx, app, fly.StopMachineInput{ID: ids[1]}, ""), "another machine has its own bucket")
	_, err := e.fc.Get(ctx, app, ids[0])
	require.NoError(t, err, "another action has its own bucket")

	t.Run("Retry-After", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, e.emu.APIURL()+"/v1/apps/"+app+"/machines/"+ids[0]+"/stop", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		require.NoError(t, err)
		assert.GreaterOrEqual(t, secs, 1)
	})

	t.Run("configurable", func(t *testing.T) {
		tight := setup(t, flyemu.RateLimits{Get: flyemu.Limit{PerSecond: 0.01, Burst: 1}})
		m, err := tight.fc.Launch(ctx, app, fly.LaunchMachineInput{SkipLaunch: true, Config: &fly.MachineConfig{Image: testenv.AgentImage()}})
		require.NoError(t, err)
		// flaps retries a GET only on connection resets: the 429 surfaces.
		_, err = tight.fc.Get(ctx, app, m.ID)
		require.NoError(t, err)
		_, err = tight.fc.Get(ctx, app, m.ID)
		assert.Equal(t, http.StatusTooManyRequests, statusOf(err))
	})
}

// TestBehindTheBack: a machine can die or vanish without an API call, and
// the API reports it.
func TestBehindTheBack(t *testing.T) {
	testenv.Integration(t)
	netName := testenv.TestNetwork(t, testenv.Docker(t))
	e := setupOn(t, netName, flyemu.RateLimits{Off: true})
	ctx := ctxT(t, 5*time.Minute)
	m, _ := e.launchAgent(t, nil)

	got, err := e.fc.Get(ctx, app, m.ID)
	require.NoError(t, err)
	ip := net.ParseIP(got.PrivateIP)
	require.NotNil(t, ip, got.PrivateIP)
	assert.NotNil(t, ip.To4(), "an IPv4 address on a network without IPv6")

	require.NoError(t, e.emu.Crash(ctx, m.ID))
	require.NoError(t, e.fc.Wait(ctx, app, m.ID, flaps.WithWaitStates("stopped")))
	got, err = e.fc.Get(ctx, app, m.ID)
	require.NoError(t, err)
	assert.Equal(t, "stopped", got.State, "restart policy no: the machine stays stopped")
	require.NotEmpty(t, got.Events)
	assert.Equal(t, "exit", got.Events[0].Type)
	code, err := got.Events[0].Request.GetExitCode()
	require.NoError(t, err)
	assert.Equal(t, 137, code)

	m2, _ := e.launchAgent(t, nil)
	require.NoError(t, e.emu.DestroyBehindBack(ctx, m2.ID))
	got, err = e.fc.Get(ctx, app, m2.ID)
	require.NoError(t, err)
	assert.Equal(t, "destroyed", got.State)
	assert.Equal(t, http.StatusNotFound, proxyStatus(t, e, m2.ID))
	list, err := e.fc.List(ctx, app, "")
	require.NoError(t, err)
	assert.Equal(t, []string{m.ID}, ids(list))

	err = e.fc.Wait(ctx, app, m.ID, flaps.WithWaitStates("started"), flaps.WithWaitTimeout(time.Second))
	assert.Equal(t, http.StatusRequestTimeout, statusOf(err), "wait times out with 408: %v", err)
}

func ids(ms []*fly.Machine) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.ID)
	}
	slices.Sort(out)
	return out
}
