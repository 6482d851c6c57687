// Package caddytest runs the configuration tests every provider's guest
// module has: a table of Caddyfile blocks and the JSON configuration (or
// the error) each gives, loading the module the way the app does, and a
// table of option changes and the errors their check gives.
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

// secret is the API key the option cases put in env: no error may
// repeat it.
const secret = "sk-ant-x"

// OptionsCase is a change to valid options and the parts of the error
// their check must give (none: they stay valid).
type OptionsCase[O any] struct {
	// Name names the subtest.
	Name string
	// Change changes a copy of the valid options.
	Change func(o *O)
	// WantErr are parts of the error; empty for valid options.
	WantErr []string
}

// Validate runs each case as a subtest on a copy of valid: check (the
// options' normalize) must accept it, or fail with every part of WantErr
// and without the secret "sk-ant-x", and then newFn (the provider's New)
// must fail too, returning nil.
func Validate[O, P any](t *testing.T, valid O, check func(O) error, newFn func(O) (P, error), cases []OptionsCase[O]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			o := valid
			tc.Change(&o)
			err := check(o)
			if tc.WantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.WantErr {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), secret, "no secret in the error")
			p, err := newFn(o)
			require.Error(t, err)
			assert.Nil(t, p)
		})
	}
}
