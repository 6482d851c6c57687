// Package all registers every agent provider's Caddy guest module
// (agcluster.providers.<kind>). Its only job is to import each provider
// package for its side effect, the way caddyhttp/standard imports Caddy's
// standard HTTP modules: a new provider is added here with one line.
package all

import (
	// The Cloudflare Containers provider: agcluster.providers.cloudflare.
	_ "github.com/agcluster/caddy-agcluster/providers/cloudflare"
	// The Docker provider: agcluster.providers.docker.
	_ "github.com/agcluster/caddy-agcluster/providers/docker"
	// The Fly Machines provider: agcluster.providers.fly.
	_ "github.com/agcluster/caddy-agcluster/providers/fly"
	// The Kubernetes provider: agcluster.providers.kubernetes.
	_ "github.com/agcluster/caddy-agcluster/providers/kubernetes"
	// The Vercel Sandbox provider: agcluster.providers.vercel.
	_ "github.com/agcluster/caddy-agcluster/providers/vercel"
)
