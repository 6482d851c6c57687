package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Forward listens on listenAddr (host:0 picks a port) and relays every
// connection to target until the test ends, when the listener and every
// relayed connection are closed. It returns the address it listens on.
// Tests use it to make a server on loopback reachable from a network of
// their own (a cluster's bridge) without publishing it anywhere else.
func Forward(t testing.TB, listenAddr, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		t.Fatalf("forward %s -> %s: %v", listenAddr, target, err)
	}
	f := &forwarder{target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() {
		_ = ln.Close()
		f.closeAll()
		f.wg.Wait()
	})
	f.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.relay(in) })
		}
	})
	return ln.Addr().String()
}

// forwarder is Forward's state: the connections it relays.
type forwarder struct {
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// track records c to be closed at the end; false when it already came.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

// untrack forgets connections that ended.
func (f *forwarder) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.conns, c)
	}
}

// closeAll closes every relayed connection, and those still to come.
func (f *forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
}

// relay copies both ways between in and a new connection to the target,
// and closes both when either side ends.
func (f *forwarder) relay(in net.Conn) {
	defer in.Close()
	out, err := net.Dial("tcp", f.target)
	if err != nil {
		return
	}
	defer out.Close()
	if !f.track(in) || !f.track(out) {
		return
	}
	defer f.untrack(in, out)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
}
