package configs

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// envNamePattern is what an environment variable name must look like.
var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// MCPEnvError reports one problem with the launch-time MCP environment
// (mcp_env) of a configuration.
type MCPEnvError struct {
	// Config is the id of the configuration.
	Config string
	// Key is the environment variable name concerned.
	Key string
	// Reason says what is wrong.
	Reason string
	// Missing is true when Key is declared by an MCP server but has no
	// value, neither in the configuration nor in mcp_env.
	Missing bool
}

// Error returns e.g. "configs: github-code-review needs mcp_env
// GITHUB_PERSONAL_ACCESS_TOKEN (declared by MCP server github)" or
// "configs: github-code-review: mcp_env FOO: not declared by any MCP
// server".
func (e *MCPEnvError) Error() string {
	id := e.Config
	if id == "" {
		id = "agent config"
	}
	if e.Missing {
		return fmt.Sprintf("configs: %s needs mcp_env %s (%s)", id, e.Key, e.Reason)
	}
	return fmt.Sprintf("configs: %s: mcp_env %s: %s", id, e.Key, e.Reason)
}

// MCPEnvKeys returns, per MCP server name, the sorted environment keys the
// server declares: what mcp_env may fill. Servers without env are left out.
func MCPEnvKeys(c *agent.Config) map[string][]string {
	out := make(map[string][]string)
	if c == nil {
		return out
	}
	for name, s := range c.MCPServers {
		if len(s.Env) > 0 {
			out[name] = slices.Sorted(maps.Keys(s.Env))
		}
	}
	return out
}

// MissingMCPEnv lists, sorted and without duplicates, the env keys declared
// by MCP servers whose value is empty (or only white space): they must be
// supplied at launch through mcp_env.
func MissingMCPEnv(c *agent.Config) []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, s := range c.MCPServers {
		for k, v := range s.Env {
			if strings.TrimSpace(v) == "" {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ApplyMCPEnv returns a deep copy of c whose MCP servers' env is filled
// from values (a launch request's mcp_env). A value is set in every MCP
// server that declares its key, replacing the configuration's value. A
// key in values must be a valid environment variable name, must not be in
// [agent.ReservedEnv], and must be declared by some MCP server; a value
// must not contain a NUL byte. Afterwards no declared key may be empty.
//
// All problems are reported, joined; each is a [*MCPEnvError]. c is never
// changed.
func ApplyMCPEnv(c *agent.Config, values map[string]string) (*agent.Config, error) {
	if c == nil {
		return nil, &MCPEnvError{Reason: "no configuration"}
	}
	declared := make(map[string][]string) // key -> servers declaring it
	for _, name := range slices.Sorted(maps.Keys(c.MCPServers)) {
		for k := range c.MCPServers[name].Env {
			declared[k] = append(declared[k], name)
		}
	}
	out := clone(c)
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := values[k]
		var reason string
		switch {
		case !envNamePattern.MatchString(k):
			reason = "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
		case agent.ReservedEnv[k]:
			reason = "is reserved for the agent server"
		case len(declared[k]) == 0:
			reason = "not declared by any MCP server of this configuration"
			if keys := slices.Sorted(maps.Keys(declared)); len(keys) > 0 {
				reason += " (declared: " + strings.Join(keys, ", ") + ")"
			}
		case strings.ContainsRune(v, 0):
			reason = "value contains a NUL byte"
		}
		if reason != "" {
			errs = append(errs, &MCPEnvError{Config: c.ID, Key: k, Reason: reason})
			continue
		}
		for _, name := range declared[k] {
			out.MCPServers[name].Env[k] = v
		}
	}
	for _, k := range MissingMCPEnv(out) {
		errs = append(errs, &MCPEnvError{
			Config:  c.ID,
			Key:     k,
			Missing: true,
			Reason:  "declared by MCP server " + strings.Join(declared[k], ", ") + " without a value",
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
