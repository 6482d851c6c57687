package cloudflare

import (
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

// Module is the agcluster.providers.cloudflare guest module: it runs each
// agent in a Cloudflare container through the agcluster Worker. Its JSON
// fields are those of [Options]; the app gives the provider its name.
type Module struct {
	Options
}

// CaddyModule returns the Caddy module information.
func (Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster.providers.cloudflare",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision replaces placeholders ({env.X}, {file.X}) in the Worker's URL,
// the secret and env values. It does not contact the Worker.
func (m *Module) Provision(caddy.Context) error {
	guestmod.ReplacePlaceholders(&m.Env, &m.WorkerURL, &m.Secret)
	return nil
}

// Validate checks the options as [New] will, so a bad configuration fails
// at load (and in caddy validate).
func (m *Module) Validate() error {
	_, err := m.Options.normalize()
	return err
}

// NewProvider returns a Cloudflare provider named name with the module's
// options. It does not contact the Worker.
func (m *Module) NewProvider(name string, logger *zap.Logger) (providers.Provider, error) {
	opts := m.Options
	opts.Name = name
	return guestmod.Provider(New(opts, logger))
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	provider cloudflare {
//	    worker_url <url>         # the deployed agcluster Worker (required)
//	    secret <secret>          # the Worker's shared secret, e.g. {env.AGCLUSTER_WORKER_SECRET} (required)
//	    env <NAME> <value>       # passed to every agent (never an API key); repeatable
//	    ready_timeout <duration> # how long to wait for an agent (default 2m)
//	    poll_interval <duration> # how often agent states are listed for deaths (default 5s)
//	}
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return caddyargs.Subdirectives(d, []string{"env"}, func(sub string) error { return m.subdirective(d, sub) })
}

// subdirective reads one subdirective of the provider block.
func (m *Module) subdirective(d *caddyfile.Dispenser, sub string) error {
	switch sub {
	case "worker_url":
		return caddyargs.String(d, &m.WorkerURL)
	case "secret":
		return caddyargs.String(d, &m.Secret)
	case "env":
		return caddyargs.KeyValue(d, &m.Env)
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
		return nil
	}
	return d.Errf("unknown cloudflare provider subdirective %q", sub)
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*Module)(nil)
	_ caddy.Validator       = (*Module)(nil)
	_ caddyfile.Unmarshaler = (*Module)(nil)
	_ providers.Module      = (*Module)(nil)
)
