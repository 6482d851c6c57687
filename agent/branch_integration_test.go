package agent_test

import (
	"context"
	"encoding/json"
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

// branchScript answers by the last user message's code word: BETA writes
// beta.txt with the Write tool and gamma.txt with Bash in the same step;
// every other word gets "Answer <word>.".
func branchScript(workspace string) anthropictest.Script {
	steps := []anthropictest.Step{{
		Match: anthropictest.Match{LastUserTextContains: "BETA", HasToolResult: ptr(false)},
		Response: anthropictest.Response{Blocks: []anthropictest.Block{
			anthropictest.ToolUse("Write", map[string]string{"file_path": filepath.Join(workspace, "beta.txt"), "content": "beta\n"}),
			anthropictest.ToolUse("Bash", map[string]string{"command": "echo gamma > gamma.txt", "description": "make gamma"}),
		}},
		Times: anthropictest.Unlimited,
	}, {
		Match:    anthropictest.Match{HasToolResult: ptr(true)},
		Response: anthropictest.Response{Text: "Files made."},
		Times:    anthropictest.Unlimited,
	}}
	// ETA last: "ETA " is also in "ZETA " and "THETA ".
	for _, word := range []string{"ALPHA", "EPSILON", "ZETA", "THETA", "ETA"} {
		steps = append(steps, anthropictest.Step{
			Match:    anthropictest.Match{LastUserTextContains: word + " ", HasToolResult: ptr(false)},
			Response: anthropictest.Response{Text: "Answer " + strings.ToLower(word) + "."},
			Times:    anthropictest.Unlimited,
		})
	}
	return anthropictest.Script{Steps: steps}
}

// history renders the messages of the last Messages API request as
// "role: text" lines (tool calls as "role: [tool_use Name]").
func history(t *testing.T, s *stack) string {
	t.Helper()
	reqs, err := s.mock.Requests(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, reqs)
	msgs, err := reqs[len(reqs)-1].Messages()
	require.NoError(t, err)
	var b strings.Builder
	for _, m := range msgs {
		if m.Role != "user" && m.Role != "assistant" {
			continue // the CLI's environment notes
		}
		for _, blk := range m.Blocks() {
			switch blk.Type {
			case "text":
				if !strings.HasPrefix(blk.Text, "<system-reminder>") {
					b.WriteString(m.Role + ": " + blk.Text + "\n")
				}
			case "tool_use":
				b.WriteString(m.Role + ": [tool_use " + blk.Name + "]\n")
			}
		}
	}
	return b.String()
}

// branchTurn runs a turn after turn after and returns its events; it
// requires a result.
func branchTurn(t *testing.T, s *stack, prompt string, branch *agent.Branch) []agent.Event {
	t.Helper()
	require.NoError(t, s.mock.Reset(context.Background()))
	events := s.query(t, agent.QueryRequest{Prompt: prompt, Branch: branch})
	require.Equal(t, agent.EventResult, lastEvent(events).Type, "%+v\nlogs:\n%s", events, s.logs())
	require.NotEmpty(t, lastEvent(events).Result.TurnID)
	return events
}

// branchNotices returns the branch notices of a turn, checking that any
// comes first.
func branchNotices(t *testing.T, events []agent.Event) []string {
	t.Helper()
	var out []string
	for i, e := range events {
		if e.Type == agent.EventNotice && e.Code == agent.CodeBranch {
			assert.Zero(t, i, "the branch notice is the turn's first event")
			out = append(out, e.Message)
		}
	}
	return out
}

func fileExists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if os.IsNotExist(err) {
		return false
	}
	require.NoError(t, err)
	return true
}

