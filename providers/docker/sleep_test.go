package docker_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/docker"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
)

// TestSleepRebindsPoolAgent: a warm-pool agent bound to a session is
// re-created at sleep with the session's labels and no pool label, the
// same environment (token, config, state dir), host settings and volumes;
// the old container is gone and the new one wakes with the files.
func TestSleepRebindsPoolAgent(t *testing.T) {
	cli := engine(t)
	p := newProvider(t, baseOptions())
	ctx := providertest.Context(t, 2*time.Minute)
	spec := providertest.NewSpec()
	spec.SessionID, spec.Owner, spec.Conversation, spec.Pool = "", "", "", "default@test"
	pooled := create(t, p, spec)
	assert.Equal(t, http.StatusCreated, put(t, pooled, "/files/pooled.txt", "from the pool"))
	before, err := cli.ContainerInspect(ctx, pooled.ID)
	require.NoError(t, err)
	assert.Equal(t, "default@test", before.Config.Labels[docker.LabelPool])

	owner := providertest.NewSpec()
	bound := *pooled
	bound.SessionID, bound.Owner, bound.Conversation = owner.SessionID, owner.Owner, owner.Conversation
	asleep, err := p.Sleep(ctx, &bound)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Destroy(context.Background(), asleep.ID) })
	require.NotEqual(t, pooled.ID, asleep.ID, "a new container")
	assert.Equal(t, providers.StateStopped, asleep.State)
	assert.Equal(t, pooled.Token, asleep.Token, "the same token")
	assert.Empty(t, asleep.Pool, "no longer a pool agent")

	_, err = cli.ContainerInspect(ctx, pooled.ID)
	assert.True(t, cerrdefs.IsNotFound(err), "the pool container is removed: %v", err)
	after, err := cli.ContainerInspect(ctx, asleep.ID)
	require.NoError(t, err)
	assert.False(t, after.State.Running)
	assert.Equal(t, "/agcluster-"+p.Name()+"-"+owner.SessionID, after.Name, "named for its session")

	wantLabels := map[string]string{}
	for k, v := range before.Config.Labels {
		wantLabels[k] = v
	}
	delete(wantLabels, docker.LabelPool)
	wantLabels[docker.LabelSession] = owner.SessionID
	wantLabels[docker.LabelOwner] = owner.Owner
	wantLabels[docker.LabelConversation] = owner.Conversation
	assert.Equal(t, wantLabels, after.Config.Labels)
	assert.Equal(t, before.Config.Env, after.Config.Env, "the same environment")
	assert.Equal(t, before.Config.Image, after.Config.Image)
	assert.Equal(t, before.HostConfig.Mounts, after.HostConfig.Mounts, "the same volumes")
	assert.Equal(t, before.HostConfig.Tmpfs, after.HostConfig.Tmpfs)
	assert.Equal(t, before.HostConfig.CapDrop, after.HostConfig.CapDrop)
	assert.Equal(t, before.HostConfig.ReadonlyRootfs, after.HostConfig.ReadonlyRootfs)
	assert.Equal(t, before.HostConfig.Resources.Memory, after.HostConfig.Resources.Memory)
	assert.Equal(t, before.HostConfig.NetworkMode, after.HostConfig.NetworkMode)
	assert.NotEqual(t, before.Config.Hostname, after.Config.Hostname, "its own hostname")

	woken, err := p.Wake(ctx, asleep.ID)
	require.NoError(t, err)
	assert.Equal(t, owner.SessionID, woken.SessionID)
	_, err = woken.Client().Stats(ctx)
	require.NoError(t, err)
	resp, err := woken.Client().Forward(ctx, http.MethodGet, "/files/pooled.txt", nil, nil, nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the pool agent's file is there")

	require.NoError(t, p.Destroy(ctx, woken.ID))
	for _, v := range []string{before.Config.Labels[docker.LabelVolume], before.Config.Labels[docker.LabelStateVolume]} {
		_, err := cli.VolumeInspect(ctx, v)
		assert.True(t, cerrdefs.IsNotFound(err), "volume %s removed with the re-created container: %v", v, err)
	}
}

// TestSleepIsGraceful: Sleep stops the agent with SIGTERM, which it
// handles (no SIGKILL after the stop timeout), and the stop is reported
// as a sleep, not a death.
func TestSleepIsGraceful(t *testing.T) {
	cli := engine(t)
	p := newProvider(t, baseOptions())
	ctx := providertest.Context(t, 2*time.Minute)
	events, errs := p.Events(ctx)
	inst := create(t, p, providertest.NewSpec())

	asleep, err := p.Sleep(ctx, inst)
	require.NoError(t, err)
	assert.Equal(t, inst.ID, asleep.ID, "labels unchanged: the same container")
	assert.Empty(t, asleep.URL, "a stopped agent has no URL")
	info, err := cli.ContainerInspect(ctx, inst.ID)
	require.NoError(t, err)
	assert.False(t, info.State.Running)
	assert.NotEqual(t, 137, info.State.ExitCode, "the agent exited on SIGTERM, not killed")
	assert.False(t, info.State.OOMKilled)

	for {
		select {
		case ev := <-events:
			if ev.InstanceID != inst.ID {
				continue
			}
			assert.Equal(t, providers.ReasonSlept, ev.Reason, "%+v", ev)
			return
		case err := <-errs:
			t.Fatalf("event stream: %v", err)
		case <-ctx.Done():
			t.Fatal("no event for the sleep")
		}
	}
}

