package docker_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/docker"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
)

// runLabel marks everything this test process creates, so TestMain can
// prove nothing is left behind (and tests sharing the engine are ignored).
const runLabel = "agcluster.test.run"

var runID = testenv.RandomHex(6)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if !testing.Short() {
		if leftovers := sweep(); leftovers != "" {
			fmt.Fprintf(os.Stderr, "FAIL: the tests left managed objects behind (now removed): %s\n", leftovers)
			code = 1
		}
	}
	os.Exit(code)
}

// sweep removes and reports containers and volumes of this run that are
// still there after every test's cleanup.
func sweep() string {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return ""
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		return "" // no engine: the integration tests failed already
	}
	f := filters.NewArgs(filters.Arg("label", docker.LabelManaged+"=true"), filters.Arg("label", runLabel+"="+runID))
	var left []string
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return "list containers: " + err.Error()
	}
	for _, c := range cs {
		left = append(left, "container "+c.ID[:12])
		_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return "list volumes: " + err.Error()
	}
	for _, v := range vs.Volumes {
		left = append(left, "volume "+v.Name)
		_ = cli.VolumeRemove(ctx, v.Name, true)
	}
	return strings.Join(left, ", ")
}

// engine returns a client for the local engine and requires the agent
// image; it is the first call of every integration test.
func engine(t testing.TB) *client.Client {
	t.Helper()
	testenv.Integration(t)
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.AgentImage())
	return cli
}

// baseOptions are options every test provider starts from.
func baseOptions() docker.Options {
	return docker.Options{
		Image:       testenv.AgentImage(),
		ExtraLabels: map[string]string{runLabel: runID},
	}
}

// withMock attaches agents to a fresh test network running the mock API,
// as a deployment would point them at the real one.
func withMock(t testing.TB, cli *client.Client, opts docker.Options) docker.Options {
	t.Helper()
	opts, _ = withMockRemote(t, cli, opts)
	return opts
}

// withMockRemote is withMock also returning the mock's control client.
func withMockRemote(t testing.TB, cli *client.Client, opts docker.Options) (docker.Options, *anthropictest.Remote) {
	t.Helper()
	netName := testenv.TestNetwork(t, cli)
	mock := testenv.StartMockContainer(t, cli, netName)
	opts.Network = netName
	opts.Env = map[string]string{"ANTHROPIC_BASE_URL": "http://" + testenv.MockAlias + ":8080"}
	return opts, mock
}

func newProvider(t testing.TB, opts docker.Options) *docker.Provider {
	return providertest.NewProvider(t, docker.New, opts, nil)
}

// create makes an instance destroyed when the test ends.
func create(t testing.TB, p *docker.Provider, spec providers.Spec) *providers.Instance {
	return providertest.CreateWithin(t, p, spec, 2*time.Minute)
}

// assertNothingLeft checks that no container or volume of the session exists.
func assertNothingLeft(t testing.TB, cli *client.Client, sessionID string) {
	t.Helper()
	ctx := providertest.Context(t, 30*time.Second)
	f := filters.NewArgs(filters.Arg("label", docker.LabelSession+"="+sessionID), filters.Arg("label", runLabel+"="+runID))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	require.NoError(t, err)
	assert.Empty(t, cs, "containers of session %s", sessionID)
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	require.NoError(t, err)
	assert.Empty(t, vs.Volumes, "volumes of session %s", sessionID)
}

// TestConformance runs the shared suite with every hook: a reopened
// provider, a second provider name on the same engine, kills behind the
// provider's back, what the engine stores, and the mock model's requests.
func TestConformance(t *testing.T) {
	cli := engine(t)
	opts, mock := withMockRemote(t, cli, baseOptions())
	second := opts
	second.Name = "second"
	providertest.Run(t, newProvider(t, opts), providertest.Options{
		NewSpec:       providertest.NewSpec,
		Reopen:        func(t *testing.T) providers.Provider { return newProvider(t, opts) },
		Other:         newProvider(t, second),
		Kill:          func(ctx context.Context, id string) error { return cli.ContainerKill(ctx, id, "KILL") },
		Stored:        func(ctx context.Context, id string) (string, error) { return stored(ctx, cli, id) },
		ModelRequests: mock.Bodies,
	})
}

