package fly

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/docker/go-units"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/caddyargs"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/guestmod"
)

func init() {
	caddy.RegisterModule(Module{})
}

// Module is the agcluster.providers.fly guest module: it runs each agent
// as a Fly Machine of one Fly app. Its JSON fields are those of
// [Options]; the app gives the provider its name.
type Module struct {
	Options
}

// CaddyModule returns the Caddy module information.
func (Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster.providers.fly",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision replaces placeholders ({env.X}, {file.X}) in the app, token,
// image, URLs, region and env values. It does not contact Fly.
func (m *Module) Provision(caddy.Context) error {
	guestmod.ReplacePlaceholders(&m.Env, &m.App, &m.Token, &m.Image, &m.APIURL, &m.PublicURL, &m.Region)
	return nil
}

// Validate checks the options as [New] will, so a bad configuration fails
// at load (and in caddy validate).
func (m *Module) Validate() error {
	_, err := m.Options.normalize()
	return err
}

// NewProvider returns a Fly provider named name with the module's options.
// It does not contact Fly.
func (m *Module) NewProvider(name string, logger *zap.Logger) (providers.Provider, error) {
	opts := m.Options
	opts.Name = name
	return guestmod.Provider(New(opts, logger))
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	provider fly {
//	    app <name>                  # the Fly app whose Machines run agents (required)
//	    token <token>               # API token, e.g. {env.FLY_API_TOKEN} (required)
//	    image <ref>                 # the agent image in a registry Fly can pull (required)
//	    api_url <url>               # Machines API; default https://api.machines.dev
//	    region <code>               # default: Fly's choice
//	    public_url <url>            # reach agents through Fly's proxy; default https://<app>.fly.dev
//	    private                     # reach agents at their private address instead (Caddy runs inside the org)
//	    cpu_kind shared|performance # default shared
//	    cpus <n>                    # default 1
//	    memory <size>               # e.g. 1g or 512m, a multiple of 256m (default 1g)
//	    env <NAME> <value>          # passed to every agent (never an API key); repeatable
//	    ready_timeout <duration>    # how long to wait for an agent (default 60s)
//	    poll_interval <duration>    # how often Machine states are polled for deaths (default 2s)
//	}
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return caddyargs.Subdirectives(d, []string{"env"}, func(sub string) error { return m.subdirective(d, sub) })
}

// subdirective reads one subdirective of the provider block.
func (m *Module) subdirective(d *caddyfile.Dispenser, sub string) error {
	strs := map[string]*string{
		"app": &m.App, "token": &m.Token, "image": &m.Image, "api_url": &m.APIURL,
		"region": &m.Region, "public_url": &m.PublicURL, "cpu_kind": &m.CPUKind,
	}
	if dst, ok := strs[sub]; ok {
		return caddyargs.String(d, dst)
	}
	switch sub {
	case "env":
		return caddyargs.KeyValue(d, &m.Env)
	case "private":
		if d.NextArg() {
			return d.ArgErr()
		}
		m.Private = true
	case "cpus":
		v, err := caddyargs.One(d)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return d.Errf("cpus %q: want a positive whole number", v)
		}
		m.CPUs = n
	case "memory":
		v, err := caddyargs.One(d)
		if err != nil {
			return err
		}
		n, err := units.RAMInBytes(v)
		if err != nil || n <= 0 || n%(256<<20) != 0 {
			return d.Errf("memory %q: want a size in steps of 256m, such as 512m or 1g", v)
		}
		m.MemoryMB = int(n >> 20)
	case "ready_timeout", "poll_interval":
		dur, err := caddyargs.Duration(d, false)
		if err != nil {
			return err
		}
		if sub == "ready_timeout" {
			m.ReadyTimeout = dur
		} else {
			m.PollInterval = dur
		}
	default:
		return d.Errf("unknown fly provider subdirective %q", sub)
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
