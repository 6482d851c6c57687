package providers

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

var testKeys = IdentityKeys{Managed: "m", Provider: "p", Session: "s", Owner: "o", Conversation: "c", Config: "cfg", Pool: "pool"}

func TestIdentityKeysRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		tags map[string]string
	}{
		{
			name: "session agent",
			spec: Spec{SessionID: "s1", Owner: "h1", Conversation: "conv 1", ConfigID: "code"},
			tags: map[string]string{"m": "true", "p": "docker", "s": "s1", "o": "h1", "c": "conv 1", "cfg": "code"},
		},
		{
			name: "warm pool agent",
			spec: Spec{ConfigID: "code", Pool: "code/default"},
			tags: map[string]string{"m": "true", "p": "docker", "s": "", "o": "", "c": "", "cfg": "code", "pool": "code/default"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.spec.Identity("docker")
			tags := testKeys.Tags(id)
			assert.Equal(t, tt.tags, tags)
			assert.Equal(t, id, testKeys.Identity(tags))
			assert.True(t, testKeys.Owns(tags, "docker"))
			assert.False(t, testKeys.Owns(tags, "second"))

			var inst Instance
			id.Apply(&inst)
			assert.Equal(t, Instance{Provider: "docker", SessionID: id.SessionID, Owner: id.Owner, Conversation: id.Conversation, ConfigID: id.ConfigID, Pool: id.Pool}, inst)
			assert.False(t, testKeys.Rebinds(tags, &inst))
		})
	}
}

// TestIdentityKeysCompact: without a managed key and with OmitEmpty, a
// session agent fits five keys and a warm-pool agent three; what is left
// out reads back as empty.
func TestIdentityKeysCompact(t *testing.T) {
	keys := testKeys
	keys.Managed, keys.OmitEmpty = "", true
	for _, tt := range []struct {
		name string
		spec Spec
		tags map[string]string
	}{
		{"session agent", Spec{SessionID: "s1", Owner: "h1", Conversation: "conv 1", ConfigID: "code"},
			map[string]string{"p": "vercel", "s": "s1", "o": "h1", "c": "conv 1", "cfg": "code"}},
		{"session agent without a conversation", Spec{SessionID: "s1", Owner: "h1", ConfigID: "code"},
			map[string]string{"p": "vercel", "s": "s1", "o": "h1", "cfg": "code"}},
		{"warm pool agent", Spec{ConfigID: "code", Pool: "code/default"},
			map[string]string{"p": "vercel", "cfg": "code", "pool": "code/default"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.spec.Identity("vercel")
			tags := keys.Tags(id)
			assert.Equal(t, tt.tags, tags)
			assert.Equal(t, id, keys.Identity(tags))
			assert.True(t, keys.Owns(tags, "vercel"))
			assert.False(t, keys.Owns(tags, "other"))
			assert.False(t, keys.Owns(tags, ""), "an empty provider name owns nothing")
		})
	}
}

func TestIdentityKeysRebinds(t *testing.T) {
	tags := testKeys.Tags(Identity{Provider: "fly", ConfigID: "code", Pool: "code/default"})
	inst := &Instance{SessionID: "s2", Owner: "h2", Conversation: "c2"}
	assert.True(t, testKeys.Rebinds(tags, inst))
	for k, v := range testKeys.Binding(inst) {
		tags[k] = v
	}
	assert.False(t, testKeys.Rebinds(tags, inst))
	assert.False(t, testKeys.Owns(map[string]string{"m": "false", "p": "fly"}, "fly"))
}
