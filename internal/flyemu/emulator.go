package flyemu

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/apirecord"
	"github.com/agcluster/caddy-agcluster/internal/dockerwatch"
	"github.com/agcluster/caddy-agcluster/internal/emuengine"
	"github.com/agcluster/caddy-agcluster/internal/emuhttp"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
)

// LabelEmulator is the Docker label on everything an emulator creates; its
// value is the emulator's [Emulator.ID].
const LabelEmulator = "agcluster.flyemu"

// Labels an emulator also sets on each machine's container.
const (
	// LabelApp is the machine's app.
	LabelApp = "agcluster.flyemu.app"
	// LabelMachine is the machine's id.
	LabelMachine = "agcluster.flyemu.machine"
)

// Options configures an [Emulator].
type Options struct {
	// Token is the API token every Machines API call must carry as
	// "Authorization: Bearer <token>" or "FlyV1 <token>" (required).
	Token string
	// Apps are the Fly apps that exist (at least one); calls naming
	// another app get 404.
	Apps []string
	// Network is the Docker network machines join. A machine's
	// private_ip is its address there (IPv6 when the network has it,
	// else IPv4), and it is reachable as <id>.vm.<app>.internal from other
	// containers on it. Empty: the emulator creates an IPv6 network in
	// fdaa::/16 like Fly's 6PN (see [Emulator.Network]; attach the
	// Anthropic mock to it) and removes it on Close.
	Network string
	// Docker is the engine client; nil connects with the environment's
	// settings.
	Docker *client.Client
	// Region is reported for machines created without one (default "iad").
	Region string
	// RateLimits are the Machines API rate limits; the zero value is
	// Fly's documented limits.
	RateLimits RateLimits
	// APIAddr and ProxyAddr are the listen addresses of the Machines API
	// and of the proxy (default "127.0.0.1:0" each).
	APIAddr, ProxyAddr string
	// Logger receives the emulator's own log; nil discards it.
	Logger *zap.Logger
}

// Emulator is a running Machines API and proxy. Its methods are safe for
// concurrent use.
type Emulator struct {
	opts   Options
	id     string
	cli    *client.Client
	ownCli bool
	ownNet bool // the emulator created opts.Network
	log    *zap.Logger
	ncpu   int

	servers        *emuhttp.Servers
	limiter        *limiter
	proxyTransport *http.Transport
	events         *dockerwatch.Watcher
	closed         chan struct{}
	closeOnce      sync.Once
	pending        sync.WaitGroup // async machine operations

	mu       sync.Mutex
	machines map[string]*machine // by id
	changed  chan struct{}       // closed and replaced on every state change
	rec      *apirecord.Recorder
}

// New starts an emulator: the Machines API and the proxy listen until
// Close.
func New(ctx context.Context, opts Options) (*Emulator, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	e := &Emulator{
		opts:     opts,
		id:       randhex.String(6),
		cli:      opts.Docker,
		log:      opts.Logger,
		limiter:  newLimiter(opts.RateLimits),
		machines: map[string]*machine{},
		changed:  make(chan struct{}),
		rec:      apirecord.New(bodyKeep),
		closed:   make(chan struct{}),
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	if e.opts.Region == "" {
		e.opts.Region = "iad"
	}
	if err := e.connect(ctx); err != nil {
		if e.ownCli && e.cli != nil {
			_ = e.cli.Close()
		}
		return nil, err
	}
	e.proxyTransport = &http.Transport{
		DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableKeepAlives: false,
		IdleConnTimeout:   30 * time.Second,
	}
	e.events = dockerwatch.Containers(e.cli, LabelEmulator+"="+e.id, e.log, e.onContainerEvent)
	if err := e.listen(); err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

func (o Options) validate() error {
	switch {
	case o.Token == "":
		return errors.New("flyemu: Options.Token is required")
	case len(o.Apps) == 0:
		return errors.New("flyemu: Options.Apps needs at least one app")
	}
	return nil
}

// connect makes the Docker client (unless given) and checks the engine
// and the network.
func (e *Emulator) connect(ctx context.Context) error {
	eng, err := emuengine.Connect(ctx, "flyemu", e.cli)
	if err != nil {
		return err
	}
	e.cli, e.ownCli, e.ncpu = eng.Client, eng.Own, eng.NCPU
	if e.opts.Network == "" {
		return e.createNetwork(ctx)
	}
	if _, err := e.cli.NetworkInspect(ctx, e.opts.Network, networkInspectOpts); err != nil {
		return fmt.Errorf("flyemu: network %q: %w", e.opts.Network, err)
	}
	return nil
}

// createNetwork makes the emulator's own network: a bridge with IPv6
// addresses in a random fdaa:<16 bits>:<16 bits>::/64, like Fly's 6PN.
func (e *Emulator) createNetwork(ctx context.Context) error {
	name := "flyemu-" + e.id
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	subnet := fmt.Sprintf("fdaa:%x:%x::/64", int(b[0])<<8|int(b[1]), int(b[2])<<8|int(b[3]))
	if _, err := e.cli.NetworkCreate(ctx, name, network.CreateOptions{
		Driver:     "bridge",
		EnableIPv6: &[]bool{true}[0],
		IPAM:       &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet}}},
		Labels:     map[string]string{LabelEmulator: e.id},
	}); err != nil {
		return fmt.Errorf("flyemu: create network %s: %w", name, err)
	}
	e.opts.Network, e.ownNet = name, true
	return nil
}

