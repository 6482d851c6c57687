package kubernetes_test

import (
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/agcluster/caddy-agcluster/internal/kubetest"
	_ "github.com/agcluster/caddy-agcluster/module"
)

// manifests decodes every object of a YAML file of deploy/.
func manifests(t *testing.T, name string) []runtime.Object {
	return kubetest.Manifests(t, filepath.Join("deploy", name))
}

// TestDeployRBAC: the Role grants the provider's resources, each with
// only the verbs it uses, to the ServiceAccount the Deployment runs as.
func TestDeployRBAC(t *testing.T) {
	var role *rbacv1.Role
	var binding *rbacv1.RoleBinding
	var sa *corev1.ServiceAccount
	for _, o := range manifests(t, "rbac.yaml") {
		switch v := o.(type) {
		case *rbacv1.Role:
			role = v
		case *rbacv1.RoleBinding:
			binding = v
		case *corev1.ServiceAccount:
			sa = v
		}
	}
	require.NotNil(t, role)
	require.NotNil(t, binding)
	require.NotNil(t, sa)
	got := map[string][]string{}
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			got[res] = r.Verbs
		}
	}
	assert.Equal(t, map[string][]string{
		"pods":                   {"get", "list", "watch", "create", "delete"},
		"pods/portforward":       {"get", "create"},
		"persistentvolumeclaims": {"get", "list", "watch", "create", "delete", "patch"},
		"secrets":                {"get", "list", "create", "delete", "patch"},
		"networkpolicies":        {"get", "create", "update"},
	}, got)
	assert.Equal(t, role.Name, binding.RoleRef.Name)
	require.Len(t, binding.Subjects, 1)
	assert.Equal(t, sa.Name, binding.Subjects[0].Name)
	assert.Equal(t, sa.Namespace, binding.Subjects[0].Namespace)

	var dep *appsv1.Deployment
	var cm *corev1.ConfigMap
	for _, o := range manifests(t, "caddy.yaml") {
		switch v := o.(type) {
		case *appsv1.Deployment:
			dep = v
		case *corev1.ConfigMap:
			cm = v
		}
	}
	require.NotNil(t, dep)
	require.NotNil(t, cm)
	assert.Equal(t, sa.Name, dep.Spec.Template.Spec.ServiceAccountName)

	// The ConfigMap's Caddyfile adapts, and its network policy admits the
	// Deployment's own pods.
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, warnings, err := adapter.Adapt([]byte(cm.Data["Caddyfile"]), map[string]any{"filename": "Caddyfile"})
	require.NoError(t, err)
	assert.Empty(t, warnings)
	assert.Contains(t, string(out), `"from_pods":{"app.kubernetes.io/name":"agcluster-caddy"}`)
	assert.Equal(t, "agcluster-caddy", dep.Spec.Template.Labels["app.kubernetes.io/name"])
}
