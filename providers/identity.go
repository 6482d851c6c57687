package providers

// Identity is who an agent serves, as its provider records it on the agent
// itself (Docker labels, Fly metadata, Kubernetes labels and annotations)
// so that a restarted gateway finds the agent and its session. It never
// holds a token or a key.
type Identity struct {
	// Provider is the configured name of the provider that made the agent.
	Provider string
	// SessionID is the session the agent serves (empty for an unbound
	// warm-pool agent).
	SessionID string
	// Owner is the owner's opaque id (a hash).
	Owner string
	// Conversation is the client's conversation id.
	Conversation string
	// ConfigID names the agent configuration.
	ConfigID string
	// Pool names the warm pool entry the agent was made for.
	Pool string
}

// Identity returns the identity an agent made from s by the provider
// named provider is recorded with.
func (s Spec) Identity(provider string) Identity {
	return Identity{
		Provider:     provider,
		SessionID:    s.SessionID,
		Owner:        s.Owner,
		Conversation: s.Conversation,
		ConfigID:     s.ConfigID,
		Pool:         s.Pool,
	}
}

// Apply sets inst's identity fields to id's.
func (id Identity) Apply(inst *Instance) {
	inst.Provider = id.Provider
	inst.SessionID = id.SessionID
	inst.Owner = id.Owner
	inst.Conversation = id.Conversation
	inst.ConfigID = id.ConfigID
	inst.Pool = id.Pool
}

// IdentityKeys names the keys a backend records an [Identity] under (its
// label, metadata, annotation or tag names). One value per backend serves
// both directions, so what is written is what is read back.
type IdentityKeys struct {
	// Managed marks objects made by agcluster (value "true"). Empty: no
	// mark is written, and the Provider key alone marks an agcluster
	// object (for a backend with few keys, such as Vercel's five tags).
	Managed string
	// Provider holds Identity.Provider.
	Provider string
	// Session holds Identity.SessionID.
	Session string
	// Owner holds Identity.Owner.
	Owner string
	// Conversation holds Identity.Conversation.
	Conversation string
	// Config holds Identity.ConfigID.
	Config string
	// Pool holds Identity.Pool (absent when empty).
	Pool string
	// OmitEmpty leaves out every empty value, not only the pool's (an
	// absent key reads back as empty).
	OmitEmpty bool
}

// Tags returns id as key-value pairs under k's names, with the managed
// mark (when k has one). An empty pool is left out, and so is every empty
// value with OmitEmpty.
func (k IdentityKeys) Tags(id Identity) map[string]string {
	tags := map[string]string{
		k.Provider:     id.Provider,
		k.Session:      id.SessionID,
		k.Owner:        id.Owner,
		k.Conversation: id.Conversation,
		k.Config:       id.ConfigID,
		k.Pool:         id.Pool,
	}
	for key, v := range tags {
		if v == "" && (k.OmitEmpty || key == k.Pool) {
			delete(tags, key)
		}
	}
	if k.Managed != "" {
		tags[k.Managed] = "true"
	}
	return tags
}

// Identity reads an identity back from tags written by [IdentityKeys.Tags].
func (k IdentityKeys) Identity(tags map[string]string) Identity {
	return Identity{
		Provider:     tags[k.Provider],
		SessionID:    tags[k.Session],
		Owner:        tags[k.Owner],
		Conversation: tags[k.Conversation],
		ConfigID:     tags[k.Config],
		Pool:         tags[k.Pool],
	}
}

// Owns reports whether tags mark an object made by agcluster through the
// provider named provider.
func (k IdentityKeys) Owns(tags map[string]string, provider string) bool {
	return (k.Managed == "" || tags[k.Managed] == "true") && provider != "" && tags[k.Provider] == provider
}

// Binding returns the tags that bind an agent to inst's session (session,
// owner, conversation): what changes when a warm-pool agent is handed out,
// after which its pool tag goes.
func (k IdentityKeys) Binding(inst *Instance) map[string]string {
	return map[string]string{
		k.Session:      inst.SessionID,
		k.Owner:        inst.Owner,
		k.Conversation: inst.Conversation,
	}
}

// Rebinds reports whether binding an agent with tags to inst's session
// changes them.
func (k IdentityKeys) Rebinds(tags map[string]string, inst *Instance) bool {
	for key, v := range k.Binding(inst) {
		if tags[key] != v {
			return true
		}
	}
	return false
}
