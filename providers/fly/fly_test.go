package fly_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/flyemu"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/fly"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
)

const (
	app   = "agents"
	token = "fly-test-token"
)

// emulated is a Fly emulator on a test network with the Anthropic mock.
type emulated struct {
	emu  *flyemu.Emulator
	mock *anthropictest.Remote
}

// startEmulator runs the Machines API and proxy emulator with Fly's
// documented rate limits switched on; its machines are containers of the
// real agent image on a test network with the Anthropic mock.
func startEmulator(t *testing.T) *emulated {
	t.Helper()
	testenv.Integration(t)
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.AgentImage())
	netName := testenv.TestNetwork(t, cli)
	mock := testenv.StartMockContainer(t, cli, netName)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emu, err := flyemu.New(ctx, flyemu.Options{
		Token: token, Apps: []string{app}, Network: netName, Docker: cli,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, emu.Close()) })
	return &emulated{emu: emu, mock: mock}
}

// options are provider options for the emulator: its API, its proxy as
// the public URL (plain HTTP: tests only), the local agent image.
func (e *emulated) options() fly.Options {
	return fly.Options{
		App:       app,
		Token:     token,
		Image:     testenv.AgentImage(),
		APIURL:    e.emu.APIURL(),
		PublicURL: e.emu.ProxyURL(),
		MemoryMB:  1024,
		Env:       map[string]string{"ANTHROPIC_BASE_URL": "http://" + testenv.MockAlias + ":8080"},
		// Deaths are noticed within a poll; a short one keeps tests fast.
		PollInterval: caddy.Duration(500 * time.Millisecond),
	}
}

func newProvider(t testing.TB, opts fly.Options) *fly.Provider {
	return providertest.NewProvider(t, fly.New, opts, nil)
}

// stored is everything the Machines API received: every request's
// headers and body (the machine's config, env and metadata among them).
func (e *emulated) stored(context.Context, string) (string, error) {
	var out strings.Builder
	for _, r := range e.emu.Requests() {
		fmt.Fprintf(&out, "%s %v\n%s\n", r.Route, r.Header, r.Body)
	}
	return out.String(), nil
}

// TestConformance runs the providers' conformance suite on the Fly
// provider against the emulator, reaching agents through its proxy.
func TestConformance(t *testing.T) {
	e := startEmulator(t)
	opts := e.options()
	other := opts
	other.Name = "fly-other"
	providertest.Run(t, newProvider(t, opts), providertest.Options{
		NewSpec:       providertest.NewSpec,
		Reopen:        func(t *testing.T) providers.Provider { return newProvider(t, opts) },
		Other:         newProvider(t, other),
		Kill:          e.emu.Crash,
		Stored:        e.stored,
		ModelRequests: e.mock.Bodies,
	})
}

// TestPrivate: with private, agents are reached at their private address
// (the emulator's network), with no routing header.
func TestPrivate(t *testing.T) {
	e := startEmulator(t)
	opts := e.options()
	opts.Private, opts.PublicURL = true, ""
	p := newProvider(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inst, err := p.Create(ctx, providertest.NewSpec())
	if inst != nil {
		t.Cleanup(func() { assert.NoError(t, p.Destroy(context.Background(), inst.ID)) })
	}
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(inst.URL, "http://") && strings.HasSuffix(inst.URL, ":8080"), "URL %s", inst.URL)
	assert.Empty(t, inst.Header.Get("Fly-Force-Instance-Id"))
	_, err = inst.Client().Stats(ctx)
	require.NoError(t, err)
	assert.Zero(t, e.emu.ProxiedRequests()[inst.ID], "nothing went through the proxy")
}

// TestPublicRoute: through the proxy every request names its machine.
func TestPublicRoute(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e.options())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inst, err := p.Create(ctx, providertest.NewSpec())
	if inst != nil {
		t.Cleanup(func() { assert.NoError(t, p.Destroy(context.Background(), inst.ID)) })
	}
	require.NoError(t, err)
	assert.Equal(t, e.emu.ProxyURL(), inst.URL)
	assert.Equal(t, inst.ID, inst.Header.Get("fly-force-instance-id"))
	before := e.emu.ProxiedRequests()[inst.ID]
	_, err = inst.Client().Stats(ctx)
	require.NoError(t, err)
	assert.Greater(t, e.emu.ProxiedRequests()[inst.ID], before, "the proxy routed the request to the machine")
}

// TestAPIErrors: a refused token, an unknown app and an image Fly cannot
// pull are clear errors wrapping the contract's sentinels, without the
// token in them.
func TestAPIErrors(t *testing.T) {
	e := startEmulator(t)
	for _, tc := range []struct {
		name   string
		change func(o *fly.Options)
		is     error
		want   string
	}{
		{"bad token", func(o *fly.Options) { o.Token = "wrong-token-secret" }, providers.ErrUnavailable, "refused the token"},
		{"unknown app", func(o *fly.Options) { o.App = "no-such-app" }, providers.ErrUnavailable, `Fly app "no-such-app" not found`},
		{"unpullable image", func(o *fly.Options) { o.Image = "agcluster/no-such-image:missing" }, providers.ErrImageMissing, "cannot pull image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.options()
			tc.change(&opts)
			p := newProvider(t, opts)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
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
}

// TestRateLimitsAbsorbed: creates beyond Fly's create burst (3, then 1 a
// second) get 429s from the emulator, which the provider waits out.
func TestRateLimitsAbsorbed(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e.options())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 5
	errs := make(chan error, n)
	for range n {
		go func() {
			inst, err := p.Create(ctx, providertest.NewSpec())
			if inst != nil {
				t.Cleanup(func() { assert.NoError(t, p.Destroy(context.Background(), inst.ID)) })
			}
			errs <- err
		}()
	}
	for range n {
		assert.NoError(t, <-errs)
	}
	limited := 0
	for _, r := range e.emu.Requests() {
		if r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	assert.Positive(t, limited, "the emulator rate-limited some calls")
}

// TestDestroyedBehindBack: a machine destroyed without the provider (Fly
// lost its host, someone ran fly machine destroy) is reported as died,
// is no longer listed, and waking it is ErrGone, so the session layer
// moves the conversation to a new machine.
func TestDestroyedBehindBack(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e.options())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	events, errs := p.Events(ctx)
	inst, err := p.Create(ctx, providertest.NewSpec())
	if inst != nil {
		t.Cleanup(func() { assert.NoError(t, p.Destroy(context.Background(), inst.ID)) })
	}
	require.NoError(t, err)
	require.NoError(t, e.emu.DestroyBehindBack(ctx, inst.ID))

	var got *providers.Event
	for ev := range events {
		if ev.InstanceID == inst.ID {
			got = &ev
			break
		}
	}
	require.NotNil(t, got, "no event for the destroyed machine")
	assert.Equal(t, providers.ReasonDied, got.Reason)
	assert.Equal(t, inst.SessionID, got.SessionID)
	select {
	case err := <-errs:
		require.NoError(t, err, "the event stream failed")
	default:
	}
	list, err := p.List(ctx)
	require.NoError(t, err)
	for _, i := range list {
		assert.NotEqual(t, inst.ID, i.ID, "a destroyed machine is listed")
	}
	_, err = p.Wake(ctx, inst.ID)
	assert.ErrorIs(t, err, providers.ErrGone)
}
