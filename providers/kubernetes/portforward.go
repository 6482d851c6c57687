package kubernetes

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/agcluster/caddy-agcluster/providers"
)

// forwardIdle is how long a forward's connection to the pod (through the
// API server and the kubelet) stays open without a request; the next
// request dials a new one.
const forwardIdle = 5 * time.Minute

// errForwardClosed is returned for connections to a closed forward.
var errForwardClosed = errors.New("port forward closed")

// forwards are the port forwards of every provider value in the process,
// by forwardKey, so a provider value made for the same cluster and
// namespace (after a config reload, or a restart of the provider value)
// reaches a running pod at the same local URL.
var forwards = struct {
	mu sync.Mutex
	m  map[string]*forward
}{m: map[string]*forward{}}

// forwardKey names the forward to a pod: the API server, the namespace
// and the pod's UID (a woken agent's new pod gets a forward of its own).
func (p *Provider) forwardKey(uid types.UID) string {
	return p.cfg.Host + "/" + p.opts.Namespace + "/" + string(uid)
}

// forwardURL returns the local URL whose connections are forwarded to
// the agent port of pod, starting a forward when there is none.
func (p *Provider) forwardURL(pod *corev1.Pod) (string, error) {
	key := p.forwardKey(pod.UID)
	forwards.mu.Lock()
	defer forwards.mu.Unlock()
	f := forwards.m[key]
	if f == nil {
		var err error
		if f, err = p.newForward(pod.Name); err != nil {
			return "", err
		}
		forwards.m[key] = f
	}
	f.users[p] = struct{}{}
	return f.url, nil
}

// closeForward stops the forward named key, if there is one (its pod is
// going away).
func closeForward(key string) {
	forwards.mu.Lock()
	f := forwards.m[key]
	delete(forwards.m, key)
	forwards.mu.Unlock()
	if f != nil {
		f.close()
	}
}

// closePodForwards stops this cluster's and namespace's forwards to pods
// named pod other than the one with UID keep (a pod deleted behind the
// gateway's back leaves its forward until its name is woken or destroyed).
func (p *Provider) closePodForwards(pod string, keep types.UID) {
	prefix, keepKey := p.forwardKey(""), p.forwardKey(keep)
	var stale []*forward
	forwards.mu.Lock()
	for k, f := range forwards.m {
		if f.pod == pod && k != keepKey && strings.HasPrefix(k, prefix) {
			delete(forwards.m, k)
			stale = append(stale, f)
		}
	}
	forwards.mu.Unlock()
	for _, f := range stale {
		f.close()
	}
}

// releaseForwards drops p's use of every forward, and stops the forwards
// no other provider value uses.
func releaseForwards(p *Provider) {
	var unused []*forward
	forwards.mu.Lock()
	for k, f := range forwards.m {
		delete(f.users, p)
		if len(f.users) == 0 {
			delete(forwards.m, k)
			unused = append(unused, f)
		}
	}
	forwards.mu.Unlock()
	for _, f := range unused {
		f.close()
	}
}

// forward is a local listener on 127.0.0.1 whose connections go to port
// 8080 of one pod through the API server's pods/portforward: each local
// connection is one pair of streams (data and error) on one multiplexed
// connection to the kubelet, dialed on first use and dialed again when it
// drops or idles out. This is what kubectl port-forward does (client-go's
// tools/portforward), but the listener outlives the connection, so the
// agent's URL stays the same.
type forward struct {
	pod    string
	url    string
	ln     net.Listener
	dialer streamhttp.Dialer
	logger *zap.Logger
	users  map[*Provider]struct{} // guarded by forwards.mu

	mu      sync.Mutex
	conn    streamhttp.Connection // nil until first use, and after a drop
	dialErr error                 // why the last dial failed (nil after a success)
	nextID  int
	done    chan struct{}
	once    sync.Once
}

// newForward listens on a free loopback port and serves it: connections
// are forwarded to pod. Like kubectl, it speaks SPDY tunneled over a
// WebSocket, falling back to plain SPDY when the API server (or a proxy)
// refuses the upgrade.
func (p *Provider) newForward(pod string) (*forward, error) {
	u := p.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(p.opts.Namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(p.cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: port forward to %s: %w", pod, err)
	}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	ws, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, p.cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: port forward to %s: %w", pod, err)
	}
	dialer = portforward.NewFallbackDialerForStreaming(ws, dialer, func(err error) bool {
		return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("kubernetes: port forward to %s: listen: %w", pod, err)
	}
	f := &forward{
		pod:    pod,
		url:    "http://" + ln.Addr().String(),
		ln:     ln,
		dialer: dialer,
		logger: p.logger.With(zap.String("instance_id", pod), zap.String("local_addr", ln.Addr().String())),
		users:  map[*Provider]struct{}{},
		done:   make(chan struct{}),
	}
	go f.serve()
	return f, nil
}

// serve accepts local connections until the listener is closed.
func (f *forward) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.handle(c)
	}
}

