package vercel

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/caddyargs"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/guestmod"
)

func init() {
	caddy.RegisterModule(Module{})
}

// Module is the agcluster.providers.vercel guest module: it runs each
// agent in its own Vercel Sandbox. Its JSON fields are those of
// [Options]; the app gives the provider its name.
type Module struct {
	Options
}

// CaddyModule returns the Caddy module information.
func (Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster.providers.vercel",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision replaces placeholders ({env.X}, {file.X}) in the token, ids,
// URL, snapshot, paths, secret and env values. It does not contact Vercel.
func (m *Module) Provision(caddy.Context) error {
	guestmod.ReplacePlaceholders(&m.Env, &m.Token, &m.ProjectID, &m.TeamID, &m.APIURL, &m.Snapshot, &m.AgentBinary,
		&m.ClaudeBinary, &m.ClaudeVersion, &m.AgentSecret)
	return nil
}

// Validate checks the options as [New] will, so a bad configuration fails
// at load (and in caddy validate).
func (m *Module) Validate() error {
	_, err := m.Options.normalize()
	return err
}

// NewProvider returns a Vercel provider named name with the module's
// options. It does not contact Vercel.
func (m *Module) NewProvider(name string, logger *zap.Logger) (providers.Provider, error) {
	opts := m.Options
	opts.Name = name
	return guestmod.Provider(New(opts, logger))
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	provider vercel {
//	    token <token>            # e.g. {env.VERCEL_TOKEN} (required)
//	    project_id <id>          # (required)
//	    team_id <id>
//	    api_url <url>            # default: https://vercel.com/api
//	    snapshot <id>            # a prepared snapshot with the agent installed; or, to prepare one:
//	    agent_binary <path>      # the agcluster-agent binary (linux/amd64) to install
//	    claude_binary <path>     # the claude binary to install (or claude_version <v>: npm install inside the sandbox)
//	    vcpus <n>                # 1 to 8, 2 GB of memory each (default 1)
//	    timeout <duration>       # how long a sandbox may live before Vercel stops it (default 15m; extended while in use)
//	    env <NAME> <value>       # passed to every agent (never an API key); repeatable
//	    agent_secret <secret>    # what agent tokens are derived from (default: from the token and project)
//	    ready_timeout <duration> # how long to wait for an agent (default 2m)
//	    poll_interval <duration> # how often sandbox statuses are listed (default 5s)
//	}
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return caddyargs.Subdirectives(d, []string{"env"}, func(sub string) error { return m.subdirective(d, sub) })
}

// subdirective reads one subdirective of the provider block.
func (m *Module) subdirective(d *caddyfile.Dispenser, sub string) error {
	strs := map[string]*string{
		"token": &m.Token, "project_id": &m.ProjectID, "team_id": &m.TeamID, "api_url": &m.APIURL,
		"snapshot": &m.Snapshot, "agent_binary": &m.AgentBinary, "claude_binary": &m.ClaudeBinary,
		"claude_version": &m.ClaudeVersion, "agent_secret": &m.AgentSecret,
	}
	if dst, ok := strs[sub]; ok {
		return caddyargs.String(d, dst)
	}
	durs := map[string]*caddy.Duration{"timeout": &m.Timeout, "ready_timeout": &m.ReadyTimeout, "poll_interval": &m.PollInterval}
	if dst, ok := durs[sub]; ok {
		dur, err := caddyargs.Duration(d, false)
		if err != nil {
			return err
		}
		*dst = dur
		return nil
	}
	switch sub {
	case "env":
		return caddyargs.KeyValue(d, &m.Env)
	case "vcpus":
		v, err := caddyargs.One(d)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 8 {
			return d.Errf("vcpus %q: want a whole number from 1 to 8", v)
		}
		m.VCPUs = n
	default:
		return d.Errf("unknown vercel provider subdirective %q", sub)
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*Module)(nil)
	_ caddy.Validator       = (*Module)(nil)
	_ caddyfile.Unmarshaler = (*Module)(nil)
	_ providers.Module      = (*Module)(nil)
)
