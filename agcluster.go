// Package agcluster is the caddy-agcluster plugin. Importing it registers
// its Caddy modules; build Caddy with it using xcaddy:
//
//	xcaddy build --with github.com/agcluster/caddy-agcluster
package agcluster

import (
	// The app, the HTTP handler, the admin API and their Caddyfile syntax.
	_ "github.com/agcluster/caddy-agcluster/module"
	// Every provider's guest module.
	_ "github.com/agcluster/caddy-agcluster/providers/all"
)