// TestAgentBranches: regenerating an answer, editing the first message
// and switching back to an abandoned branch, with the real CLI. The model
// sees only the messages of the branch it continues, files the Write tool
// made in abandoned turns are gone (and back when their branch is
// continued), what Bash did is told in a notice, and the tree outlives a
// restart of the agent.
func TestAgentBranches(t *testing.T) {
	testenv.Integration(t)
	dirs := newAgentDirs(t)
	mock := anthropictest.NewServer(t, branchScript(dirs.workspace))
	env := agent.EnvStateDir + "=" + dirs.state
	s := startProcessStackOn(t, mock, dirs, env)
	beta, gamma := filepath.Join(dirs.workspace, "beta.txt"), filepath.Join(dirs.workspace, "gamma.txt")

	first := branchTurn(t, s, "First: ALPHA please.", nil)
	t1 := lastEvent(first).Result.TurnID
	second := branchTurn(t, s, "Second: BETA please.", nil)
	t2 := lastEvent(second).Result.TurnID
	assert.NotEqual(t, t1, t2)
	assert.Empty(t, branchNotices(t, second))
	require.True(t, fileExists(t, beta), "the Write tool made beta.txt")
	require.True(t, fileExists(t, gamma), "Bash made gamma.txt")

	// Regenerate the second answer: a branch after the first turn.
	regen := branchTurn(t, s, "Second again: EPSILON please.", &agent.Branch{After: t1})
	t2b := lastEvent(regen).Result.TurnID
	h := history(t, s)
	assert.Contains(t, h, "user: First: ALPHA please.\nassistant: Answer alpha.\nuser: Second again: EPSILON please.")
	assert.NotContains(t, h, "BETA", "the abandoned turn is not in the model's context")
	assert.NotContains(t, h, "Files made.")
	assert.False(t, fileExists(t, beta), "the abandoned turn's Write is undone")
	assert.True(t, fileExists(t, gamma), "its Bash command is not")
	notices := branchNotices(t, regen)
	require.Len(t, notices, 1, "%+v", regen)
	assert.Contains(t, notices[0], "`echo gamma > gamma.txt`")
	assert.NotContains(t, notices[0], "beta.txt", "beta.txt was restored")
	assert.NotEqual(t, lastEvent(second).Result.SessionID, lastEvent(regen).Result.SessionID, "a fork is a new CLI session")

	// A plain turn continues the new branch.
	next := branchTurn(t, s, "Then: ETA please.", nil)
	h = history(t, s)
	assert.Contains(t, h, "user: Second again: EPSILON please.\nassistant: Answer epsilon.\nuser: Then: ETA please.")
	assert.NotContains(t, h, "BETA")
	assert.Empty(t, branchNotices(t, next))

	// Switch back to the abandoned branch: its own context, its files back.
	back := branchTurn(t, s, "Back: ZETA please.", &agent.Branch{After: t2})
	h = history(t, s)
	assert.Contains(t, h, "user: First: ALPHA please.\nassistant: Answer alpha.\nuser: Second: BETA please.\nassistant: [tool_use Write]")
	assert.Contains(t, h, "assistant: Files made.\nuser: Back: ZETA please.")
	assert.NotContains(t, h, "EPSILON")
	assert.NotContains(t, h, "Then: ETA")
	assert.Equal(t, lastEvent(second).Result.SessionID, lastEvent(back).Result.SessionID,
		"the branch's last turn ends its CLI session, which is resumed as it is")
	b, err := os.ReadFile(beta)
	require.NoError(t, err, "beta.txt is back")
	assert.Equal(t, "beta\n", string(b))
	notices = branchNotices(t, back)
	require.Len(t, notices, 1)
	assert.Contains(t, notices[0], "the branch returned to changed could not be restored (`echo gamma > gamma.txt`)")

	// Edit the first message: a fresh start.
	edit := branchTurn(t, s, "First, edited: THETA please.", &agent.Branch{After: ""})
	h = history(t, s)
	assert.Contains(t, h, "user: First, edited: THETA please.")
	assert.NotContains(t, h, "ALPHA")
	assert.NotContains(t, h, "assistant:", "nothing came before")
	assert.False(t, fileExists(t, beta), "files are as before the first turn")
	require.Len(t, branchNotices(t, edit), 1, "the Bash command of the turns left behind")

	// A new agent on the same state: the tree is still there.
	s.stop()
	saved, err := statefile.Load(filepath.Join(dirs.state, statefile.Name))
	require.NoError(t, err)
	assert.Len(t, saved.Tree, 6)
	assert.Equal(t, lastEvent(edit).Result.TurnID, saved.Tip)
	dirs.home = t.TempDir()
	s = startProcessStackOn(t, mock, dirs, env)
	later := branchTurn(t, s, "Later: ETA please.", &agent.Branch{After: t2b})
	h = history(t, s)
	assert.Contains(t, h, "user: First: ALPHA please.\nassistant: Answer alpha.\nuser: Second again: EPSILON please.\nassistant: Answer epsilon.\nuser: Later: ETA please.")
	assert.NotContains(t, h, "Then: ETA", "the turn that followed t2b in its session is cut off (a fork)")
	assert.NotContains(t, h, "THETA")
	assert.Empty(t, branchNotices(t, later), "nothing to restore")
}

