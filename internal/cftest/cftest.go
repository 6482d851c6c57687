// Package cftest gives tests the agcluster Worker (providers/cloudflare/worker)
// running for real under `wrangler dev` (scripts/cloudflare-dev.sh): the
// Worker in Cloudflare's runtime (workerd) with real Durable Objects and a
// simulated R2, its agent containers on the local Docker engine, offline.
// It is started once per test binary, on first use, and stopped when the
// binary's tests are done: a package that uses it runs its tests through
// [Main] from its TestMain.
//
// The agent containers live on a Docker network of the Worker's own (see
// dockerProxy) with their ports on 127.0.0.1; [Worker.HostAddr] is the
// host's address there, the only one they reach the host at: a server
// they must reach (the mock Anthropic API) is relayed there with
// testenv.Forward. The container image is the agent image with the
// checkout's agcluster-agent binary (AGCLUSTER_AGENT_BINARY), so the tests
// run the agent of the tree even when the agent image predates it.
//
// Like testenv, tests are skipped under `go test -short`; otherwise a
// Worker that cannot be had FAILS the test with the script's output.
package cftest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// LabelRun marks every container the Worker of one test binary creates.
const LabelRun = "agcluster.cftest"

// startTimeout bounds the script's start: a fresh machine installs
// wrangler first.
const startTimeout = 10 * time.Minute

// Worker is the running Worker.
type Worker struct {
	// URL is the Worker's address, http://127.0.0.1:<port>.
	URL string
	// Secret is the shared secret it requires.
	Secret string
	// Network is the Docker network its agent containers are on.
	Network string
	// HostAddr is the host's address on Network: agents reach the host
	// there only.
	HostAddr string
	// StateDir is where wrangler keeps the Durable Objects' storage and
	// R2's objects (--persist-to).
	StateDir string
	// Run is the value of LabelRun on its containers.
	Run string

	docker *client.Client
	dir    string // the binary's temporary directory
	proxy  *dockerProxy
	cmd    *exec.Cmd
	exited chan struct{}
	logs   testenv.SyncBuffer
}

var (
	startOnce sync.Once
	started   *Worker
	startErr  error
)

// Start returns the Worker, starting it on first use (once per test
// binary). It fails the test when the Worker cannot be started. The
// binary's TestMain must run its tests through [Main].
func Start(t testing.TB) *Worker {
	t.Helper()
	testenv.Integration(t)
	cli := testenv.Docker(t)
	testenv.RequireImage(t, cli, testenv.AgentImage())
	agentBin := testenv.GoBinary(t, "./agent/cmd/agcluster-agent")
	startOnce.Do(func() {
		if started, startErr = start(agentBin); startErr != nil {
			started = nil // start stopped what it made
		}
	})
	if startErr != nil {
		t.Fatalf("the Cloudflare Worker is not available: %v", startErr)
	}
	return started
}

// Main runs the tests of m, then stops the Worker if a test started it:
// wrangler removes its containers, cftest its network. A container of the
// Worker's left behind fails the run. It returns the exit code.
func Main(m *testing.M) int {
	code := m.Run()
	if started == nil {
		return code
	}
	if err := started.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "cftest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// start makes the network, the Docker proxy and the Worker.
func start(agentBin string) (w *Worker, err error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	dir, err := os.MkdirTemp("", "agcluster-cftest-")
	if err != nil {
		return nil, err
	}
	w = &Worker{docker: cli, dir: dir, Run: testenv.RandomHex(6), Secret: "cftest-" + testenv.RandomHex(24),
		StateDir: filepath.Join(dir, "state"), exited: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.stop())
		}
	}()
	if err := w.makeNetwork(); err != nil {
		return w, err
	}
	if w.proxy, err = startDockerProxy(cli, dir, w.Network, w.HostAddr, w.Run); err != nil {
		return w, err
	}
	return w, w.startScript(agentBin)
}

// makeNetwork creates the agents' network and learns the host's address
// on it.
func (w *Worker) makeNetwork() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.Network = "agcluster-cftest-" + w.Run
	if _, err := w.docker.NetworkCreate(ctx, w.Network, network.CreateOptions{
		Driver: "bridge", Labels: map[string]string{"agcluster.test": "true", LabelRun: w.Run},
	}); err != nil {
		w.Network = ""
		return fmt.Errorf("create network: %w", err)
	}
	info, err := w.docker.NetworkInspect(ctx, w.Network, network.InspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", w.Network, err)
	}
	for _, c := range info.IPAM.Config {
		if c.Gateway != "" && !strings.Contains(c.Gateway, ":") {
			w.HostAddr = c.Gateway
			return nil
		}
	}
	return fmt.Errorf("network %s has no IPv4 gateway: %+v", w.Network, info.IPAM.Config)
}