// stored is everything the engine keeps about a container: its inspect
// document (labels, environment, configuration), its volumes' and the
// files of its state volume.
func stored(ctx context.Context, cli *client.Client, id string) (string, error) {
	var out strings.Builder
	info, raw, err := cli.ContainerInspectWithRaw(ctx, id, false)
	if err != nil {
		return "", err
	}
	out.Write(raw)
	for _, m := range info.Mounts {
		if m.Type != mount.TypeVolume {
			continue
		}
		_, raw, err := cli.VolumeInspectWithRaw(ctx, m.Name)
		if err != nil {
			return "", err
		}
		out.Write(raw)
	}
	rc, _, err := cli.CopyFromContainer(ctx, id, "/state")
	if err != nil {
		return "", fmt.Errorf("copy /state: %w", err)
	}
	defer rc.Close()
	if _, err := io.Copy(&out, rc); err != nil {
		return "", err
	}
	return out.String(), nil
}

func TestHardening(t *testing.T) {
	cli := engine(t)
	opts := withMock(t, cli, baseOptions())
	p := newProvider(t, opts)

	for _, tc := range []struct {
		name   string
		limits providers.Limits
		want   providers.Limits
	}{
		{"default limits", providers.Limits{}, providers.Limits{MemoryBytes: 1 << 30, NanoCPUs: 1e9, Pids: 256}},
		{"spec limits", providers.Limits{MemoryBytes: 512 << 20, NanoCPUs: 5e8, Pids: 128}, providers.Limits{MemoryBytes: 512 << 20, NanoCPUs: 5e8, Pids: 128}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := providertest.NewSpec()
			spec.Limits = tc.limits
			inst := create(t, p, spec)
			ctx := providertest.Context(t, time.Minute)
			info, err := cli.ContainerInspect(ctx, inst.ID)
			require.NoError(t, err)
			hc, cfg := info.HostConfig, info.Config

			assert.True(t, hc.ReadonlyRootfs, "read-only root")
			assert.Equal(t, []string{"ALL"}, []string(hc.CapDrop))
			assert.Empty(t, hc.CapAdd)
			assert.Contains(t, hc.SecurityOpt, "no-new-privileges:true")
			assert.False(t, hc.Privileged)
			assert.Nil(t, hc.Init, "the image's tini is the init")
			assert.Equal(t, opts.Network, string(hc.NetworkMode), "not the host network")
			assert.Contains(t, []container.RestartPolicyMode{"", container.RestartPolicyDisabled}, hc.RestartPolicy.Name)
			assert.Equal(t, "agent", cfg.User, "the image's non-root user")
			assert.Equal(t, map[string]string{
				"/tmp":        "rw,nosuid,nodev,size=256m",
				"/home/agent": "rw,nosuid,nodev,size=256m,uid=1000,gid=1000,mode=0700",
			}, hc.Tmpfs)
			assert.Equal(t, tc.want.MemoryBytes, hc.Memory)
			assert.Equal(t, tc.want.NanoCPUs, hc.NanoCPUs)
			require.NotNil(t, hc.PidsLimit)
			assert.Equal(t, tc.want.Pids, *hc.PidsLimit)

			// Port: published on loopback only, and the URL points there.
			require.NotEmpty(t, info.NetworkSettings.Ports["8080/tcp"])
			for _, b := range append(hc.PortBindings["8080/tcp"], info.NetworkSettings.Ports["8080/tcp"]...) {
				assert.Equal(t, "127.0.0.1", b.HostIP, "port bound on loopback only")
			}
			u, err := url.Parse(inst.URL)
			require.NoError(t, err)
			assert.Equal(t, "127.0.0.1", u.Hostname())

			// Labels: all of them, none holding the token.
			vol, stateVol := cfg.Labels[docker.LabelVolume], cfg.Labels[docker.LabelStateVolume]
			assert.True(t, strings.HasPrefix(vol, "agcluster-ws-"), vol)
			assert.True(t, strings.HasPrefix(stateVol, "agcluster-state-"), stateVol)
			for k, v := range map[string]string{
				docker.LabelManaged: "true", docker.LabelProvider: "docker", docker.LabelSession: spec.SessionID,
				docker.LabelOwner: spec.Owner, docker.LabelConfig: spec.ConfigID, docker.LabelConversation: spec.Conversation, runLabel: runID,
			} {
				assert.Equal(t, v, cfg.Labels[k], "label %s", k)
			}
			for k, v := range cfg.Labels {
				assert.NotContains(t, k+"="+v, inst.Token, "label %s holds the token", k)
			}

			// Environment: the token and config, never a key.
			assert.Contains(t, cfg.Env, "AGENT_TOKEN="+inst.Token)
			assert.Contains(t, cfg.Env, `AGENT_CONFIG={"id":"default","allowed_tools":["Read"]}`)
			assert.Contains(t, cfg.Env, "AGENT_STATE_DIR=/state")
			assert.Contains(t, cfg.Env, "ANTHROPIC_BASE_URL=http://mock-anthropic:8080")
			for _, kv := range cfg.Env {
				assert.False(t, strings.HasPrefix(kv, "ANTHROPIC_API_KEY=") || strings.HasPrefix(kv, "ANTHROPIC_AUTH_TOKEN="), kv)
			}

			// Mounts: the workspace and state volumes, and no host path
			// (no Docker socket).
			assert.Empty(t, hc.Binds)
			mounts := map[string]container.MountPoint{}
			for _, m := range info.Mounts {
				assert.NotEqual(t, mount.TypeBind, m.Type, "bind mount of %s", m.Source)
				mounts[m.Destination] = m
			}
			assert.Len(t, mounts, 2, "mounts: %v", info.Mounts)
			for dest, name := range map[string]string{"/workspace": vol, "/state": stateVol} {
				m, ok := mounts[dest]
				require.True(t, ok, "%s mount", dest)
				assert.Equal(t, name, m.Name, dest)
				assert.True(t, m.RW, dest)
				v, err := cli.VolumeInspect(ctx, name)
				require.NoError(t, err)
				assert.Equal(t, "true", v.Labels[docker.LabelManaged])
				assert.Equal(t, spec.SessionID, v.Labels[docker.LabelSession])
				assert.Equal(t, vol, v.Labels[docker.LabelVolume])
				assert.Equal(t, stateVol, v.Labels[docker.LabelStateVolume])
			}

			// The non-root agent can write its fresh workspace volume.
			assert.Equal(t, http.StatusCreated, put(t, inst, "/files/probe.txt", "hello"))

			require.NoError(t, p.Destroy(ctx, inst.ID))
			_, err = cli.ContainerInspect(ctx, inst.ID)
			assert.True(t, cerrdefs.IsNotFound(err), "container gone: %v", err)
			for _, name := range []string{vol, stateVol} {
				_, err = cli.VolumeInspect(ctx, name)
				assert.True(t, cerrdefs.IsNotFound(err), "volume %s gone: %v", name, err)
			}
		})
	}
}