// TestAgentBranchIntoASession: a branch back to a turn in the middle of
// its CLI session (the session went on after it) puts its files back from
// the checkpoint of the turn that followed it, in a fork cut after it.
func TestAgentBranchIntoASession(t *testing.T) {
	testenv.Integration(t)
	dirs := newAgentDirs(t)
	mock := anthropictest.NewServer(t, branchScript(dirs.workspace))
	s := startProcessStackOn(t, mock, dirs)
	beta := filepath.Join(dirs.workspace, "beta.txt")

	first := branchTurn(t, s, "First: BETA please.", nil)
	t1 := lastEvent(first).Result.TurnID
	branchTurn(t, s, "Second: ALPHA please.", nil)
	require.True(t, fileExists(t, beta))

	branchTurn(t, s, "First, edited: THETA please.", &agent.Branch{After: ""})
	require.False(t, fileExists(t, beta), "the edit starts from the workspace before the first turn")

	back := branchTurn(t, s, "After the first: ZETA please.", &agent.Branch{After: t1})
	h := history(t, s)
	assert.Contains(t, h, "user: First: BETA please.\nassistant: [tool_use Write]")
	assert.Contains(t, h, "assistant: Files made.\nuser: After the first: ZETA please.")
	assert.NotContains(t, h, "ALPHA", "cut after the first turn")
	assert.NotContains(t, h, "THETA")
	b, err := os.ReadFile(beta)
	require.NoError(t, err, "beta.txt is back, from the second turn's checkpoint")
	assert.Equal(t, "beta\n", string(b))
	assert.NotEqual(t, lastEvent(first).Result.SessionID, lastEvent(back).Result.SessionID, "a fork")
	notices := branchNotices(t, back)
	require.Len(t, notices, 1)
	assert.NotContains(t, notices[0], "beta.txt")
	assert.Contains(t, s.logs(), `"msg":"branched"`)
	assert.NotContains(t, s.logs(), "not restored", "no fallback to saved copies")
}

// TestAgentQueryChecks: images reach the model as image blocks after the
// text; a branch after an unknown turn and a bad image are refused with
// 400 before any turn starts.
func TestAgentQueryChecks(t *testing.T) {
	testenv.Integration(t)
	s := startProcessStack(t)
	s.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "A red pixel."}})
	events := s.query(t, agent.QueryRequest{Prompt: "What is in this image?",
		Images: []agent.Image{{MediaType: "image/png", Data: redPixelPNG}}})
	require.Equal(t, agent.EventResult, lastEvent(events).Type, "%+v", events)
	reqs, err := s.mock.Requests(context.Background())
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	msgs, err := reqs[0].Messages()
	require.NoError(t, err)
	var blocks []struct {
		Type   string `json:"type"`
		Text   string `json:"text"`
		Source struct {
			Type      string `json:"type"`
			MediaType string `json:"media_type"`
			Data      string `json:"data"`
		} `json:"source"`
	}
	var user []byte
	for _, m := range msgs {
		if m.Role == "user" {
			user = m.Content // the CLI puts its environment notes in a later "system" message
		}
	}
	require.NoError(t, json.Unmarshal(user, &blocks))
	var types []string
	imageAt, textAt := -1, -1
	for i, b := range blocks {
		types = append(types, b.Type)
		switch {
		case b.Type == "image":
			imageAt = i
			assert.Equal(t, "base64", b.Source.Type)
			assert.Equal(t, "image/png", b.Source.MediaType)
			assert.Equal(t, redPixelPNG, b.Source.Data)
		case b.Type == "text" && b.Text == "What is in this image?":
			textAt = i
		}
	}
	require.NotEqual(t, -1, imageAt, "an image block reaches the model: %v", types)
	assert.Less(t, textAt, imageAt, "after the text")

	for _, tt := range []struct {
		name string
		q    agent.QueryRequest
		code string
	}{
		{"unknown turn", agent.QueryRequest{Prompt: "Hi", Branch: &agent.Branch{After: "0b8f6a8e-3c1d-4e6f-9a2b-7c5d4e3f2a1b"}}, "unknown_turn"},
		{"unknown media type", agent.QueryRequest{Prompt: "Hi", Images: []agent.Image{{MediaType: "image/tiff", Data: redPixelPNG}}}, "bad_request"},
		{"not base64", agent.QueryRequest{Prompt: "Hi", Images: []agent.Image{{MediaType: "image/png", Data: "not base64!"}}}, "bad_request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.APIKey = "sk-ant-test"
			_, err := s.agent.Turn(context.Background(), tt.q)
			var apiErr *agentclient.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, http.StatusBadRequest, apiErr.Status)
			assert.Equal(t, tt.code, apiErr.Code, apiErr.Message)
		})
	}
	h, _, err := s.agent.Health(context.Background())
	require.NoError(t, err)
	assert.False(t, h.Busy, "no turn was started")
}

// redPixelPNG is a 1x1 red PNG, base64.
const redPixelPNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
