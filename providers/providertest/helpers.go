package providertest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
	"github.com/agcluster/caddy-agcluster/providers"
)

// create makes an instance and destroys it when the test ends.
func create(t *testing.T, p providers.Provider, spec providers.Spec) *providers.Instance {
	t.Helper()
	inst := CreateWithin(t, p, spec, CallTimeout)
	require.NotNil(t, inst, "Create returned no instance and no error")
	return inst
}

// keep destroys inst when the test ends (again, if its ID was seen
// before: destroying a gone instance is not an error).
func keep(t testing.TB, p providers.Provider, inst *providers.Instance) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
		defer cancel()
		if err := p.Destroy(ctx, inst.ID); err != nil {
			t.Errorf("cleanup: destroy %s: %v", inst.ID, err)
		}
	})
}

// sleep puts inst to sleep through p (a Sleeper) and checks the result.
func sleep(t *testing.T, p providers.Provider, inst *providers.Instance) *providers.Instance {
	t.Helper()
	asleep, err := p.(providers.Sleeper).Sleep(callCtx(t), inst)
	if asleep != nil && asleep.ID != inst.ID {
		keep(t, p, asleep)
	}
	require.NoError(t, err, "Sleep")
	require.NotNil(t, asleep, "Sleep returned no instance and no error")
	assert.NotEmpty(t, asleep.ID, "ID")
	assert.Equal(t, providers.StateStopped, asleep.State, "State after Sleep")
	assert.Equal(t, p.Name(), asleep.Provider, "Provider")
	return asleep
}

// wake wakes id through p (a Sleeper) and checks that it answers.
func wake(t *testing.T, p providers.Provider, id string) *providers.Instance {
	t.Helper()
	woken, err := p.(providers.Sleeper).Wake(callCtx(t), id)
	require.NoError(t, err, "Wake")
	require.NotNil(t, woken, "Wake returned no instance and no error")
	assert.Equal(t, id, woken.ID, "Wake keeps the ID")
	assert.Equal(t, providers.StateRunning, woken.State, "State after Wake")
	assert.NotEmpty(t, woken.URL, "URL")
	assert.NotEmpty(t, woken.Token, "Token")
	h, status, err := woken.Client().Health(callCtx(t))
	require.NoError(t, err, "health of the woken agent")
	assert.Equal(t, http.StatusOK, status, "the woken agent is ready: %+v", h)
	return woken
}

// assertSame checks that got is the instance want describes: the same
// provider, session, owner, conversation and configuration.
func assertSame(t *testing.T, want, got *providers.Instance) {
	t.Helper()
	assert.Equal(t, want.Provider, got.Provider, "Provider")
	assert.Equal(t, want.SessionID, got.SessionID, "SessionID")
	assert.Equal(t, want.Owner, got.Owner, "Owner")
	assert.Equal(t, want.Conversation, got.Conversation, "Conversation")
	assert.Equal(t, want.ConfigID, got.ConfigID, "ConfigID")
	assert.NotEmpty(t, got.Token, "Token")
}

// callCtx bounds one provider call.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	t.Cleanup(cancel)
	return ctx
}

func find(list []*providers.Instance, id string) *providers.Instance {
	for _, i := range list {
		if i.ID == id {
			return i
		}
	}
	return nil
}

// answers reports whether the agent at inst's URL accepts inst's token.
func answers(inst *providers.Instance) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := inst.Client().Stats(ctx)
	return err == nil
}

// fakeKey is a recognisable API key: the mock accepts any key, and a
// backend that stored it would be caught.
func fakeKey() string {
	return "sk-ant-api03-providertest-" + testenv.RandomHex(12)
}

// turn runs one turn and returns the answer; it fails the test unless the
// stream ends with a result.
func turn(t *testing.T, inst *providers.Instance, prompt, apiKey string) string {
	t.Helper()
	stream, err := inst.Client().Query(callCtx(t), prompt, apiKey)
	require.NoError(t, err, "query")
	defer stream.Close()
	var answer strings.Builder
	for {
		ev, err := stream.Next()
		require.NoError(t, err, "the turn's stream")
		switch ev.Type {
		case agent.EventTextDelta:
			answer.WriteString(ev.Text)
		case agent.EventResult:
			if answer.Len() == 0 && ev.Result != nil {
				return ev.Result.Text
			}
			return answer.String()
		case agent.EventError:
			t.Fatalf("the turn failed: %s: %s", ev.Code, ev.Message)
		}
	}
}

// putFile writes a workspace file through the agent's files API.
func putFile(t *testing.T, inst *providers.Instance, name, content string) {
	t.Helper()
	resp, err := inst.Client().Forward(callCtx(t), http.MethodPut, "/files/"+escape(name), nil, strings.NewReader(content), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "PUT /files/%s: %s", name, body)
}

// getFile reads a workspace file through the agent's files API.
func getFile(t *testing.T, inst *providers.Instance, name string) string {
	t.Helper()
	resp, err := inst.Client().Forward(callCtx(t), http.MethodGet, "/files/"+escape(name), nil, nil, nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET /files/%s: %s", name, body)
	return string(body)
}

func escape(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// waitEvent reads events until one matches and returns every event read,
// the match last. It fails the test when the stream fails or ends first,
// or after CallTimeout.
func waitEvent(t *testing.T, events <-chan providers.Event, errs <-chan error, match func(providers.Event) bool) []providers.Event {
	t.Helper()
	bound := time.NewTimer(CallTimeout)
	defer bound.Stop()
	var seen []providers.Event
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the event stream ended before the expected event; saw %+v", seen)
			}
			seen = append(seen, ev)
			if match(ev) {
				return seen
			}
		case err, ok := <-errs:
			if ok && err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("the event stream failed: %v", err)
			}
			if !ok {
				errs = nil
			}
		case <-bound.C:
			t.Fatalf("no matching event within %s; saw %+v", CallTimeout, seen)
		}
	}
}
