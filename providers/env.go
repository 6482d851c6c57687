package providers

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// ForbiddenEnv are credentials an agent's environment must never hold: the
// user's key travels with each query instead.
var ForbiddenEnv = []string{"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"}

// ReservedEnv are the agent's variables a provider sets itself.
var ReservedEnv = []string{agent.EnvToken, agent.EnvConfig, agent.EnvAddr, agent.EnvWorkspace, agent.EnvStateDir, agent.EnvRestore}

// CheckEnv refuses, in an operator's or a spec's extra environment,
// credentials (ForbiddenEnv), the provider's own variables (ReservedEnv)
// and malformed names, all of them at once.
func CheckEnv(env map[string]string) error {
	var errs []error
	for name := range env {
		switch {
		case name == "" || strings.ContainsAny(name, "=\x00"):
			errs = append(errs, fmt.Errorf("invalid variable name %q", name))
		case containsFold(ForbiddenEnv, name):
			errs = append(errs, fmt.Errorf("%s is refused: agents never hold an API key in their environment (the key is sent with each query)", name))
		case containsFold(ReservedEnv, name):
			errs = append(errs, fmt.Errorf("%s is set by the provider", name))
		}
	}
	return errors.Join(errs...)
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(v string) bool { return strings.EqualFold(v, s) })
}
