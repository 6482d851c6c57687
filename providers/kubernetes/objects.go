package kubernetes

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/providers"
)

// Object names and values inside the pod.
const (
	claimVolume = "data"
	tmpVolume   = "tmp"
	homeVolume  = "home"
	// readinessPath asks the agent to hold its answer up to 4 s until its
	// CLI is ready, so the pod turns Ready the moment the agent does
	// rather than a probe period later.
	readinessPath = "/health?wait=4s"
)

// instanceMeta is what every object of an instance carries: its selector-safe
// labels and the identity annotations.
type instanceMeta struct {
	labels      map[string]string
	annotations map[string]string
}

// metaFor returns the labels and annotations of instance name with
// identity id.
func (p *Provider) metaFor(name string, id providers.Identity) instanceMeta {
	labels := map[string]string{
		LabelManaged:  "true",
		LabelProvider: p.Name(),
		LabelInstance: name,
		LabelAppName:  "agcluster-agent",
	}
	if h := sessionHash(id.SessionID); h != "" {
		labels[LabelSessionHash] = h
	}
	return instanceMeta{labels: labels, annotations: identityKeys.Tags(id)}
}

// objectMeta is the metadata of one of the instance's objects; owner,
// when set, is the claim the object belongs to.
func (m instanceMeta) objectMeta(name, namespace string, owner *corev1.PersistentVolumeClaim) metav1.ObjectMeta {
	om := metav1.ObjectMeta{
		Name:        name,
		Namespace:   namespace,
		Labels:      maps.Clone(m.labels),
		Annotations: maps.Clone(m.annotations),
	}
	if owner != nil {
		om.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "v1",
			Kind:       "PersistentVolumeClaim",
			Name:       owner.Name,
			UID:        owner.UID,
		}}
	}
	return om
}

// claimFor is the conversation's claim: one volume for the workspace and
// the CLI's state (two subPaths), so each agent attaches one volume.
func (p *Provider) claimFor(name string, m instanceMeta) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: m.objectMeta(name, p.opts.Namespace, nil),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(p.opts.WorkspaceSize)},
			},
		},
	}
	if p.opts.StorageClass != "" {
		c.Spec.StorageClassName = &p.opts.StorageClass
	}
	return c
}

// secretFor is the instance's Secret: the agent's token and the pod spec
// a wake re-creates the pod from. It belongs to the claim.
func (p *Provider) secretFor(claim *corev1.PersistentVolumeClaim, m instanceMeta, token string, spec corev1.PodSpec) (*corev1.Secret, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: encode the pod spec: %w", err)
	}
	return &corev1.Secret{
		ObjectMeta: m.objectMeta(claim.Name, p.opts.Namespace, claim),
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{tokenKey: []byte(token), podSpecKey: specJSON},
	}, nil
}

// podFor is the agent's pod: spec with the instance's metadata, belonging
// to the claim.
func (p *Provider) podFor(claim *corev1.PersistentVolumeClaim, m instanceMeta, spec corev1.PodSpec) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: m.objectMeta(claim.Name, p.opts.Namespace, claim), Spec: spec}
}

// podSpec is the hardened spec of instance name's pod for spec: non-root
// as the image's agent user (the claim's files belong to its group), no
// service account token, RuntimeDefault seccomp, no privilege escalation,
// no capabilities, a read-only root file system with emptyDir /tmp and
// home, requests and limits, a readiness probe on /health, restart policy
// Never and a short grace period. The token comes from the instance's
// Secret; the environment holds no key.
func (p *Provider) podSpec(spec providers.Spec, name string, cfgJSON []byte) corev1.PodSpec {
	f, t := false, true
	uid := int64(agentUID)
	grace := int64(terminationGrace)
	onRootMismatch := corev1.FSGroupChangeOnRootMismatch
	seccomp := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	ps := corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		AutomountServiceAccountToken:  &f,
		EnableServiceLinks:            &f,
		TerminationGracePeriodSeconds: &grace,
		NodeSelector:                  maps.Clone(p.opts.NodeSelector),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:        &t,
			RunAsUser:           &uid,
			RunAsGroup:          &uid,
			FSGroup:             &uid,
			FSGroupChangePolicy: &onRootMismatch,
			SeccompProfile:      seccomp,
		},
		Containers: []corev1.Container{{
			Name:            containerName,
			Image:           cmp.Or(spec.Image, p.opts.Image),
			ImagePullPolicy: corev1.PullPolicy(p.opts.ImagePullPolicy),
			Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: agentPort, Protocol: corev1.ProtocolTCP}},
			Env:             p.env(spec, name, cfgJSON),
			Resources:       p.resources(spec.Limits),
			VolumeMounts: []corev1.VolumeMount{
				{Name: claimVolume, MountPath: workspaceDir, SubPath: workspaceSubPath},
				{Name: claimVolume, MountPath: stateDir, SubPath: stateSubPath},
				{Name: tmpVolume, MountPath: "/tmp"},
				{Name: homeVolume, MountPath: homeDir},
			},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: readinessPath, Port: intstr.FromInt32(agentPort), Scheme: corev1.URISchemeHTTP,
				}},
				PeriodSeconds:    1,
				TimeoutSeconds:   6,
				SuccessThreshold: 1,
				FailureThreshold: 3,
			},
			// A failed container's last log lines become its termination
			// message: the provider quotes them without reading logs.
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: &f,
				Privileged:               &f,
				ReadOnlyRootFilesystem:   &t,
				RunAsNonRoot:             &t,
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				SeccompProfile:           seccomp,
			},
		}},
		Volumes: []corev1.Volume{
			{Name: claimVolume, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name},
			}},
			emptyDir(tmpVolume),
			emptyDir(homeVolume),
		},
	}
	if p.opts.RuntimeClass != "" {
		rc := p.opts.RuntimeClass
		ps.RuntimeClassName = &rc
	}
	for _, s := range p.opts.ImagePullSecrets {
		ps.ImagePullSecrets = append(ps.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	return ps
}

// emptyDir is a size-bounded scratch volume (the node's disk).
func emptyDir(name string) corev1.Volume {
	size := resource.MustParse(emptyDirSize)
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &size}}}
}

