// Package kubernetes is the Kubernetes provider: it runs each agent as a
// pod of the agent image in one namespace, through client-go. One
// conversation is three objects of the same, deterministic name (derived
// from the session id, so a second create of the same conversation fails
// on the API server's own name uniqueness):
//
//   - a PersistentVolumeClaim, mounted twice with subPaths: workspace at
//     /workspace and state at /state (the CLI's sessions and the agent's
//     own state). It is the conversation's anchor: the pod and the Secret
//     name it as their owner, it outlives the pod, and its annotations
//     carry the conversation's identity for rediscovery.
//   - a Secret with the agent's bearer token (the pod reads it with
//     secretKeyRef: it is never a literal in the pod spec) and the pod's
//     spec, so a woken agent gets the same image, configuration and limits.
//   - the pod, hardened: non-root (the image's agent user), no service
//     account token, RuntimeDefault seccomp, no privilege escalation, no
//     capabilities, a read-only root file system with emptyDir /tmp and
//     home, requests and limits, a readiness probe on /health, restart
//     policy Never (the gateway decides what a dead agent means).
//
// Labels carry only selector-safe values (managed, provider name, instance
// name, a hash of the session); the full identity (session, owner hash,
// conversation, configuration, provider, pool) is in annotations. Sleep
// deletes the pod and keeps the claim and the Secret; wake creates a new
// pod of the same name on the same claim, and the agent resumes its CLI
// session from /state. Deaths (a failed, evicted or deleted pod) come from
// an informer on the agents' pods.
//
// The control plane reaches an agent at its pod IP (reach pod_ip: Caddy
// runs in the cluster or routes to pods) or through the API server's
// port-forward (reach port_forward: one local listener per running pod).
// No API key ever reaches a pod, a Secret, a label or an annotation: keys
// travel with each query.
package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Labels set on every agent pod, claim and Secret: selector-safe values
// only (a label value is at most 63 characters of [A-Za-z0-9._-]).
const (
	// LabelManaged marks objects made by agcluster ("true").
	LabelManaged = "agcluster.dev/managed"
	// LabelProvider holds the configured name of the provider that made
	// the object: providers of other names in the namespace ignore it.
	LabelProvider = "agcluster.dev/provider"
	// LabelInstance holds the instance's name (the pod's, the claim's and
	// the Secret's), to select one conversation's objects.
	LabelInstance = "agcluster.dev/instance"
	// LabelSessionHash holds the first 32 hex digits of the SHA-256 of the
	// session id, to find a session's objects by label (absent on an
	// unbound warm-pool agent).
	LabelSessionHash = "agcluster.dev/session-hash"
	// LabelAppName is the standard app.kubernetes.io/name label
	// ("agcluster-agent").
	LabelAppName = "app.kubernetes.io/name"
)

// Annotations holding an agent's identity (written and read through
// [providers.IdentityKeys]); LabelManaged and LabelProvider are also
// annotations, under the same keys.
const (
	// AnnotationSession holds the session id.
	AnnotationSession = "agcluster.dev/session"
	// AnnotationOwner holds the owner's opaque id (a hash).
	AnnotationOwner = "agcluster.dev/owner"
	// AnnotationConversation holds the client's conversation id.
	AnnotationConversation = "agcluster.dev/conversation"
	// AnnotationConfig holds the agent configuration id.
	AnnotationConfig = "agcluster.dev/config"
	// AnnotationPool names the warm pool entry an agent was made for
	// (absent once it is bound to a session).
	AnnotationPool = "agcluster.dev/pool"
)

// identityKeys are the annotations an agent's identity is recorded under.
var identityKeys = providers.IdentityKeys{
	Managed:      LabelManaged,
	Provider:     LabelProvider,
	Session:      AnnotationSession,
	Owner:        AnnotationOwner,
	Conversation: AnnotationConversation,
	Config:       AnnotationConfig,
	Pool:         AnnotationPool,
}

// Reach modes: how the control plane reaches an agent.
const (
	// ReachPodIP: http://<pod IP>:8080, for a Caddy running in the cluster
	// (or on a network that routes to pod IPs).
	ReachPodIP = "pod_ip"
	// ReachPortForward: a local listener per running pod, forwarded
	// through the API server (pods/portforward), for a Caddy outside the
	// cluster.
	ReachPortForward = "port_forward"
)

