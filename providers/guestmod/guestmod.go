// Package guestmod holds what every provider's Caddy guest module
// (agcluster.providers.*) does the same way: replacing placeholders at
// provision and handing the app a provider built by the provider's New.
package guestmod

import (
	"maps"

	"github.com/caddyserver/caddy/v2"

	"github.com/agcluster/caddy-agcluster/providers"
)

// ReplacePlaceholders replaces the placeholders ({env.X}, {file.X}) in
// each of strs and in the values of *env. *env is replaced by a copy, so
// that the module's configuration is never shared with what it was
// decoded from; a nil map stays nil.
func ReplacePlaceholders(env *map[string]string, strs ...*string) {
	repl := caddy.NewReplacer()
	for _, s := range strs {
		*s = repl.ReplaceAll(*s, "")
	}
	if *env == nil {
		return
	}
	out := maps.Clone(*env)
	for k, v := range out {
		out[k] = repl.ReplaceAll(v, "")
	}
	*env = out
}

// Provider returns what a provider's New returned as a
// providers.Provider: nil (not a typed nil) with New's error.
func Provider[P providers.Provider](p P, err error) (providers.Provider, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}
