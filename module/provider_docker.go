package module

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/docker/go-units"

	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/docker"
)

func init() {
	caddy.RegisterModule(DockerProvider{})
}

// DockerProvider runs each session's agent in a hardened Docker container
// on the local (or a remote) engine.
type DockerProvider struct {
	docker.Options

	provider *docker.Provider
}

// CaddyModule returns the Caddy module information.
func (DockerProvider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster.providers.docker",
		New: func() caddy.Module { return new(DockerProvider) },
	}
}

// Provision creates the engine client; it does not contact the engine.
func (d *DockerProvider) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	for k, v := range d.Env {
		d.Env[k] = repl.ReplaceAll(v, "")
	}
	d.Host = repl.ReplaceAll(d.Host, "")
	p, err := docker.New(d.Options, ctx.Logger())
	if err != nil {
		return fmt.Errorf("docker provider: %w", err)
	}
	d.provider = p
	return nil
}

// Provider returns the provisioned provider.
func (d *DockerProvider) Provider() providers.Provider { return d.provider }

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
func (d *DockerProvider) UnmarshalCaddyfile(disp *caddyfile.Dispenser) error {
	disp.Next() // provider name
	if disp.NextArg() {
		return disp.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := disp.Nesting(); disp.NextBlock(nesting); {
		sub := disp.Val()
		if sub != "env" && sub != "label" {
			if seen[sub] {
				return disp.Errf("%s already specified", sub)
			}
			seen[sub] = true
		}
		switch sub {
		case "image", "network", "isolated_network", "host", "publish_host", "tmp_size", "home_size":
			v, err := oneArg(disp)
			if err != nil {
				return err
			}
			*map[string]*string{
				"image": &d.Image, "network": &d.Network, "isolated_network": &d.IsolatedNetwork, "host": &d.Host,
				"publish_host": &d.PublishHost, "tmp_size": &d.TmpSize, "home_size": &d.HomeSize,
			}[sub] = v
		case "env", "label":
			var k, v string
			if !disp.AllArgs(&k, &v) {
				return disp.ArgErr()
			}
			m := &d.Env
			if sub == "label" {
				m = &d.ExtraLabels
			}
			if *m == nil {
				*m = map[string]string{}
			}
			if _, dup := (*m)[k]; dup {
				return disp.Errf("%s %s already specified", sub, k)
			}
			(*m)[k] = v
		case "memory":
			v, err := oneArg(disp)
			if err != nil {
				return err
			}
			var n int64
			n, err = units.RAMInBytes(v)
			if err != nil || n <= 0 {
				return disp.Errf("memory %q: want a size such as 512m or 1g", v)
			}
			d.MemoryBytes = n
		case "cpus":
			v, err := oneArg(disp)
			if err != nil {
				return err
			}
			var f float64
			f, err = strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return disp.Errf("cpus %q: want a positive number such as 1 or 0.5", v)
			}
			d.NanoCPUs = int64(f * 1e9)
		case "pids":
			v, err := oneArg(disp)
			if err != nil {
				return err
			}
			var n int64
			n, err = strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return disp.Errf("pids %q: want a positive whole number", v)
			}
			d.Pids = n
		case "reach_by_container_ip":
			if disp.NextArg() {
				return disp.ArgErr()
			}
			d.ReachByContainerIP = true
		case "ready_timeout":
			dur, err := durationArg(disp, false)
			if err != nil {
				return err
			}
			d.ReadyTimeout = time.Duration(dur)
		default:
			return disp.Errf("unknown docker provider subdirective %q", sub)
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*DockerProvider)(nil)
	_ caddyfile.Unmarshaler = (*DockerProvider)(nil)
	_ ProviderModule        = (*DockerProvider)(nil)
)
