package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// composeService is the part of a resolved compose service the test reads.
type composeService struct {
	Image       string            `json:"image"`
	NetworkMode string            `json:"network_mode"`
	GroupAdd    []string          `json:"group_add"`
	Environment map[string]string `json:"environment"`
	ExtraHosts  []string          `json:"extra_hosts"`
	DependsOn   map[string]any    `json:"depends_on"`
	// Volumes are docker-compose 1.29's short syntax, source:target:mode.
	Volumes []string `json:"volumes"`
}

// mounts maps a service's mount targets to their sources.
func (s composeService) mounts() map[string]string {
	m := map[string]string{}
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			m[parts[1]] = parts[0]
		}
	}
	return m
}

// TestComposeFile: deploy/compose.yaml is valid for docker-compose (its
// `config` resolves it) and runs LibreChat's documented services next to
// the gateway image: the gateway on the host's network with the engine's
// socket and its group, /data and /config as volumes and deploy/Caddyfile;
// LibreChat with deploy/librechat.yaml, whose endpoint is where that
// Caddyfile listens (host.docker.internal, the host gateway, port 8080).
// deploy/Caddyfile adapts with the xcaddy build.
func TestComposeFile(t *testing.T) {
	testenv.Integration(t)
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose is not available (%v); apt-get install docker-compose", err)
	}
	deploy := filepath.Join(testenv.RepoRoot(), "deploy")
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(dockerSocket, &st))
	gid := strconv.FormatUint(uint64(st.Gid), 10)
	cmd := exec.Command(compose, "-f", filepath.Join(deploy, "compose.yaml"), "config")
	cmd.Env = append(os.Environ(), "DOCKER_GID="+gid, "CREDS_KEY=k", "CREDS_IV=i", "JWT_SECRET=j", "JWT_REFRESH_SECRET=r", "MEILI_MASTER_KEY=m")
	out, err := cmd.Output()
	require.NoError(t, err, "docker-compose config: %s", exitStderr(err))
	var resolved struct {
		Services map[string]composeService `json:"services"`
		Volumes  map[string]any            `json:"volumes"`
	}
	require.NoError(t, yaml.Unmarshal(out, &resolved))
	for _, name := range []string{"api", "mongodb", "meilisearch", "vectordb", "rag_api", "gateway"} {
		assert.Contains(t, resolved.Services, name)
	}

	gw := resolved.Services["gateway"]
	assert.Equal(t, testenv.GatewayImage(), gw.Image)
	assert.Equal(t, "host", gw.NetworkMode, "it reaches agents at their 127.0.0.1 ports")
	assert.Equal(t, []string{gid}, gw.GroupAdd, "the socket's group")
	m := gw.mounts()
	assert.Equal(t, dockerSocket, m[dockerSocket])
	assert.Equal(t, filepath.Join(deploy, "Caddyfile"), m["/etc/caddy/Caddyfile"])
	assert.Contains(t, resolved.Volumes, m["/data"])
	assert.Contains(t, resolved.Volumes, m["/config"])

	api := resolved.Services["api"]
	assert.Contains(t, api.DependsOn, "gateway")
	assert.Contains(t, api.ExtraHosts, "host.docker.internal:host-gateway")
	assert.Equal(t, filepath.Join(deploy, "librechat.yaml"), api.mounts()["/app/librechat.yaml"])
	assert.Equal(t, "/app/librechat.yaml", api.Environment["CONFIG_PATH"])

	src, err := os.ReadFile(filepath.Join(deploy, "librechat.yaml"))
	require.NoError(t, err)
	var lc struct {
		Endpoints struct {
			Custom []struct {
				Name, APIKey, BaseURL string
				Headers               map[string]string
			}
		}
	}
	require.NoError(t, yaml.Unmarshal(src, &lc))
	require.Len(t, lc.Endpoints.Custom, 1)
	ep := lc.Endpoints.Custom[0]
	assert.Equal(t, "user_provided", ep.APIKey)
	assert.Equal(t, "http://host.docker.internal:8080/v1", ep.BaseURL)
	assert.Equal(t, "{{LIBRECHAT_BODY_CONVERSATIONID}}", ep.Headers["X-Conversation-ID"])

	adapted, err := exec.Command(caddyBin(t), "adapt", "--config", filepath.Join(deploy, "Caddyfile")).Output()
	require.NoError(t, err, "caddy adapt deploy/Caddyfile: %s", exitStderr(err))
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	require.NoError(t, json.Unmarshal(adapted, &cfg))
	require.Len(t, cfg.Apps.HTTP.Servers, 1)
	for _, srv := range cfg.Apps.HTTP.Servers {
		assert.Equal(t, []string{"172.17.0.1:8080"}, srv.Listen, "the host gateway, where LibreChat's host.docker.internal points")
	}
	for _, handler := range []string{`"handler":"agcluster_owner"`, `"handler":"rate_limit"`, `"handler":"agcluster"`} {
		assert.Contains(t, string(adapted), handler)
	}
}

// exitStderr is the standard error of a failed command, if any.
func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}