func put(t testing.TB, inst *providers.Instance, path, body string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(providertest.Context(t, 30*time.Second), http.MethodPut, inst.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+inst.Token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestReachByContainerIP(t *testing.T) {
	cli := engine(t)
	opts := baseOptions()
	opts.Network = testenv.TestNetwork(t, cli)
	opts.ReachByContainerIP = true
	p := newProvider(t, opts)
	inst := create(t, p, providertest.NewSpec())

	info, err := cli.ContainerInspect(providertest.Context(t, time.Minute), inst.ID)
	require.NoError(t, err)
	ip := info.NetworkSettings.Networks[opts.Network].IPAddress
	assert.Equal(t, "http://"+net.JoinHostPort(ip, "8080"), inst.URL)
	assert.Empty(t, info.HostConfig.PortBindings, "nothing published")

	list, err := p.List(providertest.Context(t, time.Minute))
	require.NoError(t, err)
	i := slices.IndexFunc(list, func(i *providers.Instance) bool { return i.ID == inst.ID })
	require.GreaterOrEqual(t, i, 0)
	assert.Equal(t, inst.URL, list[i].URL)
}

func TestCreateRefusesAPIKeys(t *testing.T) {
	cli := engine(t)
	p := newProvider(t, baseOptions())
	for _, name := range []string{"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"} {
		t.Run(name, func(t *testing.T) {
			spec := providertest.NewSpec()
			spec.Env = map[string]string{name: "sk-ant-secret", "OTHER": "x"}
			inst, err := p.Create(providertest.Context(t, time.Minute), spec)
			require.Error(t, err)
			assert.Nil(t, inst)
			assert.Contains(t, err.Error(), name+" is refused")
			assert.NotContains(t, err.Error(), "sk-ant-secret")
			assertNothingLeft(t, cli, spec.SessionID)
		})
	}
	t.Run("in options", func(t *testing.T) {
		opts := baseOptions()
		opts.Env = map[string]string{"ANTHROPIC_API_KEY": "sk-ant-secret"}
		_, err := docker.New(opts, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "ANTHROPIC_API_KEY is refused")
	})
}

func TestImageMissing(t *testing.T) {
	cli := engine(t)
	image := "agcluster/missing-" + testenv.RandomHex(4) + ":latest"
	for _, tc := range []struct {
		name string
		opts func(*docker.Options)
		spec func(*providers.Spec)
	}{
		{"options image", func(o *docker.Options) { o.Image = image }, func(*providers.Spec) {}},
		{"spec image", func(*docker.Options) {}, func(s *providers.Spec) { s.Image = image }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := baseOptions()
			tc.opts(&opts)
			p := newProvider(t, opts)
			spec := providertest.NewSpec()
			tc.spec(&spec)
			inst, err := p.Create(providertest.Context(t, time.Minute), spec)
			require.ErrorIs(t, err, providers.ErrImageMissing)
			assert.Nil(t, inst)
			assert.Contains(t, err.Error(), fmt.Sprintf("image %q not found; build it with make image", image))
			assertNothingLeft(t, cli, spec.SessionID)
		})
	}
}

func TestEngineUnreachable(t *testing.T) {
	testenv.Integration(t)
	for _, host := range []string{"unix:///nonexistent.sock", "tcp://127.0.0.1:1"} {
		t.Run(host, func(t *testing.T) {
			opts := baseOptions()
			opts.Host = host
			p := newProvider(t, opts)
			ctx := providertest.Context(t, 20*time.Second)
			start := time.Now()

			assert.ErrorIs(t, p.Ping(ctx), providers.ErrUnavailable)
			inst, err := p.Create(ctx, providertest.NewSpec())
			assert.ErrorIs(t, err, providers.ErrUnavailable)
			assert.Nil(t, inst)
			assert.Contains(t, err.Error(), "docker: engine unreachable at "+host)
			_, err = p.List(ctx)
			assert.ErrorIs(t, err, providers.ErrUnavailable)
			assert.ErrorIs(t, p.Destroy(ctx, "abc"), providers.ErrUnavailable)
			_, err = p.Sleep(ctx, &providers.Instance{ID: "abc"})
			assert.ErrorIs(t, err, providers.ErrUnavailable)
			_, err = p.Wake(ctx, "abc")
			assert.ErrorIs(t, err, providers.ErrUnavailable)
			events, errs := p.Events(ctx)
			select {
			case err := <-errs:
				assert.ErrorIs(t, err, providers.ErrUnavailable)
			case ev := <-events:
				t.Fatalf("event from an unreachable engine: %+v", ev)
			case <-ctx.Done():
				t.Fatal("no error from Events")
			}
			assert.Less(t, time.Since(start), 5*time.Second, "failures are quick")
		})
	}
}

func TestNotReady(t *testing.T) {
	cli := engine(t)
	testenv.RequireImage(t, cli, testenv.MockImage())

	t.Run("never healthy", func(t *testing.T) {
		// The mock API listens on 8080 but has no agent /health.
		opts := baseOptions()
		opts.Image = testenv.MockImage()
		opts.ReadyTimeout = caddy.Duration(3 * time.Second)
		p := newProvider(t, opts)
		spec := providertest.NewSpec()
		start := time.Now()
		inst, err := p.Create(providertest.Context(t, time.Minute), spec)
		took := time.Since(start)
		t.Logf("error: %v", err)
		require.ErrorIs(t, err, providers.ErrNotReady)
		assert.Nil(t, inst)
		assert.Contains(t, err.Error(), "not ready after 3s")
		assert.Contains(t, err.Error(), "last 30 log lines")
		assert.GreaterOrEqual(t, took, 3*time.Second)
		assert.Less(t, took, 20*time.Second)
		assertNothingLeft(t, cli, spec.SessionID)
	})

	t.Run("exits at start", func(t *testing.T) {
		// A bad setting makes the agent exit: Create reports it at once,
		// with the agent's own explanation, instead of waiting out the timeout.
		p := newProvider(t, baseOptions())
		spec := providertest.NewSpec()
		spec.Env = map[string]string{"AGENT_TURN_TIMEOUT": "bogus"}
		start := time.Now()
		inst, err := p.Create(providertest.Context(t, 2*time.Minute), spec)
		t.Logf("error: %v", err)
		require.ErrorIs(t, err, providers.ErrNotReady)
		assert.Nil(t, inst)
		assert.Contains(t, err.Error(), "exited with code")
		assert.Contains(t, err.Error(), `AGENT_TURN_TIMEOUT "bogus"`, "the log lines are quoted")
		assert.Less(t, time.Since(start), 30*time.Second, "well before the 60s ready timeout")
		assertNothingLeft(t, cli, spec.SessionID)
	})
}

func TestCreateCancelledHalfWay(t *testing.T) {
	cli := engine(t)
	testenv.RequireImage(t, cli, testenv.MockImage())
	p := newProvider(t, baseOptions())
	// An image that answers on 8080 but never becomes ready: a deadline
	// certain to fall in the readiness phase, however fast the agent is.
	neverReadyOpts := baseOptions()
	neverReadyOpts.Image = testenv.MockImage()
	neverReady := newProvider(t, neverReadyOpts)
	// Deadlines falling in the create, start and readiness phases.
	for _, tc := range []struct {
		after time.Duration
		p     *docker.Provider
	}{{5 * time.Millisecond, p}, {30 * time.Millisecond, p}, {300 * time.Millisecond, p}, {time.Second, neverReady}} {
		after, p := tc.after, tc.p
		t.Run(after.String(), func(t *testing.T) {
			spec := providertest.NewSpec()
			ctx, cancel := context.WithTimeout(context.Background(), after)
			defer cancel()
			inst, err := p.Create(ctx, spec)
			if inst != nil {
				t.Cleanup(func() { _ = p.Destroy(context.Background(), inst.ID) })
			}
			t.Logf("error: %v", err)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Nil(t, inst)
			assertNothingLeft(t, cli, spec.SessionID)
		})
	}
}

// TestEventsAndStopped: a killed agent's death is reported with its exit
// code, and it is listed as stopped until destroyed.
func TestEventsAndStopped(t *testing.T) {
	cli := engine(t)
	p := newProvider(t, baseOptions())
	ctx := providertest.Context(t, 2*time.Minute)
	events, errs := p.Events(ctx)

	inst := create(t, p, providertest.NewSpec())
	require.NoError(t, cli.ContainerKill(ctx, inst.ID, "KILL"))

	timeout := time.After(30 * time.Second)
	for got := false; !got; {
		select {
		case ev := <-events:
			if ev.InstanceID != inst.ID {
				continue
			}
			got = true
			assert.Equal(t, providers.ReasonDied, ev.Reason)
			assert.Equal(t, inst.SessionID, ev.SessionID)
			assert.Equal(t, 137, ev.ExitCode)
			assert.False(t, ev.Time.IsZero())
		case err := <-errs:
			t.Fatalf("event stream: %v", err)
		case <-timeout:
			t.Fatal("no die event within 30s")
		}
	}

	list, err := p.List(ctx)
	require.NoError(t, err)
	i := slices.IndexFunc(list, func(i *providers.Instance) bool { return i.ID == inst.ID })
	require.GreaterOrEqual(t, i, 0, "a dead agent is listed")
	assert.Equal(t, providers.StateStopped, list[i].State)
	assert.Empty(t, list[i].URL, "a stopped agent has no URL")
	assert.Equal(t, inst.Token, list[i].Token)

	require.NoError(t, p.Destroy(ctx, inst.ID))
	list, err = p.List(ctx)
	require.NoError(t, err)
	assert.False(t, slices.ContainsFunc(list, func(i *providers.Instance) bool { return i.ID == inst.ID }))
	assertNothingLeft(t, cli, inst.SessionID)
}

func TestListAfterRestart(t *testing.T) {
	engine(t)
	opts := baseOptions()
	before := newProvider(t, opts)
	inst := create(t, before, providertest.NewSpec())
	require.NoError(t, before.Close())

	after := newProvider(t, opts) // a new control plane process
	list, err := after.List(providertest.Context(t, time.Minute))
	require.NoError(t, err)
	i := slices.IndexFunc(list, func(i *providers.Instance) bool { return i.ID == inst.ID })
	require.GreaterOrEqual(t, i, 0, "the agent is found again")
	got := list[i]
	assert.Equal(t, inst.URL, got.URL)
	assert.Equal(t, inst.Token, got.Token)
	assert.Equal(t, inst.SessionID, got.SessionID)
	assert.Equal(t, inst.Owner, got.Owner)
	assert.Equal(t, inst.ConfigID, got.ConfigID)
	assert.WithinDuration(t, inst.CreatedAt, got.CreatedAt, time.Second)
	_, err = (&agentclient.Client{BaseURL: got.URL, Token: got.Token}).Stats(providertest.Context(t, 30*time.Second))
	assert.NoError(t, err, "the recovered URL and token work")

	other := opts
	other.ExtraLabels = map[string]string{runLabel: "another-run"}
	list, err = newProvider(t, other).List(providertest.Context(t, time.Minute))
	require.NoError(t, err)
	assert.False(t, slices.ContainsFunc(list, func(i *providers.Instance) bool { return i.ID == inst.ID }),
		"a provider with other extra labels does not see it")

	require.NoError(t, after.Destroy(providertest.Context(t, time.Minute), inst.ID))
}

func TestDestroyRefusesForeignContainers(t *testing.T) {
	cli := engine(t)
	testenv.RequireImage(t, cli, testenv.MockImage())
	p := newProvider(t, baseOptions())
	id := testenv.RunContainer(t, cli, "agcluster-test-foreign-"+testenv.RandomHex(4),
		&container.Config{Image: testenv.MockImage(), Labels: map[string]string{"agcluster.test": "true"}},
		&container.HostConfig{}, nil)
	err := p.Destroy(providertest.Context(t, time.Minute), id)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `not an agent container of provider "docker"`)
	_, err = cli.ContainerInspect(providertest.Context(t, time.Minute), id)
	assert.NoError(t, err, "the foreign container is untouched")
}

