// Package emuengine connects a platform emulator to the Docker engine
// whose containers stand for the platform's machines or sandboxes.
package emuengine

import (
	"context"
	"fmt"

	"github.com/docker/docker/client"
)

// Engine is an emulator's Docker engine.
type Engine struct {
	// Client talks to the engine.
	Client *client.Client
	// Own tells that Connect made Client, so the emulator closes it.
	Own bool
	// NCPU is the engine's CPU count (at least 1): the most CPUs a
	// container may be given.
	NCPU int
}

// Connect uses cli, or makes a client from the environment when cli is
// nil, and checks that the engine answers. Errors start with who.
func Connect(ctx context.Context, who string, cli *client.Client) (Engine, error) {
	e := Engine{Client: cli}
	if cli == nil {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return Engine{}, fmt.Errorf("%s: docker client: %w", who, err)
		}
		e.Client, e.Own = c, true
	}
	info, err := e.Client.Info(ctx)
	if err != nil {
		if e.Own {
			_ = e.Client.Close()
		}
		return Engine{}, fmt.Errorf("%s: docker engine: %w", who, err)
	}
	e.NCPU = max(info.NCPU, 1)
	return e, nil
}
