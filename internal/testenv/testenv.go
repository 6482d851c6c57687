// Package testenv finds the real components integration tests run against:
// the claude binary, the Docker engine, the project's images, and binaries
// built from this module.
//
// Integration tests are skipped under `go test -short`. Otherwise a missing
// component FAILS the test with what to run to provide it: CI must never
// turn a missing component into a skip.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
)

// ClaudeVersion is the pinned Claude Code CLI version (see Makefile).
const ClaudeVersion = "2.1.328"

// Integration marks a test as needing real components: skipped under
// -short, run otherwise.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
}

// missing fails the test: a component it needs is absent.
func missing(t testing.TB, what, fix string, err error) {
	t.Helper()
	t.Fatalf("%s is not available (%v); %s", what, err, fix)
}

// ClaudeBin returns the path of the pinned claude binary: $CLAUDE_BIN, or
// the cache that scripts/fetch-claude.sh fills.
func ClaudeBin(t testing.TB) string {
	t.Helper()
	Integration(t)
	p := os.Getenv("CLAUDE_BIN")
	if p == "" {
		cache := os.Getenv("AGCLUSTER_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "agcluster")
		}
		p = filepath.Join(cache, "claude-"+ClaudeVersion, "claude")
	}
	if _, err := os.Stat(p); err != nil {
		missing(t, "the claude binary", "run `make claude` (scripts/fetch-claude.sh) or set CLAUDE_BIN", err)
	}
	return p
}

// RepoRoot is the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// GoBinary builds the main package pkg (relative to the module root, e.g.
// "./agent/cmd/agcluster-agent") once per test process and returns its path.
func GoBinary(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildCache[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "agcluster-bin-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[pkg] = out
	return out
}

// Docker returns a client for the local engine, failing the test when no
// engine answers.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	Integration(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		missing(t, "the Docker engine", "run scripts/ensure-docker.sh", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		missing(t, "the Docker engine", "run scripts/ensure-docker.sh", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// AgentImage is the agent image under test ($AGENT_IMAGE or agcluster/agent:latest).
func AgentImage() string { return envOr("AGENT_IMAGE", "agcluster/agent:latest") }

// BaseImage is the plain Debian image without the agent that `make
// base-image` builds ($BASE_IMAGE or agcluster/base:bookworm): the Vercel
// emulator's sandboxes start from it.
func BaseImage() string { return envOr("BASE_IMAGE", "agcluster/base:bookworm") }

// MockImage is the mock Anthropic API image ($MOCK_IMAGE or agcluster/mock-anthropic:latest).
func MockImage() string { return envOr("MOCK_IMAGE", "agcluster/mock-anthropic:latest") }

// GatewayImage is the gateway image `make gateway-image` builds ($GATEWAY_IMAGE
// or agcluster/gateway:latest).
func GatewayImage() string { return envOr("GATEWAY_IMAGE", "agcluster/gateway:latest") }

// RequireImage fails the test when image is not in the local engine.
func RequireImage(t testing.TB, cli *client.Client, image string) {
	t.Helper()
	if _, err := cli.ImageInspect(context.Background(), image); err != nil {
		missing(t, "image "+image, "run `make image`", err)
	}
}

// TestNetwork creates a Docker bridge network for this test and removes it
// afterwards. Containers on it reach each other by name; nothing else does.
func TestNetwork(t testing.TB, cli *client.Client) string {
	t.Helper()
	name := "agcluster-test-" + RandomHex(4)
	ctx := context.Background()
	if _, err := cli.NetworkCreate(ctx, name, network.CreateOptions{
		Driver: "bridge",
		Labels: map[string]string{"agcluster.test": "true"},
	}); err != nil {
		t.Fatalf("create network %s: %v", name, err)
	}
	t.Cleanup(func() { _ = cli.NetworkRemove(context.Background(), name) })
	return name
}

// RandomHex returns n random bytes as hex.
func RandomHex(n int) string { return randhex.String(n) }

// FreeAddr returns a free 127.0.0.1:port address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Eventually polls cond with a growing backoff until it holds or timeout
// passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, fmt.Sprintf(msg, args...))
		}
		time.Sleep(wait)
		wait = min(wait*2, 250*time.Millisecond)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// SyncBuffer is a bytes buffer safe for concurrent writers, for capturing
// a subprocess's output.
type SyncBuffer struct {
	mu sync.Mutex
	b  []byte
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// MedianMS is the median of ds in milliseconds (0 for none).
func MedianMS(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return float64(m) / float64(time.Millisecond)
}
