// Package memory is an in-process provider for the session layer's unit
// tests: each agent is an httptest server speaking the agent API's small
// core (/health, /query, /binding), and its "workspace" is a list of the
// prompts it was sent, which survives sleep like a real workspace does. It
// implements every optional capability, so the session layer's sleep,
// wake, death and rediscovery logic runs in milliseconds. Integration
// tests use the real providers.
package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Provider keeps agents in memory. The zero value is not usable: call New.
type Provider struct {
	// SleepHook, when set, is called with the instance id as Sleep
	// begins: a test holds a sleep there.
	SleepHook func(id string)

	name string

	mu      sync.Mutex
	agents  map[string]*memAgent
	events  chan providers.Event
	creates int
	wakes   int
}

type memAgent struct {
	inst    providers.Instance
	srv     *httptest.Server // nil while stopped
	prompts []string         // the conversation so far: survives sleep
	binding *agent.Binding
	mu      sync.Mutex
}

// New returns an empty provider named name.
func New(name string) *Provider {
	return &Provider{name: name, agents: map[string]*memAgent{}, events: make(chan providers.Event, 64)}
}

// Name returns the provider's name.
func (p *Provider) Name() string { return p.name }

// Kind returns "memory".
func (p *Provider) Kind() string { return "memory" }

// Create starts an agent at once.
func (p *Provider) Create(ctx context.Context, spec providers.Spec) (*providers.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: create: %w", err)
	}
	a := &memAgent{inst: providers.Instance{
		ID:           "mem-" + randhex.String(8),
		Provider:     p.name,
		SessionID:    spec.SessionID,
		Owner:        spec.Owner,
		Conversation: spec.Conversation,
		ConfigID:     spec.ConfigID,
		Token:        randhex.String(16),
		CreatedAt:    time.Now(),
		Pool:         spec.Pool,
	}}
	a.start()
	p.mu.Lock()
	p.agents[a.inst.ID] = a
	p.creates++
	p.mu.Unlock()
	return a.instance(), nil
}

// Destroy removes an agent and its workspace.
func (p *Provider) Destroy(_ context.Context, id string) error {
	p.mu.Lock()
	a := p.agents[id]
	delete(p.agents, id)
	p.mu.Unlock()
	if a != nil {
		a.stop()
	}
	return nil
}

// List returns every agent, running or stopped.
func (p *Provider) List(context.Context) ([]*providers.Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*providers.Instance, 0, len(p.agents))
	for _, a := range p.agents {
		out = append(out, a.instance())
	}
	return out, nil
}

// Close does nothing: agents outlive the provider value.
func (p *Provider) Close() error { return nil }

// Sleep stops the agent's server; its prompts and binding are kept, and
// inst's session is recorded on it.
func (p *Provider) Sleep(_ context.Context, inst *providers.Instance) (*providers.Instance, error) {
	if p.SleepHook != nil {
		p.SleepHook(inst.ID)
	}
	a, err := p.agent(inst.ID)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.inst.SessionID, a.inst.Owner, a.inst.Conversation, a.inst.Pool = inst.SessionID, inst.Owner, inst.Conversation, ""
	a.mu.Unlock()
	a.stop()
	return a.instance(), nil
}

// Wake starts the agent's server again, at a new URL.
func (p *Provider) Wake(_ context.Context, id string) (*providers.Instance, error) {
	a, err := p.agent(id)
	if err != nil {
		return nil, err
	}
	a.start()
	p.mu.Lock()
	p.wakes++
	p.mu.Unlock()
	return a.instance(), nil
}

// Events streams what Kill reports.
func (p *Provider) Events(ctx context.Context) (<-chan providers.Event, <-chan error) {
	out, errs := make(chan providers.Event), make(chan error)
	go func() {
		defer close(out)
		defer close(errs)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-p.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, errs
}

// Kill stops an agent behind the gateway's back (its workspace survives)
// and reports it as died.
func (p *Provider) Kill(id string) error {
	a, err := p.agent(id)
	if err != nil {
		return err
	}
	a.stop()
	p.events <- providers.Event{InstanceID: id, SessionID: a.instance().SessionID, Reason: providers.ReasonDied, ExitCode: 137, Time: time.Now()}
	return nil
}

// StopSilently stops an agent without any event, like an engine restart
// whose events were lost.
func (p *Provider) StopSilently(id string) error {
	a, err := p.agent(id)
	if err != nil {
		return err
	}
	a.stop()
	return nil
}

// Lose removes an agent and its workspace without telling anyone.
func (p *Provider) Lose(id string) {
	_ = p.Destroy(context.Background(), id)
}

// Prompts returns what the agent was sent, oldest first.
func (p *Provider) Prompts(id string) []string {
	a, err := p.agent(id)
	if err != nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.prompts...)
}

// Creates and Wakes count calls.
func (p *Provider) Creates() int { p.mu.Lock(); defer p.mu.Unlock(); return p.creates }

// Wakes counts Wake calls.
func (p *Provider) Wakes() int { p.mu.Lock(); defer p.mu.Unlock(); return p.wakes }

func (p *Provider) agent(id string) (*memAgent, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.agents[id]
	if a == nil {
		return nil, fmt.Errorf("memory: agent %s: %w", id, providers.ErrGone)
	}
	return a, nil
}

func (a *memAgent) instance() *providers.Instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	inst := a.inst
	inst.State, inst.URL = providers.StateStopped, ""
	if a.srv != nil {
		inst.State, inst.URL = providers.StateRunning, a.srv.URL
	}
	return &inst
}

func (a *memAgent) start() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv == nil {
		a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	}
}

func (a *memAgent) stop() {
	a.mu.Lock()
	srv := a.srv
	a.srv = nil
	a.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

// serve answers the agent API's core: the answer to a query is "turn N:
// <prompt>", N counting every prompt the agent has had.
func (a *memAgent) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(agent.HeaderServer, "1")
	if r.URL.Path == "/health" {
		writeJSON(w, agent.Health{Status: "ready"})
		return
	}
	a.mu.Lock()
	token := a.inst.Token
	a.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+token {
		http.Error(w, `{"error":{"code":"unauthorized","message":"bad token"}}`, http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/binding":
		a.mu.Lock()
		defer a.mu.Unlock()
		if r.Method == http.MethodPut {
			var b agent.Binding
			if err := json.NewDecoder(r.Body).Decode(&b); err != nil || a.binding != nil {
				http.Error(w, `{"error":{"code":"conflict","message":"already bound"}}`, http.StatusConflict)
				return
			}
			a.binding = &b
		}
		writeJSON(w, agent.BindingState{Bound: a.binding != nil, Binding: a.binding})
	case "/query":
		var q agent.QueryRequest
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil {
			http.Error(w, `{"error":{"code":"bad_request","message":"bad query"}}`, http.StatusBadRequest)
			return
		}
		a.mu.Lock()
		a.prompts = append(a.prompts, q.Prompt)
		n := len(a.prompts)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		for i, e := range []agent.Event{
			{Type: agent.EventTextDelta, Text: fmt.Sprintf("turn %d: %s", n, q.Prompt)},
			{Type: agent.EventResult},
		} {
			e.Seq = i + 1
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Interface guards.
var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Sleeper  = (*Provider)(nil)
	_ providers.Watcher  = (*Provider)(nil)
)