// close stops the listener and the connection to the pod (ending the
// forwarded connections).
func (f *forward) close() {
	f.once.Do(func() {
		close(f.done)
		_ = f.ln.Close()
		f.mu.Lock()
		if f.conn != nil {
			_ = f.conn.Close()
			f.conn = nil
		}
		f.mu.Unlock()
	})
}

// connection returns the connection to the pod, dialing a new one when
// there is none or the last one dropped.
func (f *forward) connection() (streamhttp.Connection, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		select {
		case <-f.conn.CloseChan():
			f.conn = nil
		default:
			return f.conn, nil
		}
	}
	select {
	case <-f.done:
		return nil, errForwardClosed
	default:
	}
	conn, proto, err := f.dialer.Dial(portforward.PortForwardProtocolV1Name)
	if err == nil && proto != portforward.PortForwardProtocolV1Name {
		_ = conn.Close()
		err = fmt.Errorf("the server chose protocol %q", proto)
	}
	if err != nil {
		f.dialErr = fmt.Errorf("dial the pod's port forward: %w", err)
		return nil, f.dialErr
	}
	conn.SetIdleTimeout(forwardIdle)
	f.conn, f.dialErr = conn, nil
	f.logger.Debug("port forward connected")
	return conn, nil
}

// lastDialError is why the forward's last dial failed (nil after a
// success).
func (f *forward) lastDialError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dialErr
}

// forwardOf returns the forward to the pod with this UID, or nil.
func (p *Provider) forwardOf(uid types.UID) *forward {
	forwards.mu.Lock()
	defer forwards.mu.Unlock()
	return forwards.m[p.forwardKey(uid)]
}

// forwardError is why the forward to the pod with this UID last failed
// to reach it, if it did.
func (p *Provider) forwardError(uid types.UID) error {
	if f := p.forwardOf(uid); f != nil {
		return f.lastDialError()
	}
	return nil
}

// dialForward connects the forward to the pod with this UID now, so a
// refusal (a Role without pods/portforward, a proxy that blocks the
// upgrade) fails a start at once, as provider unavailable, instead of at
// the ready timeout.
func (p *Provider) dialForward(uid types.UID) error {
	f := p.forwardOf(uid)
	if f == nil {
		return nil
	}
	if _, err := f.connection(); err != nil {
		return fmt.Errorf("%w (%w)", err, providers.ErrUnavailable)
	}
	return nil
}

// drop forgets conn (closing it) after a failure on it, so the next
// connection dials again.
func (f *forward) drop(conn streamhttp.Connection) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn == conn {
		_ = conn.Close()
		f.conn = nil
	}
}

// streams opens the error and data streams of one forwarded connection,
// dialing the pod again once if the current connection turns out dead.
func (f *forward) streams() (streamhttp.Connection, streamhttp.Stream, streamhttp.Stream, error) {
	var lastErr error
	for range 2 {
		conn, err := f.connection()
		if err != nil {
			return nil, nil, nil, err
		}
		f.mu.Lock()
		f.nextID++
		id := f.nextID
		f.mu.Unlock()
		h := http.Header{}
		h.Set(corev1.StreamType, corev1.StreamTypeError)
		h.Set(corev1.PortHeader, strconv.Itoa(agentPort))
		h.Set(corev1.PortForwardRequestIDHeader, strconv.Itoa(id))
		errStream, err := conn.CreateStream(h)
		if err == nil {
			_ = errStream.Close() // nothing is sent on it
			h.Set(corev1.StreamType, corev1.StreamTypeData)
			var data streamhttp.Stream
			if data, err = conn.CreateStream(h); err == nil {
				return conn, errStream, data, nil
			}
			conn.RemoveStreams(errStream)
		}
		lastErr = err
		f.drop(conn)
	}
	return nil, nil, nil, fmt.Errorf("open port forward streams: %w", lastErr)
}

// handle copies one local connection to and from the pod's agent port,
// as client-go's PortForwarder does: until the pod's side ends, or the
// local side fails.
func (f *forward) handle(local net.Conn) {
	defer local.Close()
	conn, errStream, data, err := f.streams()
	if err != nil {
		f.logger.Debug("port forward unavailable", zap.Error(err))
		return
	}
	defer conn.RemoveStreams(errStream, data)
	errc := make(chan string, 1)
	go func() {
		msg, _ := io.ReadAll(errStream)
		errc <- string(msg)
	}()
	remoteDone, localFailed := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = io.Copy(local, data)
		close(remoteDone)
	}()
	go func() {
		defer data.Close() // no more data from this side
		if _, err := io.Copy(data, local); err != nil {
			close(localFailed)
		}
	}()
	select {
	case <-remoteDone:
	case <-localFailed:
	}
	// Reset discards what is unsent, so the error stream can end.
	_ = data.Reset()
	if msg := <-errc; msg != "" {
		f.logger.Debug("port forward connection failed", zap.String("error", msg))
	}
}