// Defaults applied by [New] to zero-valued [Options] fields.
const (
	// DefaultName is the provider's name when Options.Name is empty.
	DefaultName = "kubernetes"
	// DefaultNamespace is where agents run.
	DefaultNamespace = "agcluster"
	// DefaultWorkspaceSize is the size of a conversation's claim.
	DefaultWorkspaceSize = "1Gi"
	// DefaultCPUs is the agent container's CPU limit.
	DefaultCPUs = "1"
	// DefaultMemory is the agent container's memory limit (and request).
	DefaultMemory = "1Gi"
	// DefaultReadyTimeout bounds how long Create and Wake wait for the pod
	// to be scheduled, its claim bound, its image pulled and the agent
	// ready.
	DefaultReadyTimeout = 2 * time.Minute
)

// Fixed facts about the agent image (agent/Dockerfile) and the pods.
const (
	agentPort     = 8080
	containerName = "agent"
	workspaceDir  = "/workspace"
	stateDir      = "/state"
	homeDir       = "/home/agent"
	// agentUID is the image's agent user (and group); the pod runs as it
	// and the claim's files belong to its group (fsGroup).
	agentUID = 1000
	// tokenKey and podSpecKey are the Secret's keys: the agent's token,
	// and the pod spec a wake re-creates the pod from.
	tokenKey   = "token"
	podSpecKey = "pod.json"
	// Subdirectories of the claim mounted at /workspace and /state.
	workspaceSubPath = "workspace"
	stateSubPath     = "state"
	// terminationGrace is how long a deleted pod's agent has after
	// SIGTERM (it exits at once: tini forwards the signal and the agent
	// shuts its server down within 5 s).
	terminationGrace = 10
	// destroyGrace is the grace period of a Destroy's pod deletion.
	destroyGrace = 1
	// emptyDirSize bounds /tmp and the home directory.
	emptyDirSize = "256Mi"
	// cleanupBudget bounds the calls that undo a failed Create.
	cleanupBudget = 30 * time.Second
	// clientQPS and clientBurst raise client-go's default rate limit (5
	// and 10): each Create is a handful of calls.
	clientQPS   = 50
	clientBurst = 100
)

