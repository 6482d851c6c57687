package providers

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

func TestCheckCreate(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		spec    Spec
		want    string
		wantErr string
	}{
		{name: "no config", ctx: context.Background(), want: "{}"},
		{name: "config", ctx: context.Background(), spec: Spec{Config: &agent.Config{ID: "c1", MaxTurns: 2}},
			want: `{"id":"c1","max_turns":2}`},
		{name: "ended context", ctx: ended, spec: Spec{Env: map[string]string{agent.EnvToken: "x"}}, wantErr: "context canceled"},
		{name: "reserved env", ctx: context.Background(), spec: Spec{Env: map[string]string{agent.EnvToken: "x"}},
			wantErr: "env: "},
		{name: "bad config", ctx: context.Background(), spec: Spec{Config: &agent.Config{MaxTurns: -1}}, wantErr: "max_turns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckCreate(tt.ctx, tt.spec)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.Nil(t, got)
				return
			}
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(got))
		})
	}
}
