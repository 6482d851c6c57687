package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// dockerSocket is the local engine's socket, which the gateway container
// gets mounted.
const dockerSocket = "/var/run/docker.sock"

// TestGatewayImage: the image `make gateway-image` builds runs as a
// non-root user with /data and /config as volumes, and, given the engine's
// socket (and its group) and the test's Caddyfile, serves a streamed turn
// whose agent it starts on the local engine. It shares the host's network
// namespace, as deploy/compose.yaml runs it: it binds 127.0.0.1 only and
// reaches the agents at the ports they publish on 127.0.0.1, so they stay
// on their own network, out of each other's reach. Stopping it removes the
// agent it started.
func TestGatewayImage(t *testing.T) {
	e := setup(t)
	image := testenv.GatewayImage()
	if _, err := e.docker.ImageInspect(context.Background(), image); err != nil {
		t.Fatalf("image %s is not available (%v); run `make gateway-image`", image, err)
	}
	info, err := e.docker.ImageInspect(context.Background(), image)
	require.NoError(t, err)
	assert.Equal(t, "caddy", info.Config.User, "Caddy runs unprivileged")
	assert.Contains(t, info.Config.Volumes, "/data")
	assert.Contains(t, info.Config.Volumes, "/config")

	addr, adminAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	runID := testenv.RandomHex(6)
	cfg := e.caddyfile(addr[strings.LastIndex(addr, ":")+1:], adminAddr, runID,
		gatewayOptions{idle: "30m", maxSessions: "10", global: "default_bind 127.0.0.1"})
	cfgPath := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(dockerSocket, &st))

	id := testenv.RunContainer(t, e.docker, "agcluster-test-gateway-"+runID, &container.Config{
		Image: image,
	}, &container.HostConfig{
		NetworkMode: "host",
		GroupAdd:    []string{strconv.FormatUint(uint64(st.Gid), 10)},
		Mounts: []mount.Mount{
			{Type: mount.TypeBind, Source: cfgPath, Target: "/etc/caddy/Caddyfile", ReadOnly: true},
			{Type: mount.TypeBind, Source: dockerSocket, Target: dockerSocket},
		},
	}, nil)
	// Before RunContainer's removal: a graceful stop, in which Caddy
	// removes its sessions (shutdown destroy).
	t.Cleanup(func() {
		timeout := 60
		assert.NoError(t, e.docker.ContainerStop(context.Background(), id, container.StopOptions{Timeout: &timeout}))
		if t.Failed() {
			t.Logf("gateway logs:\n%s", testenv.ContainerLogs(e.docker, id))
		}
		assert.Empty(t, e.containers(t, runID), "agents left after the gateway stopped")
		assert.Empty(t, e.volumes(t, runID), "volumes left after the gateway stopped")
		e.forceRemove(runID)
	})
	g := &gateway{url: "http://" + addr}
	testenv.Eventually(t, time.Minute, func() bool {
		resp, err := http.Get(g.url + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "the gateway container never answered /health; logs:\n%s", testenv.ContainerLogs(e.docker, id))

	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Served from the gateway image.", ChunkChars: 6}})
	c := openai.NewClient(option.WithBaseURL(g.url+"/v1"), option.WithAPIKey("sk-ant-test-gateway-image"), option.WithMaxRetries(0))
	got, err := streamed(t, c, user("Hello, image."), conv("c-image"))
	require.NoError(t, err, "logs:\n%s", testenv.ContainerLogs(e.docker, id))
	require.Len(t, got.Choices, 1)
	assert.Equal(t, "Served from the gateway image.", got.Choices[0].Message.Content)
	assert.Len(t, e.containers(t, runID), 1, "the gateway started the conversation's agent on the engine")
}
