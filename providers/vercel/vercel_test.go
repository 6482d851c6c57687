package vercel_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/internal/vercelemu"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
	"github.com/agcluster/caddy-agcluster/providers/vercel"
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
	t.Helper()
	if logger == nil {
		logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	p, err := vercel.New(opts, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSpec() providers.Spec {
	owner := sha256.Sum256([]byte("owner-" + testenv.RandomHex(4)))
	return providers.Spec{
		SessionID:    "test-" + testenv.RandomHex(6),
		Owner:        hex.EncodeToString(owner[:]),
		ConfigID:     "default",
		Conversation: "conv-" + testenv.RandomHex(4),
		Config:       &agent.Config{ID: "default", AllowedTools: []string{"Read"}},
	}
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

func (e *emulated) modelRequests(ctx context.Context) ([]string, error) {
	reqs, err := e.mock.Requests(ctx)
	bodies := make([]string, len(reqs))
	for i, r := range reqs {
		bodies[i] = string(r.Body)
	}
	return bodies, err
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
		NewSpec:       newSpec,
		Reopen:        func(t *testing.T) providers.Provider { return newProvider(t, opts, nil) },
		Other:         newProvider(t, other, nil),
		Kill:          e.emu.Crash,
		Stored:        e.stored,
		ModelRequests: e.modelRequests,
	})
	for name, status := range e.emu.Sandboxes() {
		assert.True(t, strings.HasPrefix(name, "agcluster-snapshot-"), "sandbox %s (%s) left", name, status)
	}
}
