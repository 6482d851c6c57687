package guestmod_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/providers/docker"
	"github.com/agcluster/caddy-agcluster/providers/guestmod"
)

func TestReplacePlaceholders(t *testing.T) {
	t.Setenv("GUESTMOD_TEST", "value")
	tests := []struct {
		name    string
		env     map[string]string
		str     string
		wantEnv map[string]string
		wantStr string
	}{
		{name: "both", env: map[string]string{"A": "{env.GUESTMOD_TEST}", "B": "plain"}, str: "x-{env.GUESTMOD_TEST}",
			wantEnv: map[string]string{"A": "value", "B": "plain"}, wantStr: "x-value"},
		{name: "nil env", str: "{env.GUESTMOD_TEST}", wantStr: "value"},
		{name: "unset variable", env: map[string]string{"A": "{env.GUESTMOD_UNSET}"}, wantEnv: map[string]string{"A": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := tt.env
			var before map[string]string
			if orig != nil {
				before = map[string]string{}
				for k, v := range orig {
					before[k] = v
				}
			}
			env, str := tt.env, tt.str
			guestmod.ReplacePlaceholders(&env, &str)
			assert.Equal(t, tt.wantEnv, env)
			assert.Equal(t, tt.wantStr, str)
			assert.Equal(t, before, orig, "the original map is left as it was")
		})
	}
}

func TestProvider(t *testing.T) {
	p, err := guestmod.Provider(docker.New(docker.Options{}, nil))
	require.NoError(t, err)
	assert.Equal(t, "docker", p.Name())

	boom := errors.New("boom")
	p, err = guestmod.Provider[*docker.Provider](nil, boom)
	require.ErrorIs(t, err, boom)
	assert.True(t, p == nil, "an untyped nil provider: %#v", p)
}
