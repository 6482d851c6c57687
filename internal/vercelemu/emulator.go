package vercelemu

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/internal/apirecord"
	"github.com/agcluster/caddy-agcluster/internal/dockerwatch"
	"github.com/agcluster/caddy-agcluster/internal/emuengine"
	"github.com/agcluster/caddy-agcluster/internal/emuhttp"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
)

// LabelEmulator is the Docker label on everything an emulator creates
// (containers and snapshot images); its value is the emulator's
// [Emulator.ID].
const LabelEmulator = "agcluster.vercelemu"

// LabelSandbox is the label naming a container's sandbox.
const LabelSandbox = "agcluster.vercelemu.sandbox"

// Facts of Vercel's sandboxes the emulator reproduces.
const (
	// DefaultUser is the user commands and the file API run as (root
	// with sudo).
	DefaultUser = "vercel-sandbox"
	// DefaultCwd is a session's working directory.
	DefaultCwd = "/vercel/sandbox"
	// Region is the only region reported.
	Region = "iad1"
	// DefaultTimeout is a session's timeout when the create names none.
	DefaultTimeout = 5 * time.Minute
	// DefaultMaxTimeout is the longest a session may run (Vercel's Pro
	// plan; Hobby allows 45 minutes).
	DefaultMaxTimeout = 5 * time.Hour
	// DefaultVCPUs is a sandbox's vCPUs when the create names none.
	DefaultVCPUs = 2
	// MaxPorts is how many ports a sandbox may route.
	MaxPorts = 15
	// MaxTags is how many tags a sandbox may carry.
	MaxTags = 5
)

// Options configure an [Emulator].
type Options struct {
	// Token is the access token every API call must carry as
	// "Authorization: Bearer <token>" (required).
	Token string
	// TeamID, when set, is the team the token belongs to: requests must
	// name it with ?teamId=.
	TeamID string
	// Projects are the project ids that exist (at least one); others get
	// 404 "Project not found".
	Projects []string
	// Image is the sandboxes' base image: a plain Linux image (never
	// pulled: it must be in the local engine). Default
	// "agcluster/base:bookworm". The emulator adds the default user and
	// /vercel/sandbox to a fresh container, as Vercel's image has them.
	Image string
	// Network is the Docker network sandboxes join (default "bridge"):
	// put the services they must reach (the Anthropic mock) on it.
	Network string
	// Docker is the engine client; nil connects with the environment's
	// settings.
	Docker *client.Client
	// MaxTimeout is the plan's longest session (default 5h): a create or
	// an extension beyond it is refused.
	MaxTimeout time.Duration
	// RateLimits limit creates and resumes; the zero value is Vercel's
	// Pro plan (200 vCPUs a minute).
	RateLimits RateLimits
	// APIAddr and ProxyAddr are the listen addresses of the API and of
	// the route proxy (default "127.0.0.1:0" each).
	APIAddr, ProxyAddr string
	// Logger receives the emulator's own log; nil discards it.
	Logger *zap.Logger
}

// Emulator is a running Sandbox API and route proxy. Its methods are
// safe for concurrent use.
type Emulator struct {
	opts   Options
	id     string
	cli    *client.Client
	ownCli bool
	log    *zap.Logger
	ncpu   int

	servers        *emuhttp.Servers
	limiter        *limiter
	proxyTransport *http.Transport
	events         *dockerwatch.Watcher
	closed         chan struct{}
	closeOnce      sync.Once
	pending        sync.WaitGroup // goroutines that outlive a call

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by project + "/" + name
	sessions  map[string]*session
	snapshots map[string]*snapshot
	commands  map[string]*command
	changed   chan struct{} // closed and replaced on every session status change
	rec       *apirecord.Recorder
	throttle  int // the next throttle API requests answer 429
}

