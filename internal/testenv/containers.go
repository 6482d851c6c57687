package testenv

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// MockAlias is the name agents on a test network reach the mock by.
const MockAlias = "mock-anthropic"

// StartMockContainer runs the mock Anthropic API image on netName under the
// alias "mock-anthropic", publishes its port on 127.0.0.1 for the test's
// control calls, and removes it when the test ends.
func StartMockContainer(t testing.TB, cli *client.Client, netName string) *anthropictest.Remote {
	t.Helper()
	RequireImage(t, cli, MockImage())
	name := "agcluster-test-mock-" + RandomHex(4)
	id := RunContainer(t, cli, name,
		&container.Config{Image: MockImage(), ExposedPorts: nat.PortSet{"8080/tcp": {}},
			Labels: map[string]string{"agcluster.test": "true"}},
		&container.HostConfig{
			PortBindings:   nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1", HostPort: ""}}},
			CapDrop:        []string{"ALL"},
			SecurityOpt:    []string{"no-new-privileges:true"},
			ReadonlyRootfs: true,
		},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			netName: {Aliases: []string{MockAlias}},
		}})
	port := PublishedPort(t, cli, id, "8080/tcp")
	m := &anthropictest.Remote{BaseURL: "http://127.0.0.1:" + port}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.WaitHealthy(ctx); err != nil {
		t.Fatalf("mock container not healthy: %v\n%s", err, ContainerLogs(cli, id))
	}
	return m
}

// RunContainer creates and starts a container and force-removes it (with
// its anonymous volumes) when the test ends. It returns the container id.
func RunContainer(t testing.TB, cli *client.Client, name string, cfg *container.Config, host *container.HostConfig, netCfg *network.NetworkingConfig) string {
	t.Helper()
	ctx := context.Background()
	created, err := cli.ContainerCreate(ctx, cfg, host, netCfg, nil, name)
	if err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	})
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container %s: %v", name, err)
	}
	return created.ID
}

// Volume creates a named volume removed when the test ends (after the
// containers using it, since cleanups run last-in first-out).
func Volume(t testing.TB, cli *client.Client) string {
	t.Helper()
	name := "agcluster-test-ws-" + RandomHex(4)
	if _, err := cli.VolumeCreate(context.Background(), volume.CreateOptions{
		Name: name, Labels: map[string]string{"agcluster.test": "true"},
	}); err != nil {
		t.Fatalf("create volume: %v", err)
	}
	t.Cleanup(func() { _ = cli.VolumeRemove(context.Background(), name, true) })
	return name
}

// VolumeMount mounts volume name at target.
func VolumeMount(name, target string) mount.Mount {
	return mount.Mount{Type: mount.TypeVolume, Source: name, Target: target}
}

// PublishedPort returns the 127.0.0.1 host port published for port.
func PublishedPort(t testing.TB, cli *client.Client, id string, port nat.Port) string {
	t.Helper()
	info, err := cli.ContainerInspect(context.Background(), id)
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	for _, b := range info.NetworkSettings.Ports[port] {
		if b.HostIP == "127.0.0.1" && b.HostPort != "" {
			return b.HostPort
		}
	}
	t.Fatalf("container %s publishes no 127.0.0.1 port for %s: %v", id, port, info.NetworkSettings.Ports)
	return ""
}

// ContainerLogs returns a container's stdout and stderr, for failure messages.
func ContainerLogs(cli *client.Client, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "200"})
	if err != nil {
		return fmt.Sprintf("(no logs: %v)", err)
	}
	defer rc.Close()
	var out strings.Builder
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil && err != io.EOF {
		fmt.Fprintf(&out, "(log read error: %v)", err)
	}
	return out.String()
}
