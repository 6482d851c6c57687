package cftest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
)

// dockerProxy is the Docker API the Worker's runtime (workerd) creates its
// containers through: it relays everything to the engine, changing only
// container creates, so that agent containers live on the test's own
// network and on loopback, not on the engine's default bridge nor on every
// address of the host. workerd 1.20260301 creates each container with
// NetworkMode "bridge", PublishAllPorts (all host addresses), PidMode
// "host" (unless the experimental compatibility flag
// containers_pid_namespace is set) and ExtraHosts
// host.docker.internal:host-gateway; a create through this proxy instead
// gets:
//
//   - NetworkMode: the test network (the host is its gateway, HostAddr);
//   - PortBindings of every port the image exposes on 127.0.0.1, where
//     workerd connects (localhost:<published port>), and no
//     PublishAllPorts;
//   - its own PID namespace, as on Cloudflare;
//   - host.docker.internal resolving to the host's address on the network;
//   - the label agcluster.cftest=<run>, by which leftovers are found.
//
// A container's start is acknowledged once its exposed ports accept
// connections (at most startWait), and its inspection waits for that too:
// workerd checks the port right after it asks for the start (inspecting
// the container for its published port, while the start is under way),
// and its first connection to a published port whose container does not
// listen yet goes through docker-proxy, which accepts it and closes it
// when the container refuses; workerd's relay of that connection then
// never ends, and the @cloudflare/containers start check waits its full
// 5 s timeout (PING_TIMEOUT_MS) before it tries again.
//
// Everything else (the image, the environment, the restart policy, and every
// other call: start, stop, kill, wait, inspect, remove) is the runtime's own.
type dockerProxy struct {
	socket  string // the unix socket it listens on
	network string
	host    string // the host's address on network
	run     string // the label value
	docker  *client.Client
	srv     *http.Server

	mu       sync.Mutex
	starting map[string]chan struct{} // containers being started, by name; closed when acknowledged
}

// startDockerProxy listens on a unix socket in dir and relays to the
// engine cli talks to.
func startDockerProxy(cli *client.Client, dir, network, host, run string) (*dockerProxy, error) {
	p := &dockerProxy{socket: filepath.Join(dir, "docker.sock"), network: network, host: host, run: run, docker: cli,
		starting: map[string]chan struct{}{}}
	target, err := client.ParseHostURL(cli.DaemonHost())
	if err != nil {
		return nil, fmt.Errorf("docker host %q: %w", cli.DaemonHost(), err)
	}
	transport := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		if target.Scheme == "unix" {
			return d.DialContext(ctx, "unix", target.Host)
		}
		return d.DialContext(ctx, "tcp", target.Host)
	}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "docker"})
			r.Out.Host = "docker"
		},
		Transport:     transport,
		FlushInterval: -1, // waits and logs stream
	}
	ln, err := net.Listen("unix", p.socket)
	if err != nil {
		return nil, fmt.Errorf("docker proxy: %w", err)
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/containers/create") {
			if err := p.rewriteCreate(r); err != nil {
				http.Error(w, `{"message":"cftest docker proxy: `+err.Error()+`"}`, http.StatusBadRequest)
				return
			}
		}
		if name, ok := containerOf(r, http.MethodPost, "/start"); ok {
			done := p.startBegins(name)
			defer done()
			rp.ServeHTTP(&listenWaiter{ResponseWriter: w, wait: func() { p.awaitListening(r.Context(), name) }}, r)
			return
		}
		if name, ok := containerOf(r, http.MethodGet, "/json"); ok {
			p.awaitStart(r.Context(), name)
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL is the proxy's address for DOCKER_HOST.
func (p *dockerProxy) URL() string { return "unix://" + p.socket }

// close stops the proxy.
func (p *dockerProxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	_ = os.Remove(p.socket)
}

// rewriteCreate puts the create request's container on the test network,
// its ports on loopback, in a PID namespace of its own.
func (p *dockerProxy) rewriteCreate(r *http.Request) error {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return fmt.Errorf("create body: %w", err)
	}
	image, _ := body["Image"].(string)
	ports, err := p.exposed(r.Context(), image)
	if err != nil {
		return err
	}
	hc, _ := body["HostConfig"].(map[string]any)
	if hc == nil {
		hc = map[string]any{}
	}
	bindings := map[string]any{}
	for _, port := range ports {
		bindings[port] = []map[string]string{{"HostIp": "127.0.0.1", "HostPort": ""}}
	}
	hc["NetworkMode"] = p.network
	hc["PortBindings"] = bindings
	hc["PublishAllPorts"] = false
	hc["ExtraHosts"] = []string{"host.docker.internal:" + p.host}
	delete(hc, "PidMode")
	body["HostConfig"] = hc
	labels, _ := body["Labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	labels[LabelRun] = p.run
	body["Labels"] = labels
	out, err := json.Marshal(body)
	if err != nil {
		return err
	}
	r.Body = io.NopCloser(bytes.NewReader(out))
	r.ContentLength = int64(len(out))
	r.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return nil
}

// exposed lists the ports image exposes ("8080/tcp").
func (p *dockerProxy) exposed(ctx context.Context, image string) ([]string, error) {
	info, err := p.docker.ImageInspect(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("inspect image %q: %w", image, err)
	}
	var ports []string
	if info.Config != nil {
		for port := range info.Config.ExposedPorts {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// startWait bounds how long a start waits for the container's ports.
const startWait = 10 * time.Second

// startBegins records that container name is being started; the
// function it returns records that the start is answered.
func (p *dockerProxy) startBegins(name string) func() {
	ch := make(chan struct{})
	p.mu.Lock()
	p.starting[name] = ch
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		if p.starting[name] == ch {
			delete(p.starting, name)
		}
		p.mu.Unlock()
		close(ch)
	}
}

// awaitStart waits until a start of container name under way is answered
// (at most startWait).
func (p *dockerProxy) awaitStart(ctx context.Context, name string) {
	p.mu.Lock()
	ch := p.starting[name]
	p.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	case <-time.After(startWait):
	}
}

// containerOf returns the container of a request (method, path ending in
// suffix) to /containers/{name}<suffix>.
func containerOf(r *http.Request, method, suffix string) (string, bool) {
	if r.Method != method || !strings.HasSuffix(r.URL.Path, suffix) {
		return "", false
	}
	parts := strings.Split(strings.TrimSuffix(r.URL.Path, suffix), "/")
	if len(parts) < 2 || parts[len(parts)-2] != "containers" {
		return "", false
	}
	name, err := url.PathUnescape(parts[len(parts)-1])
	return name, err == nil
}

// listenWaiter delays a successful start's answer until wait returns.
type listenWaiter struct {
	http.ResponseWriter
	wait func()
}

// WriteHeader waits before a 204 (started) goes out.
func (l *listenWaiter) WriteHeader(status int) {
	if status == http.StatusNoContent {
		l.wait()
	}
	l.ResponseWriter.WriteHeader(status)
}

// awaitListening waits until every exposed port of container name accepts
// connections at its address on the network, or startWait passes.
func (p *dockerProxy) awaitListening(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	info, err := p.docker.ContainerInspect(ctx, name)
	if err != nil || info.NetworkSettings == nil || info.NetworkSettings.Networks[p.network] == nil {
		return
	}
	ip := info.NetworkSettings.Networks[p.network].IPAddress
	for port := range info.Config.ExposedPorts {
		addr := net.JoinHostPort(ip, port.Port())
		for ctx.Err() == nil {
			c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext(ctx, "tcp", addr)
			if err == nil {
				_ = c.Close()
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}
