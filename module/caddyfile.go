package module

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/agcluster/caddy-agcluster/internal/caddyargs"
	"github.com/agcluster/caddy-agcluster/openai"
	"github.com/agcluster/caddy-agcluster/providers"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("agcluster", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("agcluster", parseHandlerDirective)
	// After basic_auth, forward_auth and rate_limit, so they guard it.
	httpcaddyfile.RegisterDirectiveOrder("agcluster", httpcaddyfile.Before, "reverse_proxy")
}

func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "agcluster", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the app from the global option. Syntax:
//
//	agcluster {
//	    provider [<name>] <kind> {     # repeatable; name defaults to the kind (default: one docker provider)
//	        ...                        # the provider's own options
//	    }
//	    default_provider <name>        # sessions' provider unless a config or launch names one (default: the only one)
//	    idle_timeout <duration>        # put idle agents to sleep (default 30m; 0 = never)
//	    retention <duration>           # remove conversations asleep this long (default 7d; 0 = until deleted)
//	    max_sessions <n>               # live agents in total (default 100; 0 = no cap)
//	    max_sessions_per_owner <n>     # live agents per owner (default 0 = no cap)
//	    max_conversations <n>          # conversations, awake or asleep, in total (default 0 = no cap)
//	    max_conversations_per_owner <n> # conversations, awake or asleep, per owner (default 0 = no cap)
//	    anthropic_base_url <url>       # for the gateway's own one-shot calls
//	    configs <dir>                  # custom agent configurations (*.json) next to the presets
//	    turn_timeout <duration>        # stop a turn that runs longer (default 30m)
//	    shutdown keep|destroy          # what happens to sessions when Caddy exits (default keep)
//	    warm_pool <config> <n> [<provider>]  # keep n ready agents of a configuration (repeatable)
//	    warm_pool_max <n>              # ready agents over all configurations (default: the sum)
//	    warm_pool_min_free_memory <size>|off  # stop and shrink the pool below this available memory (default 1GiB)
//	    warm_pool_check_interval <duration>   # health and memory checks of ready agents (default 5s)
//	    usage_store <path>             # usage database (default agcluster/usage.db in Caddy's data directory)
//	    owner_quota [<config>] {       # each owner's daily quota (UTC), over all configurations or for one (repeatable)
//	        tokens_per_day <n>         # input, output, cache read and cache write tokens
//	        cost_per_day <usd>         # the CLI's cost estimate, e.g. 2.50
//	        agent_hours_per_day <n>    # agent time held by turns, e.g. 1.5
//	        conversations <n>          # conversations started per day
//	    }
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return eachSubdirective(d, func(sub string) error {
		switch sub {
		case "provider":
			return a.unmarshalProvider(d)
		case "default_provider":
			v, err := caddyargs.One(d)
			if err != nil {
				return err
			}
			a.DefaultProvider = v
		case "idle_timeout":
			dur, err := caddyargs.Duration(d, true)
			if err != nil {
				return err
			}
			a.IdleTimeout = &dur
		case "retention":
			dur, err := caddyargs.Duration(d, true)
			if err != nil {
				return err
			}
			a.Retention = &dur
		case "max_sessions":
			n, err := caddyargs.Limit(d)
			if err != nil {
				return err
			}
			a.MaxSessions = &n
		case "max_sessions_per_owner":
			n, err := caddyargs.Limit(d)
			a.MaxSessionsPerOwner = n
			return err
		case "max_conversations":
			n, err := caddyargs.Limit(d)
			a.MaxConversations = n
			return err
		case "max_conversations_per_owner":
			n, err := caddyargs.Limit(d)
			a.MaxConversationsPerOwner = n
			return err
		case "anthropic_base_url":
			if !d.AllArgs(&a.AnthropicBaseURL) {
				return d.ArgErr()
			}
		case "turn_timeout":
			dur, err := caddyargs.Duration(d, false)
			if err != nil {
				return err
			}
			a.TurnTimeout = dur
		case "configs":
			if !d.AllArgs(&a.ConfigsDir) {
				return d.ArgErr()
			}
		case "warm_pool":
			args := d.RemainingArgs()
			if len(args) != 2 && len(args) != 3 {
				return d.ArgErr()
			}
			id, v := args[0], args[1]
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("warm_pool %s %q: want a whole number of agents", id, v)
			}
			if len(args) == 3 {
				id += "@" + args[2]
			}
			wp := a.warmPool()
			if wp.Sizes == nil {
				wp.Sizes = map[string]int{}
			}
			if _, dup := wp.Sizes[id]; dup {
				return d.Errf("warm_pool %s: given twice", id)
			}
			wp.Sizes[id] = n
		case "warm_pool_max":
			v, err := caddyargs.One(d)
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("warm_pool_max %q: want a whole number, 0 for no cap", v)
			}
			a.warmPool().Max = n
		case "warm_pool_min_free_memory":
			v, err := caddyargs.One(d)
			if err != nil {
				return err
			}
			if v == "off" {
				a.warmPool().MinFreeMemory = -1
				break
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 {
				return d.Errf("warm_pool_min_free_memory %q: want a size such as 2GiB, or off", v)
			}
			a.warmPool().MinFreeMemory = int64(n)
		case "warm_pool_check_interval":
			dur, err := caddyargs.Duration(d, false)
			if err != nil {
				return err
			}
			a.warmPool().CheckInterval = dur
		case "usage_store":
			return caddyargs.String(d, &a.UsageStore)
		case "owner_quota":
			return a.unmarshalQuota(d)
		case "shutdown":
			if !d.AllArgs(&a.Shutdown) {
				return d.ArgErr()
			}
			if a.Shutdown != "keep" && a.Shutdown != "destroy" {
				return d.Errf("shutdown %q: want keep or destroy", a.Shutdown)
			}
		default:
			return d.Errf("unknown agcluster subdirective %q", sub)
		}
		return nil
	})
}

