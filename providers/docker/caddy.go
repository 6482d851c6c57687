package docker

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

// Module is the agcluster.providers.docker guest module: it runs each
// agent in a hardened container on the local (or a remote) Docker engine.
// Its JSON fields are those of [Options]; the app gives the provider its
// name.
type Module struct {
	Options
}

// CaddyModule returns the Caddy module information.
func (Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster.providers.docker",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision replaces placeholders ({env.X}, {file.X}) in env values and
// host. It does not contact the engine.
func (m *Module) Provision(caddy.Context) error {
	guestmod.ReplacePlaceholders(&m.Env, &m.Host)
	return nil
}

// Validate checks the options as [New] will, so a bad configuration fails
// at load (and in caddy validate).
func (m *Module) Validate() error {
	_, err := m.Options.normalize()
	return err
}

// NewProvider returns a Docker provider named name with the module's
// options. It does not contact the engine.
func (m *Module) NewProvider(name string, logger *zap.Logger) (providers.Provider, error) {
	opts := m.Options
	opts.Name = name
	return guestmod.Provider(New(opts, logger))
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	provider docker {
//	    image <image>                  # default agcluster/agent:latest
//	    network <name>                 # attach agents to this Docker network
//	    isolated_network <name>|none   # default network when none is set (default agcluster-agents, ICC off)
//	    env <NAME> <value>             # passed to every agent; repeatable
//	    memory <size>                  # e.g. 1g (default 1g)
//	    cpus <n>                       # e.g. 1 or 0.5 (default 1)
//	    pids <n>                       # process limit (default 256)
//	    tmp_size <size>                # /tmp tmpfs (default 256m)
//	    home_size <size>               # home tmpfs (default 256m)
//	    host <address>                 # engine, e.g. unix:///var/run/docker.sock
//	    publish_host <ip>              # where agent ports are published (default 127.0.0.1)
//	    reach_by_container_ip          # Caddy is on <network>: use container addresses
//	    ready_timeout <duration>       # how long to wait for an agent (default 60s)
//	    label <key> <value>            # extra label on containers and volumes; repeatable
//	}
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return caddyargs.Subdirectives(d, []string{"env", "label"}, func(sub string) error {
		switch sub {
		case "image":
			if err := caddyargs.String(d, &m.Image); err != nil {
				return err
			}
		case "network":
			if err := caddyargs.String(d, &m.Network); err != nil {
				return err
			}
		case "isolated_network":
			if err := caddyargs.String(d, &m.IsolatedNetwork); err != nil {
				return err
			}
		case "host":
			if err := caddyargs.String(d, &m.Host); err != nil {
				return err
			}
		case "publish_host":
			if err := caddyargs.String(d, &m.PublishHost); err != nil {
				return err
			}
		case "tmp_size":
			if err := caddyargs.String(d, &m.TmpSize); err != nil {
				return err
			}
		case "home_size":
			if err := caddyargs.String(d, &m.HomeSize); err != nil {
				return err
			}
		case "env":
			if err := caddyargs.KeyValue(d, &m.Env); err != nil {
				return err
			}
		case "label":
			if err := caddyargs.KeyValue(d, &m.ExtraLabels); err != nil {
				return err
			}
		case "memory":
			v, err := caddyargs.One(d)
			if err != nil {
				return err
			}
			n, err := units.RAMInBytes(v)
			if err != nil || n <= 0 {
				return d.Errf("memory %q: want a size such as 512m or 1g", v)
			}
			m.MemoryBytes = n
		case "cpus":
			v, err := caddyargs.One(d)
			if err != nil {
				return err
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return d.Errf("cpus %q: want a positive number such as 1 or 0.5", v)
			}
			m.NanoCPUs = int64(f * 1e9)
		case "pids":
			v, err := caddyargs.One(d)
			if err != nil {
				return err
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("pids %q: want a positive whole number", v)
			}
			m.Pids = n
		case "reach_by_container_ip":
			if d.NextArg() {
				return d.ArgErr()
			}
			m.ReachByContainerIP = true
		case "ready_timeout":
			dur, err := caddyargs.Duration(d, false)
			if err != nil {
				return err
			}
			m.ReadyTimeout = dur
		default:
			return d.Errf("unknown docker provider subdirective %q", sub)
		}
		return nil
	})
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*Module)(nil)
	_ caddy.Validator       = (*Module)(nil)
	_ caddyfile.Unmarshaler = (*Module)(nil)
	_ providers.Module      = (*Module)(nil)
)