// New starts an emulator: the API and the route proxy listen until Close.
func New(ctx context.Context, opts Options) (*Emulator, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	e := &Emulator{
		opts:      opts,
		id:        randhex.String(6),
		cli:       opts.Docker,
		log:       opts.Logger,
		limiter:   newLimiter(opts.RateLimits),
		sandboxes: map[string]*sandbox{},
		sessions:  map[string]*session{},
		snapshots: map[string]*snapshot{},
		commands:  map[string]*command{},
		changed:   make(chan struct{}),
		rec:       apirecord.New(bodyKeep),
		closed:    make(chan struct{}),
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.opts.Image = cmp.Or(e.opts.Image, "agcluster/base:bookworm")
	e.opts.Network = cmp.Or(e.opts.Network, "bridge")
	e.opts.MaxTimeout = cmp.Or(e.opts.MaxTimeout, DefaultMaxTimeout)
	if err := e.connect(ctx); err != nil {
		if e.ownCli && e.cli != nil {
			_ = e.cli.Close()
		}
		return nil, err
	}
	e.proxyTransport = &http.Transport{
		DialContext:     (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		IdleConnTimeout: 30 * time.Second,
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
		return errors.New("vercelemu: Options.Token is required")
	case len(o.Projects) == 0:
		return errors.New("vercelemu: Options.Projects needs at least one project")
	}
	return nil
}

// connect makes the Docker client (unless given) and checks the engine,
// the base image and the network.
func (e *Emulator) connect(ctx context.Context) error {
	eng, err := emuengine.Connect(ctx, "vercelemu", e.cli)
	if err != nil {
		return err
	}
	e.cli, e.ownCli, e.ncpu = eng.Client, eng.Own, eng.NCPU
	if _, err := e.cli.ImageInspect(ctx, e.opts.Image); err != nil {
		return fmt.Errorf("vercelemu: base image %q (build it with make base-image): %w", e.opts.Image, err)
	}
	return nil
}

// listen starts the two HTTP servers.
func (e *Emulator) listen() error {
	srv, err := emuhttp.Listen(e.opts.APIAddr, e.rec.Handler(withRequestID(e.routes())), e.opts.ProxyAddr, http.HandlerFunc(e.serveProxy))
	if err != nil {
		return fmt.Errorf("vercelemu: %w", err)
	}
	e.servers = srv
	return nil
}

// ID is the emulator's id, the value of [LabelEmulator] on what it makes.
func (e *Emulator) ID() string { return e.id }

// APIURL is the API's base URL, the stand-in for https://vercel.com/api
// (paths /v2/... and /v3/... below it).
func (e *Emulator) APIURL() string { return e.servers.APIURL }

// ProxyURL is the route proxy's base URL. A route's URL is ProxyURL plus
// "/<subdomain>", the stand-in for https://<subdomain>.vercel.run.
func (e *Emulator) ProxyURL() string { return e.servers.ProxyURL }

// Close stops the servers and the session timers and removes every
// container and snapshot image the emulator made.
func (e *Emulator) Close() error {
	var err error
	e.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		e.mu.Lock()
		close(e.closed) // under e.mu: no spawn starts after this
		for _, s := range e.sessions {
			if s.timer != nil {
				s.timer.Stop()
			}
		}
		e.mu.Unlock()
		e.servers.Close()
		e.pending.Wait()
		e.events.Stop()
		err = errors.Join(e.removeContainers(ctx), e.removeImages(ctx))
		e.proxyTransport.CloseIdleConnections()
		if e.ownCli {
			_ = e.cli.Close()
		}
	})
	return err
}

// labelFilter selects what this emulator made.
func (e *Emulator) labelFilter() filters.Args {
	return filters.NewArgs(filters.Arg("label", LabelEmulator+"="+e.id))
}

// removeContainers force-removes every container carrying the label.
func (e *Emulator) removeContainers(ctx context.Context) error {
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: e.labelFilter()})
	if err != nil {
		return fmt.Errorf("vercelemu: list containers: %w", err)
	}
	var errs []error
	for _, c := range list {
		if err := e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("vercelemu: remove container %s: %w", c.ID[:12], err))
		}
	}
	return errors.Join(errs...)
}

// removeImages removes every snapshot image carrying the label.
func (e *Emulator) removeImages(ctx context.Context) error {
	list, err := e.cli.ImageList(ctx, image.ListOptions{Filters: e.labelFilter()})
	if err != nil {
		return fmt.Errorf("vercelemu: list images: %w", err)
	}
	var errs []error
	for _, im := range list {
		if _, err := e.cli.ImageRemove(ctx, im.ID, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("vercelemu: remove image %s: %w", im.ID, err))
		}
	}
	return errors.Join(errs...)
}

// Request is one API request as the emulator received it; its Route is
// the matched route, e.g. "POST /v3/sandboxes", and its Body all of a JSON
// body, the first 64 KiB of an upload.
type Request = apirecord.Request

// Requests returns every API request received so far.
func (e *Emulator) Requests() []Request { return e.rec.Requests() }

// Calls counts the API requests received per route (see [Request.Route];
// "" counts requests no route matched), whatever their answer.
func (e *Emulator) Calls() map[string]int { return e.rec.Calls() }

// ProxiedRequests counts the route proxy's requests per sandbox name.
func (e *Emulator) ProxiedRequests() map[string]int { return e.rec.ProxiedRequests() }

// ResetCalls forgets the requests and counts recorded so far.
func (e *Emulator) ResetCalls() { e.rec.Reset() }

// Throttle makes the next n API requests answer 429 with Retry-After: 1,
// as a rate limit would.
func (e *Emulator) Throttle(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.throttle = n
}

// bodyKeep is how much of a request body the log keeps.
const bodyKeep = 64 << 10

// withRequestID sets X-Vercel-Id on every API answer, as Vercel does.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Vercel-Id", Region+"::"+randhex.String(10))
		next.ServeHTTP(w, r)
	})
}

// spawn runs fn in a goroutine that Close waits for, unless the emulator
// is closing (then fn does not run). Callers hold e.mu.
func (e *Emulator) spawn(fn func()) {
	select {
	case <-e.closed:
		return
	default:
	}
	e.pending.Add(1)
	go func() {
		defer e.pending.Done()
		fn()
	}()
}

// now is the current time in Unix milliseconds, as the API reports times.
func now() int64 { return time.Now().UnixMilli() }