// unmarshalProvider reads `provider [<name>] <kind> { ... }`: the kind's
// guest module parses its own block.
func (a *App) unmarshalProvider(d *caddyfile.Dispenser) error {
	args := []string{}
	for d.NextArg() {
		args = append(args, d.Val())
		if len(args) == 2 {
			break
		}
	}
	if len(args) == 0 {
		return d.ArgErr()
	}
	name, kind := args[0], args[len(args)-1]
	// The module's own parsing starts at the kind token.
	unm, err := caddyfile.UnmarshalModule(d, "agcluster.providers."+kind)
	if err != nil {
		return err
	}
	if _, ok := unm.(providers.Module); !ok {
		return d.Errf("provider %s: module agcluster.providers.%s is not an agcluster provider", name, kind)
	}
	if _, dup := a.ProvidersRaw[name]; dup {
		return d.Errf("provider %s: a provider of that name is already configured", name)
	}
	if a.ProvidersRaw == nil {
		a.ProvidersRaw = map[string]json.RawMessage{}
	}
	a.ProvidersRaw[name] = caddyconfig.JSONModuleObject(unm, "kind", kind, nil)
	return nil
}

func (a *App) warmPool() *WarmPool {
	if a.WarmPool == nil {
		a.WarmPool = new(WarmPool)
	}
	return a.WarmPool
}

// UnmarshalCaddyfile sets up the handler from the site directive. Syntax:
//
//	agcluster {
//	    owner <placeholder>                  # e.g. {http.auth.user.id}; default: hash of the bearer key
//	    conversation_headers <header...>     # default X-Conversation-ID X-Session-ID X-OpenWebUI-Chat-Id
//	    api_key <key>                        # operator key for requests without one, e.g. {env.ANTHROPIC_API_KEY}
//	    reasoning on|off                     # thinking as reasoning_content (default on)
//	    tools off|summary|full               # tool activity in the answer (default summary)
//	    task_models <model...>               # models answered one-shot, e.g. LibreChat's titleModel
//	    task_prompts <prefix...>|off         # message beginnings answered one-shot (default: LibreChat's title prompts)
//	    direct_model <model>                 # Anthropic model for one-shot calls (default claude-haiku-4-5)
//	    max_request_body <size>              # default 32MiB
//	    fetch_images <host...>               # fetch https image URLs from these hosts (*.example.com: subdomains)
//	    keep_alive <duration>                # silence before a keep-alive comment (default 10s)
//	    dashboard <path>                     # operator dashboard at this path (protect it with Caddy's auth)
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return eachSubdirective(d, func(sub string) error {
		switch sub {
		case "owner":
			if !d.AllArgs(&h.Owner) {
				return d.ArgErr()
			}
		case "conversation_headers":
			h.ConversationHeaders = d.RemainingArgs()
			if len(h.ConversationHeaders) == 0 {
				return d.ArgErr()
			}
		case "api_key":
			if !d.AllArgs(&h.APIKey) {
				return d.ArgErr()
			}
		case "reasoning":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch v {
			case "on":
				h.Reasoning = ptr(true)
			case "off":
				h.Reasoning = ptr(false)
			default:
				return d.Errf("reasoning %q: want on or off", v)
			}
		case "tools":
			if !d.AllArgs(&h.Tools) {
				return d.ArgErr()
			}
			if _, err := openai.ParseToolRendering(h.Tools); err != nil {
				return d.Errf("tools: %v", err)
			}
		case "task_models":
			h.TaskModels = d.RemainingArgs()
			if len(h.TaskModels) == 0 {
				return d.ArgErr()
			}
		case "task_prompts":
			h.TaskPrompts = d.RemainingArgs()
			if len(h.TaskPrompts) == 0 {
				return d.ArgErr()
			}
		case "direct_model":
			if !d.AllArgs(&h.DirectModel) {
				return d.ArgErr()
			}
		case "max_request_body":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 {
				return d.Errf("max_request_body %q: want a size such as 32MiB", v)
			}
			h.MaxRequestBody = int64(n)
		case "fetch_images":
			h.FetchImageHosts = d.RemainingArgs()
			if len(h.FetchImageHosts) == 0 {
				return d.ArgErr()
			}
		case "keep_alive":
			dur, err := caddyargs.Duration(d, false)
			if err != nil {
				return err
			}
			h.KeepAlive = dur
		case "dashboard":
			if err := caddyargs.String(d, &h.Dashboard); err != nil {
				return err
			}
			if !strings.HasPrefix(h.Dashboard, "/") {
				return d.Errf("dashboard %q: want a path such as /ops", h.Dashboard)
			}
		default:
			return d.Errf("unknown agcluster subdirective %q", sub)
		}
		return nil
	})
}

// repeatable are the subdirectives that may be given more than once.
var repeatable = []string{"warm_pool", "provider", "owner_quota"}

// eachSubdirective reads the directive's block (caddyargs.Subdirectives).
func eachSubdirective(d *caddyfile.Dispenser, fn func(sub string) error) error {
	return caddyargs.Subdirectives(d, repeatable, fn)
}

func ptr[T any](v T) *T { return &v }

// Interface guards.
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