// TestAgentsCannotReachEachOther: on the default isolated network, one
// agent cannot open another agent's port, while each still answers the
// control plane on its published 127.0.0.1 port.
func TestAgentsCannotReachEachOther(t *testing.T) {
	cli := engine(t)
	p := newProvider(t, baseOptions())
	ctx := providertest.Context(t, 2*time.Minute)
	a, err := p.Create(ctx, providertest.NewSpec())
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Destroy(context.Background(), a.ID) })
	b, err := p.Create(ctx, providertest.NewSpec())
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Destroy(context.Background(), b.ID) })

	info, err := cli.ContainerInspect(ctx, b.ID)
	require.NoError(t, err)
	ep := info.NetworkSettings.Networks[docker.DefaultIsolatedNetwork]
	require.NotNil(t, ep, "agents join the isolated network")
	nw, err := cli.NetworkInspect(ctx, docker.DefaultIsolatedNetwork, network.InspectOptions{})
	require.NoError(t, err)
	assert.Equal(t, "false", nw.Options["com.docker.network.bridge.enable_icc"])

	probe := func(target string) (int, string) {
		exec, err := cli.ContainerExecCreate(ctx, a.ID, container.ExecOptions{
			Cmd:          []string{"bash", "-c", "timeout 3 bash -c 'echo > /dev/tcp/" + target + "/8080' && echo open || echo closed"},
			AttachStdout: true, AttachStderr: true,
		})
		require.NoError(t, err)
		att, err := cli.ContainerExecAttach(ctx, exec.ID, container.ExecAttachOptions{})
		require.NoError(t, err)
		defer att.Close()
		var out strings.Builder
		_, _ = stdcopy.StdCopy(&out, &out, att.Reader)
		ins, err := cli.ContainerExecInspect(ctx, exec.ID)
		require.NoError(t, err)
		return ins.ExitCode, out.String()
	}
	_, out := probe(ep.IPAddress)
	assert.Contains(t, out, "closed", "agent A must not reach agent B at %s: %s", ep.IPAddress, out)
	_, out = probe(ep.Gateway)
	assert.Contains(t, out, "closed", "nor the host's side of the bridge, where nothing is published: %s", out)

	for _, inst := range []*providers.Instance{a, b} {
		_, status, err := inst.Client().Health(ctx)
		require.NoError(t, err)
		assert.Equal(t, 200, status, "the control plane still reaches each agent")
	}
}
