// Package providertest is the conformance suite every provider must pass:
// creating a ready agent with a token of its own, listing, destroying
// (idempotently) and refusing a cancelled create, all checked through the
// agent's real HTTP API.
//
// It is a test library: call [Run] from a provider's tests.
package providertest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
)

// CallTimeout bounds each provider call the suite makes.
const CallTimeout = 3 * time.Minute

// Run runs the conformance suite against a provider. newSpec returns a
// valid Spec for a fresh session (a new SessionID on every call). Every
// subtest removes what it creates, even when it fails.
func Run(t *testing.T, p providers.Provider, newSpec func() providers.Spec) {
	t.Helper()

	t.Run("create returns a ready instance matching the spec", func(t *testing.T) {
		spec := newSpec()
		inst := create(t, p, spec)
		assert.NotEmpty(t, inst.ID, "ID")
		assert.Equal(t, p.Name(), inst.Provider, "Provider")
		assert.Equal(t, spec.SessionID, inst.SessionID, "SessionID")
		assert.Equal(t, spec.Owner, inst.Owner, "Owner")
		assert.Equal(t, spec.ConfigID, inst.ConfigID, "ConfigID")
		assert.Equal(t, spec.Conversation, inst.Conversation, "Conversation")
		assert.NotEmpty(t, inst.URL, "URL")
		assert.NotEmpty(t, inst.Token, "Token")
		assert.False(t, inst.CreatedAt.IsZero(), "CreatedAt")

		ctx := callCtx(t)
		h, status, err := client(inst).Health(ctx)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, status)
		assert.Equal(t, "ready", h.Status)
	})

	t.Run("the token is required", func(t *testing.T) {
		inst := create(t, p, newSpec())
		ctx := callCtx(t)

		_, err := (&agentclient.Client{BaseURL: inst.URL}).Stats(ctx)
		var apiErr *agentclient.APIError
		require.ErrorAs(t, err, &apiErr, "GET /stats without a token")
		assert.Equal(t, http.StatusUnauthorized, apiErr.Status)

		_, err = (&agentclient.Client{BaseURL: inst.URL, Token: inst.Token + "x"}).Stats(ctx)
		require.ErrorAs(t, err, &apiErr, "GET /stats with a wrong token")
		assert.Equal(t, http.StatusUnauthorized, apiErr.Status)

		_, err = client(inst).Stats(ctx)
		assert.NoError(t, err, "GET /stats with the token")
	})

	t.Run("two creates give distinct instances", func(t *testing.T) {
		a := create(t, p, newSpec())
		b := create(t, p, newSpec())
		assert.NotEqual(t, a.ID, b.ID, "IDs")
		assert.NotEqual(t, a.Token, b.Token, "tokens")
		_, err := (&agentclient.Client{BaseURL: b.URL, Token: a.Token}).Stats(callCtx(t))
		assert.Error(t, err, "one agent's token does not open another")
	})

	t.Run("list has created instances and not destroyed ones", func(t *testing.T) {
		kept := create(t, p, newSpec())
		gone := create(t, p, newSpec())
		require.NoError(t, p.Destroy(callCtx(t), gone.ID))

		list, err := p.List(callCtx(t))
		require.NoError(t, err)
		got := find(list, kept.ID)
		require.NotNil(t, got, "List lacks created instance %s", kept.ID)
		assert.Equal(t, kept.URL, got.URL, "URL")
		assert.Equal(t, kept.Token, got.Token, "Token")
		assert.Equal(t, kept.SessionID, got.SessionID, "SessionID")
		assert.Equal(t, kept.Owner, got.Owner, "Owner")
		assert.Equal(t, kept.ConfigID, got.ConfigID, "ConfigID")
		assert.Equal(t, kept.Conversation, got.Conversation, "Conversation")
		assert.Equal(t, p.Name(), got.Provider, "Provider")
		assert.Nil(t, find(list, gone.ID), "List has destroyed instance %s", gone.ID)
	})

	t.Run("a warm-pool instance is listed with its pool and no session", func(t *testing.T) {
		spec := newSpec()
		spec.SessionID, spec.Owner, spec.Conversation = "", "", ""
		spec.Pool = spec.ConfigID + "@conformance"
		inst := create(t, p, spec)
		assert.Equal(t, spec.Pool, inst.Pool, "Pool")

		list, err := p.List(callCtx(t))
		require.NoError(t, err)
		got := find(list, inst.ID)
		require.NotNil(t, got, "List lacks pool instance %s", inst.ID)
		assert.Equal(t, spec.Pool, got.Pool, "Pool")
		assert.Empty(t, got.SessionID+got.Owner+got.Conversation, "a pool instance serves nobody yet")
		st, err := client(inst).Binding(callCtx(t))
		require.NoError(t, err)
		assert.False(t, st.Bound, "the agent is not bound")
	})

	t.Run("destroy removes the instance and is idempotent", func(t *testing.T) {
		inst := create(t, p, newSpec())
		require.NoError(t, p.Destroy(callCtx(t), inst.ID))

		list, err := p.List(callCtx(t))
		require.NoError(t, err)
		assert.Nil(t, find(list, inst.ID), "List still has destroyed instance")
		testenv.Eventually(t, 30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := client(inst).Stats(ctx)
			return err != nil
		}, "the destroyed agent at %s still answers", inst.URL)

		assert.NoError(t, p.Destroy(callCtx(t), inst.ID), "second Destroy")
	})

	t.Run("destroy of an unknown id is not an error", func(t *testing.T) {
		assert.NoError(t, p.Destroy(callCtx(t), "agcluster-unknown-"+testenv.RandomHex(8)))
	})

	t.Run("create with a cancelled context fails and leaves nothing", func(t *testing.T) {
		spec := newSpec()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		inst, err := p.Create(ctx, spec)
		if inst != nil {
			t.Cleanup(func() { _ = p.Destroy(context.Background(), inst.ID) })
		}
		require.Error(t, err)
		assert.True(t, errors.Is(err, context.Canceled), "error wraps context.Canceled: %v", err)
		assert.Nil(t, inst)

		list, err := p.List(callCtx(t))
		require.NoError(t, err)
		for _, i := range list {
			assert.NotEqual(t, spec.SessionID, i.SessionID, "List has an instance of the cancelled create")
		}
	})
}

// create makes an instance and destroys it when the test ends.
func create(t *testing.T, p providers.Provider, spec providers.Spec) *providers.Instance {
	t.Helper()
	inst, err := p.Create(callCtx(t), spec)
	if inst != nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
			defer cancel()
			if err := p.Destroy(ctx, inst.ID); err != nil {
				t.Errorf("cleanup: destroy %s: %v", inst.ID, err)
			}
		})
	}
	require.NoError(t, err, "Create")
	require.NotNil(t, inst, "Create returned no instance and no error")
	return inst
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	t.Cleanup(cancel)
	return ctx
}

func client(inst *providers.Instance) *agentclient.Client {
	return inst.Client()
}

func find(list []*providers.Instance, id string) *providers.Instance {
	for _, i := range list {
		if i.ID == id {
			return i
		}
	}
	return nil
}