// Options configure the Kubernetes provider. The guest module [Module]
// embeds this struct as its JSON configuration.
type Options struct {
	// Name is the provider's configured name (Provider.Name), recorded on
	// every object: providers of different names share a namespace
	// without seeing each other's agents. Default "kubernetes"; it must be
	// a valid label value. It is not part of the JSON: the app names its
	// providers.
	Name string `json:"-"`
	// Kubeconfig is the path of a kubeconfig file. Empty means the
	// in-cluster configuration (Caddy runs in a pod with a service
	// account), then $KUBECONFIG, then ~/.kube/config.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Context is the kubeconfig context to use. Default: its current one.
	Context string `json:"context,omitempty"`
	// Namespace is where agents run (it must exist). Default "agcluster".
	Namespace string `json:"namespace,omitempty"`
	// Image is the agent image (required), in a registry the cluster's
	// nodes can pull from.
	Image string `json:"image,omitempty"`
	// ImagePullPolicy is Always, IfNotPresent or Never. Default
	// Kubernetes' own (Always for a :latest tag, IfNotPresent otherwise).
	ImagePullPolicy string `json:"image_pull_policy,omitempty"`
	// ImagePullSecrets name Secrets of the namespace holding registry
	// credentials for Image.
	ImagePullSecrets []string `json:"image_pull_secrets,omitempty"`
	// RuntimeClass is the pods' RuntimeClass, e.g. gvisor or kata for a
	// stronger sandbox than the node's default runtime.
	RuntimeClass string `json:"runtime_class,omitempty"`
	// StorageClass is the claims' StorageClass. Empty means the cluster's
	// default.
	StorageClass string `json:"storage_class,omitempty"`
	// WorkspaceSize is the size each conversation's claim requests (the
	// workspace and the CLI's state together), a Kubernetes quantity.
	// Default "1Gi".
	WorkspaceSize string `json:"workspace_size,omitempty"`
	// Reach is how the control plane reaches agents: "pod_ip" (Caddy runs
	// in the cluster or routes to pod IPs) or "port_forward" (through the
	// API server, for a Caddy outside the cluster). Default: pod_ip with
	// the in-cluster configuration, port_forward with a kubeconfig.
	Reach string `json:"reach,omitempty"`
	// CPUs is the agent container's CPU limit, a Kubernetes quantity such
	// as "1" or "500m"; it requests a quarter of it (agents are idle most
	// of the time). Default "1".
	CPUs string `json:"cpus,omitempty"`
	// Memory is the agent container's memory limit and request, a
	// Kubernetes quantity such as "1Gi". Default "1Gi".
	Memory string `json:"memory,omitempty"`
	// NodeSelector restricts agents to nodes with these labels.
	NodeSelector map[string]string `json:"node_selector,omitempty"`
	// Env is extra environment passed to every agent. It must not hold an
	// API key (ANTHROPIC_API_KEY, ...) nor the variables the provider sets
	// (AGENT_TOKEN, AGENT_CONFIG, AGENT_ADDR, AGENT_WORKSPACE,
	// AGENT_STATE_DIR). A Spec's Env overrides it name by name.
	Env map[string]string `json:"env,omitempty"`
	// NetworkPolicy, when set, makes the provider apply a NetworkPolicy
	// that admits ingress to its agents' port only from the gateway. It
	// needs a CNI plugin that enforces policies, and does not apply to
	// port_forward (which enters the pod through the kubelet).
	NetworkPolicy *NetworkPolicy `json:"network_policy,omitempty"`
	// ReadyTimeout bounds how long Create and Wake wait for the pod to be
	// scheduled, its claim bound, its image pulled and its agent ready: a
	// duration string such as "2m", or nanoseconds. Default 2m.
	ReadyTimeout caddy.Duration `json:"ready_timeout,omitempty"`
}

// NetworkPolicy says where the gateway's requests to agents come from.
// At least one source is required.
type NetworkPolicy struct {
	// FromPods are the labels of the gateway's pods, e.g.
	// {"app.kubernetes.io/name": "agcluster-caddy"}.
	FromPods map[string]string `json:"from_pods,omitempty"`
	// FromNamespace is the namespace of the gateway's pods when it is not
	// the agents' (matched by its kubernetes.io/metadata.name label).
	FromNamespace string `json:"from_namespace,omitempty"`
	// FromCIDRs are address ranges the gateway connects from, e.g. a node
	// subnet when Caddy runs on the host network.
	FromCIDRs []string `json:"from_cidrs,omitempty"`
}

// Provider runs agents as Kubernetes pods. It is safe for concurrent use.
type Provider struct {
	opts   Options
	cfg    *rest.Config
	cs     kubernetes.Interface
	logger *zap.Logger

	mu       sync.Mutex
	creating providers.IDSet        // instances this Provider is creating
	ended    map[types.UID]endedPod // pods this Provider deleted, why and when
	policyOK bool                   // the NetworkPolicy is in place
}

// endReason is why this Provider deleted a pod.
type endReason int

// Reasons a pod was deleted by its provider.
const (
	notEnded endReason = iota
	// endDestroyed: destroyed, a failed create undone, or a dead pod
	// cleared for a wake: its end is no event.
	endDestroyed
	// endSlept: put to sleep: its end is ReasonSlept, not a death.
	endSlept
)

// endedPod records a pod this Provider deleted.
type endedPod struct {
	why endReason
	at  time.Time
}

// New checks opts, applies defaults, loads the client configuration
// (in-cluster, or the kubeconfig) and creates the clientset. It does not
// contact the API server, so it is fast; use [Provider.Ping] for that. A
// nil logger discards logs.
func New(opts Options, logger *zap.Logger) (*Provider, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	cfg, inCluster, err := restConfig(opts)
	if err != nil {
		return nil, err
	}
	if opts.Reach == "" {
		opts.Reach = ReachPortForward
		if inCluster {
			opts.Reach = ReachPodIP
		}
	}
	cfg.UserAgent = "caddy-agcluster"
	cfg.QPS, cfg.Burst = clientQPS, clientBurst
	cfg.WarningHandlerWithContext = warningLogger{logger}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client for %s: %w", cfg.Host, err)
	}
	return &Provider{
		opts:   opts,
		cfg:    cfg,
		cs:     cs,
		logger: logger,
		ended:  map[types.UID]endedPod{},
	}, nil
}