// TestWakeGone: a container that was removed, or whose volume is missing,
// cannot be woken: the error wraps providers.ErrGone.
func TestWakeGone(t *testing.T) {
	cli := engine(t)
	testenv.RequireImage(t, cli, testenv.MockImage())
	p := newProvider(t, baseOptions())

	t.Run("container removed behind the provider's back", func(t *testing.T) {
		ctx := providertest.Context(t, 2*time.Minute)
		inst := create(t, p, providertest.NewSpec())
		asleep, err := p.Sleep(ctx, inst)
		require.NoError(t, err)
		info, err := cli.ContainerInspect(ctx, asleep.ID)
		require.NoError(t, err)
		require.NoError(t, cli.ContainerRemove(ctx, asleep.ID, container.RemoveOptions{Force: true}))
		for _, v := range []string{info.Config.Labels[docker.LabelVolume], info.Config.Labels[docker.LabelStateVolume]} {
			require.NoError(t, cli.VolumeRemove(ctx, v, false), "the volumes the provider no longer knows of")
		}

		woken, err := p.Wake(ctx, asleep.ID)
		assert.ErrorIs(t, err, providers.ErrGone)
		assert.Nil(t, woken)
		_, err = p.Sleep(ctx, asleep)
		assert.ErrorIs(t, err, providers.ErrGone, "sleeping it too")
	})

	t.Run("volume missing", func(t *testing.T) {
		// An engine whose volumes were wiped: a stopped agent container
		// naming a state volume that does not exist.
		ctx := providertest.Context(t, 2*time.Minute)
		labels := map[string]string{
			docker.LabelManaged: "true", docker.LabelProvider: "docker", docker.LabelSession: "gone-" + testenv.RandomHex(4),
			docker.LabelVolume: testenv.Volume(t, cli), docker.LabelStateVolume: "agcluster-state-missing-" + testenv.RandomHex(4),
			runLabel: runID,
		}
		created, err := cli.ContainerCreate(ctx, &container.Config{Image: testenv.MockImage(), Labels: labels,
			Env: []string{agent.EnvToken + "=t"}}, &container.HostConfig{}, nil, nil, "agcluster-test-gone-"+testenv.RandomHex(4))
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true})
		})

		woken, err := p.Wake(ctx, created.ID)
		require.ErrorIs(t, err, providers.ErrGone)
		assert.Contains(t, err.Error(), labels[docker.LabelStateVolume])
		assert.Nil(t, woken)
		info, err := cli.ContainerInspect(ctx, created.ID)
		require.NoError(t, err)
		assert.False(t, info.State.Running, "not started")
	})
}

// TestTwoProvidersOnOneEngine: providers named "docker" and "second" on
// one engine label their agents with their own name and never list,
// destroy, sleep or wake each other's.
func TestTwoProvidersOnOneEngine(t *testing.T) {
	cli := engine(t)
	ctx := providertest.Context(t, 2*time.Minute)
	first := newProvider(t, baseOptions())
	secondOpts := baseOptions()
	secondOpts.Name = "second"
	second := newProvider(t, secondOpts)
	require.Equal(t, "second", second.Name())

	a := create(t, first, providertest.NewSpec())
	b := create(t, second, providertest.NewSpec())
	assert.Equal(t, "docker", a.Provider)
	assert.Equal(t, "second", b.Provider)
	for id, want := range map[string]string{a.ID: "docker", b.ID: "second"} {
		info, err := cli.ContainerInspect(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, want, info.Config.Labels[docker.LabelProvider])
	}

	for _, tc := range []struct {
		p          *docker.Provider
		mine, them *providers.Instance
	}{{first, a, b}, {second, b, a}} {
		t.Run(tc.p.Name(), func(t *testing.T) {
			list, err := tc.p.List(ctx)
			require.NoError(t, err)
			var ids []string
			for _, i := range list {
				ids = append(ids, i.ID)
			}
			assert.Contains(t, ids, tc.mine.ID)
			assert.NotContains(t, ids, tc.them.ID)

			want := `not an agent container of provider "` + tc.p.Name() + `"`
			err = tc.p.Destroy(ctx, tc.them.ID)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
			_, err = tc.p.Sleep(ctx, tc.them)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
			_, err = tc.p.Wake(ctx, tc.them.ID)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
			_, err = tc.them.Client().Stats(ctx)
			assert.NoError(t, err, "the other's agent still runs")
		})
	}
}