// env is the agent's environment: the operator's and the spec's extra
// variables (sorted), the configuration, the state directory, and the
// token from the instance's Secret.
func (p *Provider) env(spec providers.Spec, name string, cfgJSON []byte) []corev1.EnvVar {
	vars := maps.Clone(p.opts.Env)
	if vars == nil {
		vars = map[string]string{}
	}
	maps.Copy(vars, spec.Env)
	env := make([]corev1.EnvVar, 0, len(vars)+3)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, corev1.EnvVar{Name: k, Value: vars[k]})
	}
	return append(env,
		corev1.EnvVar{Name: agent.EnvConfig, Value: string(cfgJSON)},
		corev1.EnvVar{Name: agent.EnvStateDir, Value: stateDir},
		corev1.EnvVar{Name: agent.EnvToken, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name},
			Key:                  tokenKey,
		}}},
	)
}

// resources are the container's limits (the provider's, or the spec's)
// and requests: all of the memory (memory cannot be reclaimed from a
// process) and a quarter of the CPU (agents are idle most of the time). A
// process limit (Limits.Pids) has no pod-level equivalent: the kubelet's
// podPidsLimit applies.
func (p *Provider) resources(l providers.Limits) corev1.ResourceRequirements {
	cpu, mem := resource.MustParse(p.opts.CPUs), resource.MustParse(p.opts.Memory)
	if l.NanoCPUs > 0 {
		cpu = *resource.NewMilliQuantity((l.NanoCPUs+999_999)/1_000_000, resource.DecimalSI)
	}
	if l.MemoryBytes > 0 {
		mem = *resource.NewQuantity(l.MemoryBytes, resource.BinarySI)
	}
	request := resource.NewMilliQuantity(max(cpu.MilliValue()/4, 1), resource.DecimalSI)
	return corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem},
		Requests: corev1.ResourceList{corev1.ResourceCPU: *request, corev1.ResourceMemory: mem},
	}
}

// networkPolicyName names the provider's NetworkPolicy.
func (p *Provider) networkPolicyName() string {
	if part := dnsPart(p.Name(), 40); part == p.Name() {
		return "agcluster-agents-" + part
	}
	return "agcluster-agents-" + dnsPart(p.Name(), 30) + "-" + sessionHash(p.Name())[:8]
}

// networkPolicy admits ingress to the agent port of this provider's pods
// only from the gateway (its pods, or its addresses), and nothing else.
func (p *Provider) networkPolicy() *networkingv1.NetworkPolicy {
	np := p.opts.NetworkPolicy
	var from []networkingv1.NetworkPolicyPeer
	if len(np.FromPods) > 0 {
		peer := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: maps.Clone(np.FromPods)}}
		if np.FromNamespace != "" {
			peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: np.FromNamespace}}
		}
		from = append(from, peer)
	}
	for _, c := range np.FromCIDRs {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c}})
	}
	tcp, port := corev1.ProtocolTCP, intstr.FromInt32(agentPort)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name:      p.networkPolicyName(),
			Namespace: p.opts.Namespace,
			Labels:    map[string]string{LabelManaged: "true", LabelProvider: p.Name()},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: p.selectorLabels()},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  from,
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
}

// selectorLabels select this provider's objects.
func (p *Provider) selectorLabels() map[string]string {
	return map[string]string{LabelManaged: "true", LabelProvider: p.Name()}
}
