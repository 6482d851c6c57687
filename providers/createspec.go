package providers

import (
	"context"
	"encoding/json"
	"fmt"
)

// CheckCreate checks what every provider's Create checks before it makes
// anything, in this order: ctx is still live, spec.Env passes [CheckEnv]
// (the error then says "env: ..."), spec.Config is valid. It returns the
// agent configuration as the JSON the agent reads from agent.EnvConfig
// ("{}" without one). The caller wraps the error with its own context.
func CheckCreate(ctx context.Context, spec Spec) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := CheckEnv(spec.Env); err != nil {
		return nil, fmt.Errorf("env: %w", err)
	}
	if spec.Config == nil {
		return []byte("{}"), nil
	}
	if err := spec.Config.Validate(); err != nil {
		return nil, err
	}
	cfgJSON, err := json.Marshal(spec.Config)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return cfgJSON, nil
}