// restConfig loads the client configuration: the in-cluster one when no
// kubeconfig or context is named and Caddy runs in a pod, else the
// kubeconfig (Options.Kubeconfig, or $KUBECONFIG, or ~/.kube/config). It
// reports whether the in-cluster configuration was used.
func restConfig(opts Options) (*rest.Config, bool, error) {
	if opts.Kubeconfig == "" && opts.Context == "" {
		cfg, err := rest.InClusterConfig()
		if err == nil {
			return cfg, true, nil
		}
		if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, false, fmt.Errorf("kubernetes: in-cluster configuration: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = opts.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: opts.Context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		where := "the in-cluster configuration, $KUBECONFIG or ~/.kube/config"
		if opts.Kubeconfig != "" {
			where = opts.Kubeconfig
		}
		return nil, false, fmt.Errorf("kubernetes: no client configuration from %s: %w", where, err)
	}
	return cfg, false, nil
}

// normalize applies defaults to zero-valued fields and checks the result.
func (opts Options) normalize() (Options, error) {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.WorkspaceSize == "" {
		opts.WorkspaceSize = DefaultWorkspaceSize
	}
	if opts.CPUs == "" {
		opts.CPUs = DefaultCPUs
	}
	if opts.Memory == "" {
		opts.Memory = DefaultMemory
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = caddy.Duration(DefaultReadyTimeout)
	}
	if err := opts.check(); err != nil {
		return opts, fmt.Errorf("kubernetes: options: %w", err)
	}
	return opts, nil
}

// check reports every problem of normalized options at once.
func (opts Options) check() error {
	var errs []error
	for _, msg := range validation.IsValidLabelValue(opts.Name) {
		errs = append(errs, fmt.Errorf("provider name %q: %s (it is a label value)", opts.Name, msg))
	}
	for _, msg := range validation.IsDNS1123Label(opts.Namespace) {
		errs = append(errs, fmt.Errorf("namespace %q: %s", opts.Namespace, msg))
	}
	if strings.TrimSpace(opts.Image) == "" {
		errs = append(errs, errors.New("image is required (the agent image, in a registry the nodes can pull from)"))
	}
	switch corev1.PullPolicy(opts.ImagePullPolicy) {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("image_pull_policy %q: want Always, IfNotPresent or Never", opts.ImagePullPolicy))
	}
	switch opts.Reach {
	case "", ReachPodIP, ReachPortForward:
	default:
		errs = append(errs, fmt.Errorf("reach %q: want pod_ip or port_forward", opts.Reach))
	}
	for name, v := range map[string]string{"workspace_size": opts.WorkspaceSize, "cpus": opts.CPUs, "memory": opts.Memory} {
		if q, err := resource.ParseQuantity(v); err != nil || q.Sign() <= 0 {
			errs = append(errs, fmt.Errorf("%s %q: want a positive Kubernetes quantity such as 1Gi or 500m", name, v))
		}
	}
	for _, n := range append([]string{opts.RuntimeClass, opts.StorageClass}, opts.ImagePullSecrets...) {
		if n == "" {
			continue
		}
		for _, msg := range validation.IsDNS1123Subdomain(n) {
			errs = append(errs, fmt.Errorf("name %q: %s", n, msg))
		}
	}
	errs = append(errs, checkLabels("node_selector", opts.NodeSelector)...)
	if opts.NetworkPolicy != nil {
		errs = append(errs, opts.NetworkPolicy.check()...)
	}
	if opts.ReadyTimeout < 0 {
		errs = append(errs, errors.New("ready_timeout must not be negative"))
	}
	if err := providers.CheckEnv(opts.Env); err != nil {
		errs = append(errs, fmt.Errorf("env: %w", err))
	}
	return errors.Join(errs...)
}

