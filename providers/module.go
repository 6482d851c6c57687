package providers

import "go.uber.org/zap"

// Module is what a provider's Caddy guest module (agcluster.providers.<kind>)
// implements: after Caddy has provisioned it from its JSON or Caddyfile, the
// agcluster app asks it for the provider under the name the configuration
// gives it. The app keeps provider values across config reloads while a
// provider's name and configuration stay the same, so NewProvider must be
// fast and must not contact the backend.
type Module interface {
	// NewProvider returns a provider named name (Provider.Name), logging
	// to logger.
	NewProvider(name string, logger *zap.Logger) (Provider, error)
}
