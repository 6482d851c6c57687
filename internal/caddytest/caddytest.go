// Package caddytest runs the Caddyfile tests every provider's guest
// module has: a table of blocks and the JSON configuration (or the error)
// each gives, and loading the module the way the app does.
package caddytest

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Case is one Caddyfile block and what unmarshaling it gives.
type Case struct {
	// Name names the subtest.
	Name string
	// Input is the Caddyfile text, starting at the directive.
	Input string
	// WantJSON is the JSON the unmarshaled value encodes to (compared as
	// JSON), when WantErr is empty.
	WantJSON string
	// WantErr is a part of the error unmarshaling must fail with.
	WantErr string
}

// Unmarshal runs each case as a subtest: a fresh value from newValue
// unmarshals Input; with WantErr its error must contain WantErr, else
// the value must encode to WantJSON.
func Unmarshal[T caddyfile.Unmarshaler](t *testing.T, newValue func() T, cases []Case) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			v := newValue()
			err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.Input))
			if tc.WantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.WantErr)
				return
			}
			require.NoError(t, err)
			got, err := json.Marshal(v)
			require.NoError(t, err)
			assert.JSONEq(t, tc.WantJSON, string(got))
		})
	}
}

// LoadModule unmarshals input as the app loads a guest module: the
// dispenser positioned at the kind token, the module found by its id. It
// returns the module, which must be a T.
func LoadModule[T any](t *testing.T, id, input string) T {
	t.Helper()
	d := caddyfile.NewTestDispenser(input)
	require.True(t, d.Next())
	unm, err := caddyfile.UnmarshalModule(d, id)
	require.NoError(t, err)
	m, ok := unm.(T)
	require.True(t, ok, "%T", unm)
	return m
}
