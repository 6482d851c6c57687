package session

import (
	"github.com/agcluster/caddy-agcluster/agent"
)

// transcript is a session's conversation as the gateway saw it: for every
// turn the agent finished, the fingerprint of the transcript the client
// will send back after it (its messages plus the answer) and the agent's
// id for the turn. Turns form a tree (regenerate and edit make branches);
// tip is the turn the agent's conversation currently ends with. Guarded by
// the session's mu.
type transcript struct {
	turns       map[string]string // fingerprint after a turn -> the agent's turn id
	tip         string            // fingerprint after the latest turn; "" before the first
	sentHistory bool              // the client sends the conversation's history with its messages
}

// Continuation is where a request's history meets its session's transcript.
type Continuation struct {
	// Branch is nil when the request continues after the agent's latest
	// turn; otherwise the turn to continue after (regenerate, edit, or a
	// switch back to an earlier branch).
	Branch *agent.Branch
	// Seen is how many of the request's history messages the agent has
	// in its context at that point: the messages after them are new to it
	// and must be given as text.
	Seen int
}

// Continuation finds where a request continues the session's
// conversation. prefixes are the fingerprints of every prefix of the
// request's history (openai.PrefixFingerprints: prefixes[i] covers the
// first i messages). The longest prefix the session knows decides:
//   - the latest turn's transcript: a plain next turn;
//   - an earlier turn's: a branch after that turn;
//   - an empty history in a conversation that has turns, from a client
//     that sends histories: a branch from the beginning (the first message
//     was edited or regenerated).
//
// A history the session does not know at all (it was found after a
// gateway restart, or another client wrote it) is taken as a next turn,
// as before branches existed; so is an empty one from a client that never
// sent a history (it sends only its new message and relies on the
// conversation id).
func (s *Session) Continuation(prefixes []string) Continuation {
	n := len(prefixes) - 1
	if n < 0 {
		return Continuation{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &s.transcript
	if len(t.turns) == 0 {
		return Continuation{Seen: n}
	}
	for i := n; i >= 1; i-- {
		fp := prefixes[i]
		if fp == t.tip {
			return Continuation{Seen: i}
		}
		if id, ok := t.turns[fp]; ok {
			return Continuation{Branch: &agent.Branch{After: id}, Seen: i}
		}
	}
	if n == 0 && t.sentHistory {
		return Continuation{Branch: &agent.Branch{}, Seen: 0}
	}
	return Continuation{Seen: n}
}

// record notes the end of a turn: after is the fingerprint of the
// transcript the client will send next, turnID the agent's id for the turn
// ("" when the turn has not finished: it waits for client tool results,
// and the next request continues it); sentHistory that the request came
// with earlier messages.
func (t *transcript) record(after, turnID string, sentHistory bool) {
	t.sentHistory = t.sentHistory || sentHistory
	if t.turns == nil {
		t.turns = map[string]string{}
	}
	if turnID != "" && after != "" {
		t.turns[after] = turnID
	}
	t.tip = after
}

// fingerprints lists every transcript fingerprint the session answers to.
func (t *transcript) fingerprints() []string {
	out := make([]string, 0, len(t.turns)+1)
	for fp := range t.turns {
		out = append(out, fp)
	}
	if _, ok := t.turns[t.tip]; t.tip != "" && !ok {
		out = append(out, t.tip)
	}
	return out
}