// check reports the problems of a network policy's sources.
func (np *NetworkPolicy) check() []error {
	var errs []error
	if len(np.FromPods) == 0 && len(np.FromCIDRs) == 0 {
		errs = append(errs, errors.New("network_policy: name the gateway's pods (from_pods) or addresses (from_cidr)"))
	}
	if np.FromNamespace != "" && len(np.FromPods) == 0 {
		errs = append(errs, errors.New("network_policy: from_namespace needs from_pods"))
	}
	for _, msg := range validation.IsDNS1123Label(np.FromNamespace) {
		if np.FromNamespace != "" {
			errs = append(errs, fmt.Errorf("network_policy: from_namespace %q: %s", np.FromNamespace, msg))
		}
	}
	errs = append(errs, checkLabels("network_policy: from_pods", np.FromPods)...)
	for _, c := range np.FromCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			errs = append(errs, fmt.Errorf("network_policy: from_cidr %q: want a CIDR such as 10.0.0.0/24", c))
		}
	}
	return errs
}

// checkLabels reports label keys and values Kubernetes would refuse.
func checkLabels(what string, labels map[string]string) []error {
	var errs []error
	for k, v := range labels {
		for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
			errs = append(errs, fmt.Errorf("%s %s=%s: %s", what, k, v, msg))
		}
	}
	return errs
}

// Name returns the provider's configured name (Options.Name, default
// "kubernetes").
func (p *Provider) Name() string { return p.opts.Name }

// Kind returns "kubernetes".
func (p *Provider) Kind() string { return "kubernetes" }

// Options returns the options in effect, defaults applied (Reach
// resolved).
func (p *Provider) Options() Options { return p.opts }

// Close stops the port-forward listeners this provider value alone
// holds. Agents keep running.
func (p *Provider) Close() error {
	releaseForwards(p)
	return nil
}

// instanceName is the deterministic name of a session's pod, claim and
// Secret: "agent-", a readable part of the session id, and a hash of the
// provider's name and the session id. A warm-pool agent (no session yet)
// gets a random name instead.
func (p *Provider) instanceName(spec providers.Spec) string {
	if spec.SessionID == "" {
		return "agent-pool-" + randhex.String(6)
	}
	sum := sha256.Sum256([]byte(p.Name() + "\x00" + spec.SessionID))
	readable := dnsPart(spec.SessionID, 30)
	if readable == "" {
		return "agent-" + hex.EncodeToString(sum[:])[:16]
	}
	return "agent-" + readable + "-" + hex.EncodeToString(sum[:])[:10]
}

// dnsPart keeps at most n characters of s that a DNS label allows
// (lowercase letters and digits; anything else becomes a dash), without
// leading or trailing dashes.
func dnsPart(s string, n int) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if b.Len() >= n {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// sessionHash is the LabelSessionHash value of a session ("" for none).
func sessionHash(sessionID string) string {
	if sessionID == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(sessionID))
	return hex.EncodeToString(sum[:])[:32]
}

// markEnded records that this Provider deletes the pod with this UID,
// and why, so the watcher reports its end as what it is (pod UIDs are
// exact where names are not: a woken agent's new pod has the old name).
// Records older than an hour are dropped.
func (p *Provider) markEnded(uid types.UID, why endReason) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for k, e := range p.ended {
		if now.Sub(e.at) > time.Hour {
			delete(p.ended, k)
		}
	}
	p.ended[uid] = endedPod{why: why, at: now}
}

// endedBy says why this Provider deleted the pod with this UID
// (notEnded: it did not).
func (p *Provider) endedBy(uid types.UID) endReason {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ended[uid].why
}

// warningLogger logs the API server's warnings (deprecations, policy
// notices) instead of client-go's default of printing them.
type warningLogger struct{ logger *zap.Logger }

// HandleWarningHeaderWithContext implements rest.WarningHandlerWithContext.
func (w warningLogger) HandleWarningHeaderWithContext(_ context.Context, code int, _ string, text string) {
	if code == 299 && text != "" {
		w.logger.Warn("kubernetes api warning", zap.String("warning", text))
	}
}

// Interface guards.
var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Sleeper  = (*Provider)(nil)
	_ providers.Watcher  = (*Provider)(nil)
	_ providers.Pinger   = (*Provider)(nil)
)
