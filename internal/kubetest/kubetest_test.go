package kubetest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// onBridge asserts that ip is a pod address on the cluster's bridge subnet.
func onBridge(t *testing.T, ip string) {
	t.Helper()
	_, subnet, err := net.ParseCIDR(HostAddr() + "/24")
	require.NoError(t, err)
	addr := net.ParseIP(ip)
	require.NotNil(t, addr, "pod IP %q", ip)
	assert.True(t, subnet.Contains(addr), "pod IP %s outside %s", ip, subnet)
	assert.NotEqual(t, HostAddr(), ip)
}

// TestPodReady: a pod created with client-go is scheduled on the node,
// gets an address on the bridge and becomes Ready; its namespace is then
// deleted and waited for.
func TestPodReady(t *testing.T) {
	cs := Client(t)
	ns := Namespace(t, cs)
	ctx := context.Background()
	_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pause"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:            "pause",
				Image:           PauseImage,
				ImagePullPolicy: corev1.PullNever,
			}},
			TerminationGracePeriodSeconds: new(int64(5)),
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	start := time.Now()
	p := WaitPodReady(t, cs, ns, "pause", 2*time.Minute)
	t.Logf("pod Ready %s after its creation, IP %s", time.Since(start).Round(time.Millisecond), p.Status.PodIP)
	assert.NotEmpty(t, p.Spec.NodeName, "scheduled")
	onBridge(t, p.Status.PodIP)

	sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
	require.NoError(t, err, "the controller-manager makes every namespace's default ServiceAccount")
	assert.Equal(t, "default", sa.Name)
}

// TestAgentPod: the agent image runs as a pod; the host reaches its
// /health at the pod's IP, and a turn goes from the host to the agent, from
// the agent's CLI to the mock Anthropic API listening on HostAddr, and back.
func TestAgentPod(t *testing.T) {
	cs := Client(t)
	mock := anthropictest.New(anthropictest.Script{Default: &anthropictest.Response{Text: "Hello from the mock."}})
	apiURL, callers := serveOnBridge(t, mock.Handler())

	ns := Namespace(t, cs)
	ctx := context.Background()
	token := testenv.RandomHex(16)
	_, err := cs.CoreV1().Pods(ns).Create(ctx, agentPod(token, apiURL), metav1.CreateOptions{})
	require.NoError(t, err)
	start := time.Now()
	p := WaitPodReady(t, cs, ns, "agent", 3*time.Minute)
	t.Logf("agent pod Ready %s after its creation, IP %s", time.Since(start).Round(time.Millisecond), p.Status.PodIP)
	onBridge(t, p.Status.PodIP)

	c := &agentclient.Client{BaseURL: "http://" + net.JoinHostPort(p.Status.PodIP, "8080"), Token: token}
	h, status, err := c.Health(ctx)
	require.NoError(t, err, "GET /health from the host at the pod IP")
	require.Equal(t, http.StatusOK, status, "%+v\nlogs:\n%s", h, Logs(cs, ns, "agent", "agent"))
	assert.Equal(t, "ready", h.Status)
	assert.Contains(t, h.ClaudeVersion, testenv.ClaudeVersion)

	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := c.Turn(tctx, agent.QueryRequest{Prompt: "Say hello.", APIKey: "sk-ant-test"})
	require.NoError(t, err)
	last := lastEvent(t, st)
	require.Equal(t, agent.EventResult, last.Type, "%+v\nlogs:\n%s", last, Logs(cs, ns, "agent", "agent"))
	assert.Equal(t, "Hello from the mock.", last.Result.Text)

	require.NotEmpty(t, mock.Requests(), "the pod's CLI reached the mock on the host")
	assert.Equal(t, []string{p.Status.PodIP}, callers.hosts(), "the API's callers: the pod's address only")
}

// remoteHosts records the distinct client addresses a server saw.
type remoteHosts struct {
	mu   sync.Mutex
	seen []string
}

func (r *remoteHosts) add(remoteAddr string) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.seen, host) {
		r.seen = append(r.seen, host)
	}
}

func (r *remoteHosts) hosts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// serveOnBridge serves h on HostAddr (where pods reach the host) until the
// test ends, recording its callers' addresses, and returns its base URL.
func serveOnBridge(t *testing.T, h http.Handler) (string, *remoteHosts) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(HostAddr(), "0"))
	require.NoError(t, err, "listen on the cluster's bridge address")
	callers := &remoteHosts{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			callers.add(r.RemoteAddr)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), callers
}

// agentPod is the agent image as a pod whose readiness is the agent's own
// /health (ready once its CLI is), with the mock as its Anthropic API.
func agentPod(token, apiURL string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:            "agent",
				Image:           testenv.AgentImage(),
				ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{
					{Name: agent.EnvToken, Value: token},
					{Name: "ANTHROPIC_BASE_URL", Value: apiURL},
				},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("http")},
					},
					PeriodSeconds: 1,
				},
			}},
			TerminationGracePeriodSeconds: new(int64(10)),
		},
	}
}

// lastEvent reads a turn's stream to its end and returns its last event.
func lastEvent(t *testing.T, st *agentclient.Stream) agent.Event {
	t.Helper()
	defer st.Close()
	var last agent.Event
	for {
		e, err := st.Next()
		if errors.Is(err, io.EOF) {
			return last
		}
		require.NoError(t, err)
		last = e
	}
}
