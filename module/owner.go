package module

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agentsapi"
	"github.com/agcluster/caddy-agcluster/internal/caddyargs"
	"github.com/agcluster/caddy-agcluster/openai"
)

func init() {
	caddy.RegisterModule(OwnerHandler{})
	httpcaddyfile.RegisterHandlerDirective("agcluster_owner", parseOwnerDirective)
	// Right after the request rewrites, so that it comes before
	// rate_limit (which caddy-ratelimit puts just before basic_auth) and
	// wraps it whatever order the plug-ins are loaded in. The placeholder
	// is computed when it is read, so an owner taken from
	// {http.auth.user.id} still sees the user basic_auth or forward_auth
	// sets further on.
	httpcaddyfile.RegisterDirectiveOrder("agcluster_owner", httpcaddyfile.After, "try_files")
}

// OwnerPlaceholder is the placeholder agcluster_owner sets: the owner id
// sessions use, never the key it comes from.
const OwnerPlaceholder = "agcluster.owner"

// OwnerHandler sets the {agcluster.owner} placeholder for the handlers
// after it: the id the agcluster handler gives a request's owner (the
// SHA-256 of the bearer key, or of the Owner placeholder's value), so a
// rate_limit zone keyed on it never holds a raw API key. Requests with no
// owner (no key and no operator key, or an empty Owner placeholder) get
// an empty value.
//
// It also answers errors the handlers after it return (a rate_limit
// refusal is a 429 error, which Caddy would send with an empty body) the
// way OpenAI does, {"error": {"message", "type", "code"}}, keeping the
// headers they set (Retry-After), so OpenAI clients back off and retry.
// It does so only on the agcluster handler's own paths; errors on other
// paths pass on to Caddy unchanged.
type OwnerHandler struct {
	// Owner is the agcluster handler's owner setting: a placeholder such
	// as "{http.auth.user.id}", or empty for the bearer key's hash. Give
	// both handlers the same value.
	Owner string `json:"owner,omitempty"`
	// APIKey is the agcluster handler's api_key setting (the operator's
	// key for requests without one): requests without a key are owned by
	// its hash. Give both handlers the same value.
	APIKey string `json:"api_key,omitempty"`

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (OwnerHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.agcluster_owner",
		New: func() caddy.Module { return new(OwnerHandler) },
	}
}

// Provision sets up the logger.
func (o *OwnerHandler) Provision(ctx caddy.Context) error {
	o.logger = ctx.Logger()
	return nil
}

// ServeHTTP sets the placeholder, calls the next handler and renders the
// error it returns on the API's paths.
func (o *OwnerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := replacerOf(r)
	// Computed when read, so it reflects what the handlers in between set
	// (an authenticated user id); the key is hashed, never stored.
	repl.Map(func(key string) (any, bool) {
		if key != OwnerPlaceholder {
			return nil, false
		}
		return o.owner(r, repl), true
	})
	err := next.ServeHTTP(w, r)
	if err == nil || !claimsPath(r.URL.Path) {
		return err
	}
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) {
		return err
	}
	o.errorFor(r, w.Header(), he).Write(w)
	return nil
}

// owner is the request's owner id, or "" when it has none.
func (o *OwnerHandler) owner(r *http.Request, repl *caddy.Replacer) string {
	key := requestKey(r, repl, "", o.APIKey)
	if key == "" {
		return ""
	}
	id, oerr := ownerID(repl, o.Owner, key)
	if oerr != nil {
		return ""
	}
	return id
}

// errorFor turns a handler's error into the OpenAI error for its status:
// 429 a rate_limit_error naming the Retry-After delay, 401 an
// authentication_error, other 4xx an invalid_request_error, 5xx an
// api_error naming the request id under which the detail is logged.
func (o *OwnerHandler) errorFor(r *http.Request, h http.Header, he caddyhttp.HandlerError) *openai.Error {
	status := he.StatusCode
	switch {
	case status == http.StatusTooManyRequests:
		msg := "Rate limit reached for requests."
		if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil {
			msg = "Rate limit reached for requests; retry after " + strconv.Itoa(s) + " s."
		}
		return openai.RateLimited(msg)
	case status == http.StatusUnauthorized:
		return openai.Unauthorized("The request is not authenticated.")
	case status >= 400 && status < 500:
		e := openai.BadRequest(http.StatusText(status)+".", "")
		e.Status = status
		return e
	}
	e := openai.Internal("The gateway failed to handle the request; try again, or tell its operator.")
	e = agentsapi.Internal(o.logger, r, e, "handler error", he)
	if status >= 500 && status < 600 {
		e.Status = status
	}
	return e
}

// claimsPath tells whether path is one the agcluster handler serves (see
// Handler.ServeHTTP): its errors are the API's.
func claimsPath(path string) bool {
	switch strings.TrimPrefix(path, "/v1") {
	case "/chat/completions", "/models":
		return true
	}
	return path == "/health" || agentsapi.Handles(path)
}

// requestKey is the request's API key: the bearer key (or x-api-key),
// then bodyKey, then the operator's key (a placeholder); "" for none.
func requestKey(r *http.Request, repl *caddy.Replacer, bodyKey, operatorKey string) string {
	if key := bearerKey(r); key != "" {
		return key
	}
	if bodyKey != "" {
		return bodyKey
	}
	if operatorKey != "" {
		return repl.ReplaceAll(operatorKey, "")
	}
	return ""
}

// ownerID is the owner id of a request with key: the hash of the owner
// placeholder's value when one is configured (an error when it is
// empty), else the key's hash.
func ownerID(repl *caddy.Replacer, ownerPlaceholder, key string) (string, *openai.Error) {
	if ownerPlaceholder == "" {
		return hashHex("key:" + key), nil
	}
	v := repl.ReplaceAll(ownerPlaceholder, "")
	if v == "" {
		return "", openai.Unauthorized("the request is not authenticated: no owner for " + ownerPlaceholder)
	}
	return hashHex("user:" + v), nil
}

// replacerOf is the request's replacer (a new one outside a Caddy server).
func replacerOf(r *http.Request) *caddy.Replacer {
	if repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); repl != nil {
		return repl
	}
	return caddy.NewReplacer()
}

func parseOwnerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	o := new(OwnerHandler)
	if err := o.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return o, nil
}

// UnmarshalCaddyfile sets up the handler from its directive. Syntax:
//
//	agcluster_owner {
//	    owner <placeholder>    # as the agcluster handler's owner; default: hash of the bearer key
//	    api_key <key>          # as the agcluster handler's api_key
//	}
func (o *OwnerHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return eachSubdirective(d, func(sub string) error {
		switch sub {
		case "owner":
			return caddyargs.String(d, &o.Owner)
		case "api_key":
			return caddyargs.String(d, &o.APIKey)
		}
		return d.Errf("unknown agcluster_owner subdirective %q", sub)
	})
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*OwnerHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*OwnerHandler)(nil)
	_ caddyfile.Unmarshaler       = (*OwnerHandler)(nil)
)
