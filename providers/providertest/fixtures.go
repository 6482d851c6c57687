package providertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
)

// The fixtures below serve the providers' own tests as well as the suite.

// NewSpec returns a valid Spec for a fresh session ("test-<hex>"), with
// an owner hash, a conversation and the default configuration.
func NewSpec() providers.Spec {
	owner := sha256.Sum256([]byte("owner-" + testenv.RandomHex(4)))
	return providers.Spec{
		SessionID:    "test-" + testenv.RandomHex(6),
		Owner:        hex.EncodeToString(owner[:]),
		ConfigID:     "default",
		Conversation: "conv-" + testenv.RandomHex(4),
		Config:       &agent.Config{ID: "default", AllowedTools: []string{"Read"}},
	}
}

// NewProvider makes a provider with newFn (a provider package's New) and
// closes it when the test ends. A nil logger logs warnings and errors to
// the test.
func NewProvider[O any, P providers.Provider](t testing.TB, newFn func(O, *zap.Logger) (P, error), opts O, logger *zap.Logger) P {
	t.Helper()
	if logger == nil {
		logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	p, err := newFn(opts, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Context is a context that ends after d or with the test.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// CreateWithin makes an instance of spec through p, giving Create d, and
// destroys it when the test ends.
func CreateWithin(t testing.TB, p providers.Provider, spec providers.Spec, d time.Duration) *providers.Instance {
	t.Helper()
	inst, err := p.Create(Context(t, d), spec)
	if inst != nil {
		keep(t, p, inst)
	}
	require.NoError(t, err, "Create")
	return inst
}
