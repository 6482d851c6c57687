package e2e

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// engineProxy forwards 127.0.0.1:port to the Docker socket, so a test can
// take the engine away from Caddy and give it back.
type engineProxy struct {
	addr  string
	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func (p *engineProxy) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(t, err)
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	if p.conns == nil {
		p.conns = map[net.Conn]bool{}
	}
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", "/var/run/docker.sock")
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

// stop closes the listener and every forwarded connection: the engine is
// gone as far as Caddy can tell.
func (p *engineProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// TestEngineOutage: with the Docker engine unreachable, a new conversation
// gets a clear 503 in OpenAI shape while running conversations go on; once
// the engine is back, new conversations work without restarting Caddy.
func TestEngineOutage(t *testing.T) {
	e := setup(t)
	proxy := &engineProxy{addr: "127.0.0.1:0"}
	proxy.start(t)
	t.Cleanup(proxy.stop)
	g := e.startGatewayWith(t, gatewayOptions{dockerHost: "tcp://" + proxy.addr})
	e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Working."}})
	c := g.client("sk-ant-test-outage")
	_, err := streamed(t, c, user("Hello."), conv("c-before"))
	require.NoError(t, err)

	proxy.stop()
	_, err = c.Chat.Completions.New(ctxFor(t, time.Minute), user("New conversation."), conv("c-during"))
	var apiErr *openai.Error
	require.True(t, errors.As(err, &apiErr), "%v", err)
	assert.Equal(t, http.StatusServiceUnavailable, apiErr.StatusCode)
	assert.Contains(t, apiErr.Message, "unreachable")
	got, err := streamed(t, c, user("Still here?"), conv("c-before"))
	require.NoError(t, err, "a running conversation does not need the engine")
	assert.Equal(t, "Working.", got.Choices[0].Message.Content)

	proxy.start(t) // same address
	got, err = streamed(t, c, user("New conversation."), conv("c-after"))
	require.NoError(t, err, "recovered without restarting Caddy")
	assert.Equal(t, "Working.", got.Choices[0].Message.Content)
	assert.Len(t, e.containers(t, g.runID), 2)
}
