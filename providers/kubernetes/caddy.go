package kubernetes

import (
	"strings"

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

// Module is the agcluster.providers.kubernetes guest module: it runs each
// agent as a pod in one namespace of a Kubernetes cluster. Its JSON
// fields are those of [Options]; the app gives the provider its name.
type Module struct {
	Options
}

// CaddyModule returns the Caddy module information.
func (Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agcluster.providers.kubernetes",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision replaces placeholders ({env.X}, {file.X}) in the kubeconfig
// path, context, namespace, image and env values. It does not contact the
// cluster.
func (m *Module) Provision(caddy.Context) error {
	guestmod.ReplacePlaceholders(&m.Env, &m.Kubeconfig, &m.Context, &m.Namespace, &m.Image)
	return nil
}

// Validate checks the options as [New] will, so a bad configuration fails
// at load (and in caddy validate). It does not read the kubeconfig.
func (m *Module) Validate() error {
	_, err := m.Options.normalize()
	return err
}

// NewProvider returns a Kubernetes provider named name with the module's
// options. It loads the client configuration but does not contact the
// cluster.
func (m *Module) NewProvider(name string, logger *zap.Logger) (providers.Provider, error) {
	opts := m.Options
	opts.Name = name
	return guestmod.Provider(New(opts, logger))
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	provider kubernetes {
//	    kubeconfig <path>             # default: in-cluster config, then $KUBECONFIG, then ~/.kube/config
//	    context <name>                # kubeconfig context (default: its current one)
//	    namespace <ns>                # default agcluster (it must exist)
//	    image <ref>                   # the agent image (required)
//	    image_pull_policy Always|IfNotPresent|Never
//	    image_pull_secret <name>      # registry credentials in the namespace; repeatable
//	    runtime_class <name>          # e.g. gvisor or kata for a stronger sandbox
//	    storage_class <name>          # for the workspace claims (default: the cluster's default)
//	    workspace_size <size>         # each conversation's claim (default 1Gi)
//	    reach pod_ip|port_forward     # default pod_ip in the cluster, port_forward outside it
//	    cpus <n>                      # CPU limit, e.g. 1 or 500m (default 1; a quarter is requested)
//	    memory <size>                 # memory limit and request, e.g. 1Gi (default 1Gi)
//	    node_selector <key> <value>   # repeatable
//	    env <NAME> <value>            # passed to every agent (never an API key); repeatable
//	    network_policy {              # admit ingress to agents only from the gateway (needs an enforcing CNI)
//	        from_pods <key>=<value>...  # the gateway's pod labels
//	        from_namespace <ns>         # the gateway's namespace, if not the agents'
//	        from_cidr <cidr>...         # or the gateway's addresses
//	    }
//	    ready_timeout <duration>      # how long to wait for an agent (default 2m)
//	}
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return caddyargs.Subdirectives(d, []string{"env", "node_selector", "image_pull_secret"}, func(sub string) error {
		return m.subdirective(d, sub)
	})
}

// subdirective reads one subdirective of the provider block.
func (m *Module) subdirective(d *caddyfile.Dispenser, sub string) error {
	strs := map[string]*string{
		"kubeconfig": &m.Kubeconfig, "context": &m.Context, "namespace": &m.Namespace, "image": &m.Image,
		"image_pull_policy": &m.ImagePullPolicy, "runtime_class": &m.RuntimeClass, "storage_class": &m.StorageClass,
		"workspace_size": &m.WorkspaceSize, "reach": &m.Reach, "cpus": &m.CPUs, "memory": &m.Memory,
	}
	if dst, ok := strs[sub]; ok {
		return caddyargs.String(d, dst)
	}
	switch sub {
	case "env":
		return caddyargs.KeyValue(d, &m.Env)
	case "node_selector":
		return caddyargs.KeyValue(d, &m.NodeSelector)
	case "image_pull_secret":
		v, err := caddyargs.One(d)
		if err != nil {
			return err
		}
		m.ImagePullSecrets = append(m.ImagePullSecrets, v)
	case "network_policy":
		return m.networkPolicyBlock(d)
	case "ready_timeout":
		dur, err := caddyargs.Duration(d, false)
		if err != nil {
			return err
		}
		m.ReadyTimeout = dur
	default:
		return d.Errf("unknown kubernetes provider subdirective %q", sub)
	}
	return nil
}

// networkPolicyBlock reads the network_policy block.
func (m *Module) networkPolicyBlock(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	np := &NetworkPolicy{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch sub := d.Val(); sub {
		case "from_pods":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return d.Errf("from_pods %q: want <key>=<value>", a)
				}
				if np.FromPods == nil {
					np.FromPods = map[string]string{}
				}
				np.FromPods[k] = v
			}
		case "from_namespace":
			if err := caddyargs.String(d, &np.FromNamespace); err != nil {
				return err
			}
		case "from_cidr":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			np.FromCIDRs = append(np.FromCIDRs, args...)
		default:
			return d.Errf("unknown network_policy subdirective %q", sub)
		}
	}
	m.NetworkPolicy = np
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*Module)(nil)
	_ caddy.Validator       = (*Module)(nil)
	_ caddyfile.Unmarshaler = (*Module)(nil)
	_ providers.Module      = (*Module)(nil)
)
