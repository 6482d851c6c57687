package caddyargs

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// at positions a dispenser on the subdirective of input.
func at(input string) *caddyfile.Dispenser {
	d := caddyfile.NewTestDispenser(input)
	d.Next()
	return d
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		read    func(d *caddyfile.Dispenser) (any, error)
		want    any
		wantErr string
	}{
		{"one", "image x:1", func(d *caddyfile.Dispenser) (any, error) { return One(d) }, "x:1", ""},
		{"one, two given", "image x y", func(d *caddyfile.Dispenser) (any, error) { return One(d) }, nil, "wrong argument count"},
		{"duration in days", "retention 2d", func(d *caddyfile.Dispenser) (any, error) { return Duration(d, true) }, caddy.Duration(48 * time.Hour), ""},
		{"zero allowed", "retention 0", func(d *caddyfile.Dispenser) (any, error) { return Duration(d, true) }, caddy.Duration(0), ""},
		{"zero refused", "ready_timeout 0", func(d *caddyfile.Dispenser) (any, error) { return Duration(d, false) }, nil, `ready_timeout "0"`},
		{"negative duration", "retention -1s", func(d *caddyfile.Dispenser) (any, error) { return Duration(d, true) }, nil, "want a duration"},
		{"limit", "max_conversations 7", func(d *caddyfile.Dispenser) (any, error) { return Limit(d) }, 7, ""},
		{"negative limit", "max_conversations -1", func(d *caddyfile.Dispenser) (any, error) { return Limit(d) }, nil, `max_conversations "-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.read(at(tt.input))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestKeyValue(t *testing.T) {
	var m map[string]string
	require.NoError(t, KeyValue(at("env A 1"), &m))
	require.NoError(t, KeyValue(at("env B 2"), &m))
	assert.Equal(t, map[string]string{"A": "1", "B": "2"}, m)
	err := KeyValue(at("env A 3"), &m)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "env A already specified")
}

func TestSubdirectives(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // the subdirectives read, in order
		err   string   // "" for none
	}{
		{"each once", "p {\n a 1\n b\n}", []string{"a", "b"}, ""},
		{"a repeatable one twice", "p {\n env X 1\n env Y 2\n}", []string{"env", "env"}, ""},
		{"another one twice", "p {\n a 1\n a 2\n}", []string{"a"}, "a already specified"},
		{"an argument after the directive", "p extra {\n a 1\n}", nil, "wrong argument count"},
		{"no block", "p", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			d := caddyfile.NewTestDispenser(tt.input)
			err := Subdirectives(d, []string{"env"}, func(sub string) error {
				got = append(got, sub)
				d.RemainingArgs() // what a subdirective reads
				return nil
			})
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
			} else {
				assert.NoError(t, err)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}
