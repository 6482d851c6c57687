package agent_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/agent/agentclient"
	"github.com/agcluster/caddy-agcluster/agent/statefile"
	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// TestAgentSleepAndWake: an agent is stopped completely (as when its
// container is stopped: the agent and its CLI exit, HOME is lost) and
// started again on the same workspace and state directories. With
// AGENT_STATE_DIR it carries on: the same CLI session with its history, the
// turn count and the binding. What is lost, or a state it cannot read,
// gives a fresh start, never a crash.
func TestAgentSleepAndWake(t *testing.T) {
	testenv.Integration(t)
	const (
		firstPrompt  = "Please remember the word pineapple."
		firstAnswer  = "I will remember: pineapple."
		secondPrompt = "Which word did I ask you to remember?"
	)
	script := anthropictest.Script{Steps: []anthropictest.Step{{
		Match:    anthropictest.Match{LastUserTextContains: "remember the word pineapple"},
		Response: anthropictest.Response{Text: firstAnswer},
	}}, Default: &anthropictest.Response{Text: "Noted."}}
	binding := agent.Binding{SessionID: "sess_sleepy", Owner: "owner-a", Conversation: "conv-1"}

	tests := []struct {
		name         string
		stateDir     bool                            // AGENT_STATE_DIR is set on both starts
		whileStopped func(t *testing.T, d agentDirs) // done to the directories while the agent is stopped
		wantLog      string                          // in the second agent's logs
		resumed      bool                            // health says resumed; the second turn has the first in its history
		lostNotice   bool                            // the second turn starts with a notice that the context is lost
		turns        int64                           // the turn count after the second turn
		bound        bool                            // the binding made before the stop is in force after it
	}{
		{name: "stopped and started", stateDir: true,
			wantLog: "resuming the saved conversation", resumed: true, turns: 2, bound: true},
		{name: "CLI sessions lost", stateDir: true,
			whileStopped: func(t *testing.T, d agentDirs) { require.NoError(t, os.RemoveAll(filepath.Join(d.state, "claude"))) },
			wantLog:      "claude resume failed", lostNotice: true, turns: 2, bound: true},
		{name: "corrupt state file", stateDir: true,
			whileStopped: func(t *testing.T, d agentDirs) {
				require.NoError(t, os.WriteFile(filepath.Join(d.state, statefile.Name), []byte(`{"version":1,"session_`), 0o600))
			},
			wantLog: "saved agent state ignored", turns: 1},
		{name: "no state directory", turns: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mock := anthropictest.NewServer(t, script)
			dirs := newAgentDirs(t)
			var env []string
			if tt.stateDir {
				env = append(env, agent.EnvStateDir+"="+dirs.state)
			}

			// Before: a bound agent runs one turn.
			first := startProcessStackOn(t, mock, dirs, env...)
			h, _, err := first.agent.Health(context.Background())
			require.NoError(t, err)
			assert.False(t, h.Resumed, "a fresh agent resumed nothing")
			require.NoError(t, first.agent.Bind(context.Background(), binding))
			events := first.turn(t, firstPrompt)
			last := lastEvent(events)
			require.Equal(t, agent.EventResult, last.Type, "%+v", events)
			require.Equal(t, firstAnswer, last.Result.Text)
			sessionID := last.Result.SessionID
			require.NotEmpty(t, sessionID)
			first.stop()

			if tt.stateDir {
				saved, err := statefile.Load(filepath.Join(dirs.state, statefile.Name))
				require.NoError(t, err)
				turnID := last.Result.TurnID
				require.Len(t, saved.Tree, 1, "the turn tree holds the turn")
				assert.Equal(t, turnID, saved.Tree[0].ID)
				assert.Equal(t, sessionID, saved.Tree[0].Session)
				assert.NotEmpty(t, saved.Tree[0].End)
				saved.Tree = nil
				assert.Equal(t, statefile.State{Version: statefile.Version, SessionID: sessionID, HasSession: true, Turns: 1, Binding: &binding, Tip: turnID},
					saved, "agent.json holds the session, the turn count, the binding and the turn tree")
				transcripts, err := filepath.Glob(filepath.Join(dirs.state, "claude", "projects", "*", sessionID+".jsonl"))
				require.NoError(t, err)
				assert.Len(t, transcripts, 1, "the CLI keeps its session in the state directory")
				_, err = os.Stat(filepath.Join(dirs.home, ".claude", "projects"))
				assert.ErrorIs(t, err, os.ErrNotExist, "and not in HOME")
			} else {
				entries, err := os.ReadDir(dirs.state)
				require.NoError(t, err)
				assert.Empty(t, entries, "nothing is kept without AGENT_STATE_DIR")
			}
			if tt.whileStopped != nil {
				tt.whileStopped(t, dirs)
			}

			// After: a new agent on the same directories, with a new HOME.
			dirs.home = t.TempDir()
			mock.Reset()
			second := startProcessStackOn(t, mock, dirs, env...)
			if tt.wantLog != "" {
				assert.Contains(t, second.logs(), tt.wantLog)
			}
			h, status, err := second.agent.Health(context.Background())
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, status)
			assert.Equal(t, tt.resumed, h.Resumed, "health resumed")
			if tt.resumed {
				assert.Equal(t, sessionID, h.SessionID, "the same CLI session")
			} else {
				assert.NotEqual(t, sessionID, h.SessionID, "a new CLI session")
			}
			st, err := second.agent.Stats(context.Background())
			require.NoError(t, err)
			assert.Equal(t, tt.turns-1, st.Turns, "turns before the second turn")

			bs, err := second.agent.Binding(context.Background())
			require.NoError(t, err)
			require.Equal(t, tt.bound, bs.Bound, "bound after the restart")
			if tt.bound {
				assert.Equal(t, binding, *bs.Binding)
				require.NoError(t, second.agent.Bind(context.Background(), binding), "the same binding again is accepted")
				var apiErr *agentclient.APIError
				require.ErrorAs(t, second.agent.Bind(context.Background(),
					agent.Binding{SessionID: "sess_other", Owner: "owner-b", Conversation: "conv-1"}), &apiErr)
				assert.Equal(t, http.StatusConflict, apiErr.Status)
				assert.Equal(t, "already_bound", apiErr.Code)
			}

			events = second.turn(t, secondPrompt)
			last = lastEvent(events)
			require.Equal(t, agent.EventResult, last.Type, "%+v\nlogs:\n%s", events, second.logs())
			var notices []string
			for _, e := range events {
				if e.Type == agent.EventNotice && e.Code == agent.CodeRestarted {
					notices = append(notices, e.Message)
				}
			}
			if tt.lostNotice {
				require.Len(t, notices, 1, "%+v", events)
				assert.Contains(t, notices[0], "earlier context is lost")
			} else {
				assert.Empty(t, notices, "to the user the conversation simply goes on")
			}
			if tt.resumed {
				assert.Equal(t, sessionID, last.Result.SessionID, "the conversation goes on in the same session")
			}

			// The second turn's request to the API, as the mock recorded it.
			var history []anthropictest.Message
			for _, r := range mock.Requests() {
				if strings.Contains(r.LastUserText(), secondPrompt) {
					history, err = r.Messages()
					require.NoError(t, err)
				}
			}
			require.NotEmpty(t, history, "the second turn reached the API; requests:%s", summarizeRequests(mock.Requests()))
			has := func(role, text string) bool {
				for _, m := range history[:len(history)-1] {
					if m.Role == role && strings.Contains(m.Text(), text) {
						return true
					}
				}
				return false
			}
			assert.Equal(t, tt.resumed, has("user", firstPrompt), "the first turn's question is in the second turn's context")
			assert.Equal(t, tt.resumed, has("assistant", firstAnswer), "and so is its answer")
			st, err = second.agent.Stats(context.Background())
			require.NoError(t, err)
			assert.Equal(t, tt.turns, st.Turns, "turns after the second turn")
		})
	}
}
