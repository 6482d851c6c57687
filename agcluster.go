// Package agcluster is the caddy-agcluster plugin. Importing it registers
// its Caddy modules; build Caddy with it using xcaddy:
//
//	xcaddy build --with github.com/agcluster/caddy-agcluster
package agcluster

import (
	// The app, the HTTP handler, the provider guest modules and their
	// Caddyfile syntax.
	_ "github.com/agcluster/caddy-agcluster/module"
)
