package configs

import (
	"maps"
	"slices"

	"github.com/agcluster/caddy-agcluster/agent"
)

// clone returns a deep copy of c: no slice, map or pointer is shared.
// TestCloneCoversAllFields fails when agent.Config gains a field, as a
// reminder to copy it here.
func clone(c *agent.Config) *agent.Config {
	if c == nil {
		return nil
	}
	out := *c
	out.AllowedTools = slices.Clone(c.AllowedTools)
	out.DisallowedTools = slices.Clone(c.DisallowedTools)
	if c.SystemPrompt != nil {
		p := *c.SystemPrompt
		out.SystemPrompt = &p
	}
	if c.MCPServers != nil {
		out.MCPServers = make(map[string]agent.MCPServer, len(c.MCPServers))
		for name, s := range c.MCPServers {
			s.Args = slices.Clone(s.Args)
			s.Env = maps.Clone(s.Env)
			s.Headers = maps.Clone(s.Headers)
			out.MCPServers[name] = s
		}
	}
	if c.Agents != nil {
		out.Agents = make(map[string]agent.SubAgent, len(c.Agents))
		for name, a := range c.Agents {
			a.Tools = slices.Clone(a.Tools)
			out.Agents[name] = a
		}
	}
	out.Env = maps.Clone(c.Env)
	out.SettingSources = slices.Clone(c.SettingSources)
	if c.Resources != nil {
		r := *c.Resources
		out.Resources = &r
	}
	return &out
}