// Network is the Docker network machines join (Options.Network, or the
// emulator's own).
func (e *Emulator) Network() string { return e.opts.Network }

// listen starts the two HTTP servers.
func (e *Emulator) listen() error {
	srv, err := emuhttp.Listen(e.opts.APIAddr, e.rec.Handler(e.withRequestID(e.routes())), e.opts.ProxyAddr, http.HandlerFunc(e.serveProxy))
	if err != nil {
		return fmt.Errorf("flyemu: %w", err)
	}
	e.servers = srv
	return nil
}

// ID is the emulator's id, the value of [LabelEmulator] on what it creates.
func (e *Emulator) ID() string { return e.id }

// APIURL is the Machines API's base URL, without /v1 (what
// FLY_FLAPS_BASE_URL takes), e.g. "http://127.0.0.1:40123".
func (e *Emulator) APIURL() string { return e.servers.APIURL }

// ProxyURL is the proxy's base URL, the stand-in for https://<app>.fly.dev.
func (e *Emulator) ProxyURL() string { return e.servers.ProxyURL }

// Close stops the servers and removes every container the emulator made.
func (e *Emulator) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.closed)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.servers.Close()
		e.pending.Wait() // they end early: e.closed cancels their context
		e.events.Stop()
		err = e.removeAll(ctx)
		if e.ownNet {
			if nerr := e.cli.NetworkRemove(ctx, e.opts.Network); nerr != nil && !cerrdefs.IsNotFound(nerr) {
				err = errors.Join(err, fmt.Errorf("flyemu: remove network %s: %w", e.opts.Network, nerr))
			}
		}
		e.proxyTransport.CloseIdleConnections()
		if e.ownCli {
			_ = e.cli.Close()
		}
	})
	return err
}

// removeAll force-removes every container carrying this emulator's label.
func (e *Emulator) removeAll(ctx context.Context) error {
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelEmulator+"="+e.id))})
	if err != nil {
		return fmt.Errorf("flyemu: list containers: %w", err)
	}
	var errs []error
	for _, c := range list {
		if err := e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("flyemu: remove container %s: %w", c.ID[:12], err))
		}
	}
	return errors.Join(errs...)
}

// Request is one Machines API request as the emulator received it; its
// Route is the matched route, e.g. "POST /v1/apps/{app}/machines/{id}/stop".
type Request = apirecord.Request

// Requests returns every Machines API request received so far.
func (e *Emulator) Requests() []Request { return e.rec.Requests() }

// Calls counts the Machines API requests received per route (see
// [Request.Route]; "" counts requests no route matched), whatever their
// answer, 401s and 429s included.
func (e *Emulator) Calls() map[string]int { return e.rec.Calls() }

// TotalCalls is the number of Machines API requests received.
func (e *Emulator) TotalCalls() int { return e.rec.TotalCalls() }

// ProxiedRequests counts the proxy's requests per machine id they were
// routed to.
func (e *Emulator) ProxiedRequests() map[string]int { return e.rec.ProxiedRequests() }

// ResetCalls forgets the requests and counts recorded so far.
func (e *Emulator) ResetCalls() { e.rec.Reset() }

// bodyKeep is how much of a request body the log keeps (all of a JSON
// body).
const bodyKeep = 8 << 20

// withRequestID sets Fly-Request-Id on every API answer, as Fly does.
func (e *Emulator) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Fly-Request-Id", randhex.String(10)+"-"+e.opts.Region)
		next.ServeHTTP(w, r)
	})
}
