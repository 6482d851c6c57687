package providers_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/memory"
)

func TestDeriveToken(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210fedcba9876543210")
	a := providers.DeriveToken(secret, "machine-a")
	assert.Len(t, a, 64)
	assert.Equal(t, a, providers.DeriveToken(secret, "machine-a"), "recomputed after a restart")
	assert.NotEqual(t, a, providers.DeriveToken(secret, "machine-b"), "another instance")
	assert.NotEqual(t, a, providers.DeriveToken(other, "machine-a"), "another gateway secret")
}

func TestCapabilities(t *testing.T) {
	assert.Equal(t, []string{"sleep", "events"}, providers.Capabilities(memory.New("m")))
}