// startScript runs scripts/cloudflare-dev.sh and waits until it says the
// Worker is ready.
func (w *Worker) startScript(agentBin string) error {
	addr := freeAddr()
	port := addr[strings.LastIndex(addr, ":")+1:]
	w.URL = "http://" + addr
	w.cmd = exec.Command(filepath.Join(testenv.RepoRoot(), "scripts", "cloudflare-dev.sh"), port)
	w.cmd.Env = append(os.Environ(),
		"AGCLUSTER_WORKER_SECRET="+w.Secret,
		"AGCLUSTER_AGENT_BINARY="+agentBin,
		"AGENT_IMAGE="+testenv.AgentImage(),
		"CLOUDFLARE_DEV_STATE="+w.StateDir,
		"WRANGLER_DOCKER_HOST="+w.proxy.URL(),
	)
	// A process group of its own: a Ctrl-C of the tests reaches it through
	// Main only, so wrangler is stopped the way that removes its containers.
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := w.cmd.StderrPipe()
	if err != nil {
		return err
	}
	w.cmd.Stdout = &w.logs
	if err := w.cmd.Start(); err != nil {
		return fmt.Errorf("scripts/cloudflare-dev.sh: %w", err)
	}
	ready := make(chan struct{})
	go w.readLogs(out, ready)
	go func() { _ = w.cmd.Wait(); close(w.exited) }()
	select {
	case <-ready:
		return nil
	case <-w.exited:
		return fmt.Errorf("scripts/cloudflare-dev.sh exited (%v):\n%s", w.cmd.ProcessState, w.logs.String())
	case <-time.After(startTimeout):
		return fmt.Errorf("scripts/cloudflare-dev.sh not ready after %s:\n%s", startTimeout, w.logs.String())
	}
}

// readLogs copies the script's output into the logs and closes ready at
// its ready line.
func (w *Worker) readLogs(r io.Reader, ready chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	once := sync.OnceFunc(func() { close(ready) })
	for sc.Scan() {
		line := sc.Text()
		_, _ = w.logs.Write([]byte(line + "\n"))
		if strings.HasPrefix(line, "cloudflare-dev: ready on ") {
			once()
		}
	}
	_, _ = io.Copy(&w.logs, r)
}

// Logs returns what the script and wrangler printed so far: the Worker's
// own log lines among them.
func (w *Worker) Logs() string { return w.logs.String() }

// stop stops the script (wrangler removes its containers, the script its
// image), the proxy and the network, and reports containers left behind.
func (w *Worker) stop() error {
	var errs []error
	if w.cmd != nil && w.cmd.Process != nil {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.exited:
		case <-time.After(2 * time.Minute):
			_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
			<-w.exited
			errs = append(errs, errors.New("scripts/cloudflare-dev.sh did not stop within 2 minutes; killed"))
		}
	}
	if w.proxy != nil {
		w.proxy.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	left, err := w.docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelRun+"="+w.Run))})
	if err != nil {
		errs = append(errs, err)
	}
	for _, c := range left {
		errs = append(errs, fmt.Errorf("container %s (%s) outlived wrangler dev", c.Names, c.State))
		_ = w.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
	if w.Network != "" {
		if err := w.docker.NetworkRemove(ctx, w.Network); err != nil {
			errs = append(errs, fmt.Errorf("remove network %s: %w", w.Network, err))
		}
	}
	_ = os.RemoveAll(w.dir)
	_ = w.docker.Close()
	return errors.Join(errs...)
}

// Containers lists the Worker's agent containers (running or not), by
// name.
func (w *Worker) Containers(ctx context.Context) ([]container.Summary, error) {
	return w.docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelRun+"="+w.Run))})
}

// ContainerOf returns the container of the Durable Object with id objectID
// (workerd names it workerd-<worker>-<class>-<object id>), or nil.
func (w *Worker) ContainerOf(ctx context.Context, objectID string) (*container.Summary, error) {
	cs, err := w.Containers(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		for _, n := range c.Names {
			if strings.HasSuffix(n, "-"+objectID) {
				return &c, nil
			}
		}
	}
	return nil, nil
}

// ObjectID is the id of the Durable Object of agent id of provider (what
// its container is named after), as the Worker reports it.
func (w *Worker) ObjectID(ctx context.Context, provider, id string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		w.URL+"/v1/agents/"+url.PathEscape(id)+"?provider="+url.QueryEscape(provider), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+w.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var rec struct {
		ObjectID string `json:"object_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("agent %s: HTTP %d: %v", id, resp.StatusCode, err)
	}
	return rec.ObjectID, nil
}

// AgentContainer returns the container of agent id of provider, or nil
// when it has none.
func (w *Worker) AgentContainer(ctx context.Context, provider, id string) (*container.Summary, error) {
	obj, err := w.ObjectID(ctx, provider, id)
	if err != nil {
		return nil, err
	}
	return w.ContainerOf(ctx, obj)
}

// Kill kills the container of agent id of provider behind the Worker's
// back (SIGKILL, as a crash would), as providertest.Options.Kill wants.
func (w *Worker) Kill(ctx context.Context, provider, id string) error {
	c, err := w.AgentContainer(ctx, provider, id)
	if err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("agent %s has no container", id)
	}
	return w.docker.ContainerKill(ctx, c.ID, "KILL")
}

// Stored returns, as text, everything wrangler keeps on disk for the
// Worker (the Durable Objects' storage, R2's objects, gunzipped when they
// are gzip) and everything it logged.
func (w *Worker) Stored() (string, error) {
	var b strings.Builder
	err := filepath.WalkDir(w.StateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "== %s\n", strings.TrimPrefix(p, w.StateDir))
		b.Write(gunzipped(data))
		b.WriteByte('\n')
		return nil
	})
	b.WriteString("== logs\n")
	b.WriteString(w.Logs())
	return b.String(), err
}

// Ping reports whether the Worker answers with the secret.
func (w *Worker) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.URL+"/v1/ping", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping: HTTP %d", resp.StatusCode)
	}
	return nil
}
