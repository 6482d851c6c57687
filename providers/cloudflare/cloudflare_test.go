package cloudflare_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/cftest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
	"github.com/agcluster/caddy-agcluster/providers/cloudflare"
	"github.com/agcluster/caddy-agcluster/providers/providertest"
)

// TestMain stops the Worker (wrangler dev) the tests started, once they
// are done.
func TestMain(m *testing.M) { os.Exit(cftest.Main(m)) }

// worker is the Worker under wrangler dev with a mock Anthropic API its
// agents reach (relayed onto the Worker's network, their only way to the
// host).
type worker struct {
	*cftest.Worker
	mock    *anthropictest.Server
	mockURL string // as the agents reach it
}

func startWorker(t *testing.T) *worker {
	t.Helper()
	w := cftest.Start(t)
	mock := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Noted."}})
	fwd := testenv.Forward(t, w.HostAddr+":0", mock.Addr())
	return &worker{Worker: w, mock: mock, mockURL: "http://" + fwd}
}

// options are provider options for the Worker: the mock as the agents'
// Anthropic API, quick polls.
func (w *worker) options(name string) cloudflare.Options {
	return cloudflare.Options{
		Name: name, WorkerURL: w.URL, Secret: w.Secret,
		Env:          map[string]string{"ANTHROPIC_BASE_URL": w.mockURL},
		PollInterval: caddy.Duration(500 * time.Millisecond),
	}
}

func newProvider(t testing.TB, opts cloudflare.Options) *cloudflare.Provider {
	return providertest.NewProvider(t, cloudflare.New, opts, nil)
}

func newSpec() providers.Spec {
	spec := providertest.NewSpec()
	spec.SessionID = "sess_" + testenv.RandomHex(8)
	return spec
}

func (w *worker) modelRequests(context.Context) ([]string, error) {
	reqs := w.mock.Requests()
	bodies := make([]string, len(reqs))
	for i, r := range reqs {
		bodies[i] = string(r.Body)
	}
	return bodies, nil
}

// TestConformance runs the providers' conformance suite on the Cloudflare
// provider against the real Worker: wrangler dev, its Durable Objects and
// R2, the agent containers on Docker. What the backend stores is all
// wrangler keeps on disk (Durable Objects, R2 snapshots uncompressed) and
// all it logged; a kill is a SIGKILL of the agent's container.
func TestConformance(t *testing.T) {
	w := startWorker(t)
	names := []string{"cloudflare", "cloudflare-other"}
	opts := w.options(names[0])
	providertest.Run(t, newProvider(t, opts), providertest.Options{
		NewSpec: newSpec,
		Reopen:  func(t *testing.T) providers.Provider { return newProvider(t, opts) },
		Other:   newProvider(t, w.options(names[1])),
		Kill: func(ctx context.Context, id string) error {
			var errs []error
			for _, name := range names { // the Worker tells an agent's object only to its provider
				err := w.Kill(ctx, name, id)
				if err == nil {
					return nil
				}
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		},
		Stored: func(context.Context, string) (string, error) {
			stored, err := w.Stored()
			return stored, err
		},
		ModelRequests: w.modelRequests,
	})
	// A killed agent's container is removed once its object is reset,
	// just after its Destroy.
	w.eventuallyNoContainers(t)
}

// eventuallyNoContainers waits until the Worker has no agent container.
func (w *worker) eventuallyNoContainers(t *testing.T) {
	t.Helper()
	var left []string
	testenv.Eventually(t, 30*time.Second, func() bool {
		cs, err := w.Containers(context.Background())
		require.NoError(t, err)
		left = left[:0]
		for _, c := range cs {
			left = append(left, strings.Join(c.Names, ",")+" "+c.State)
		}
		return len(left) == 0
	}, "agent containers left: %v", left)
}
