package kubernetes

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agcluster/caddy-agcluster/providers"
)

// pod is a pod in the given phase with the agent container in state cs.
func pod(uid string, phase corev1.PodPhase, cs corev1.ContainerState, conds ...corev1.PodCondition) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-x", UID: types.UID(uid), Annotations: map[string]string{AnnotationSession: "sess_1"}},
		Status: corev1.PodStatus{
			Phase:             phase,
			Conditions:        conds,
			ContainerStatuses: []corev1.ContainerStatus{{Name: containerName, Image: "agent:v1", State: cs}},
		},
	}
}

var (
	running    = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	readyTrue  = corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue}
	readyFalse = corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse}
)

func waiting(reason string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "detail of " + reason}}
}

func terminated(code int32, reason string) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: "last line"}}
}

func deleting(p *corev1.Pod) *corev1.Pod {
	now := metav1.Now()
	p.DeletionTimestamp = &now
	return p
}

// TestPodStarted: a Ready pod is started; image and container errors and
// ended pods fail at once, with the right sentinel; anything else waits.
func TestPodStarted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		ready   bool
		is      error
		wantErr string
	}{
		{"ready", pod("u", corev1.PodRunning, running, readyTrue), true, nil, ""},
		{"running, not ready", pod("u", corev1.PodRunning, running, readyFalse), false, nil, ""},
		{"pending", pod("u", corev1.PodPending, waiting("ContainerCreating")), false, nil, ""},
		{"image pull error", pod("u", corev1.PodPending, waiting("ErrImagePull")), false, providers.ErrImageMissing, `image "agent:v1" cannot be pulled (ErrImagePull`},
		{"image pull backoff", pod("u", corev1.PodPending, waiting("ImagePullBackOff")), false, providers.ErrImageMissing, "ImagePullBackOff"},
		{"never pull, image absent", pod("u", corev1.PodPending, waiting("ErrImageNeverPull")), false, providers.ErrImageMissing, "ErrImageNeverPull"},
		{"bad image name", pod("u", corev1.PodPending, waiting("InvalidImageName")), false, providers.ErrImageMissing, "InvalidImageName"},
		{"config error", pod("u", corev1.PodPending, waiting("CreateContainerConfigError")), false, providers.ErrNotReady, "container cannot start (CreateContainerConfigError"},
		{"failed", pod("u", corev1.PodFailed, terminated(1, "Error")), false, providers.ErrNotReady, "pod failed: exit code 1 (Error)\nlast log lines:\nlast line"},
		{"exited, phase not yet updated", pod("u", corev1.PodRunning, terminated(2, "Error")), false, providers.ErrNotReady, "container exited: exit code 2"},
		{"being deleted", deleting(pod("u", corev1.PodRunning, running, readyTrue)), false, providers.ErrNotReady, "being deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready, err := podStarted(tc.pod, "fallback:v1")
			assert.Equal(t, tc.ready, ready)
			if tc.is == nil {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

// TestEventsFor: deaths, OOM kills, sleeps and destroys, each seen once.
func TestEventsFor(t *testing.T) {
	p := offline(t, nil)
	p.markEnded("slept", endSlept)
	p.markEnded("destroyed", endDestroyed)
	alive := func(uid string) *corev1.Pod { return pod(uid, corev1.PodRunning, running, readyTrue) }
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Pod
		want     []providers.EventReason
		code     int
	}{
		{"still running", alive("a"), alive("a"), nil, 0},
		{"failed", alive("a"), pod("a", corev1.PodFailed, terminated(3, "Error")), []providers.EventReason{providers.ReasonDied}, 3},
		{"evicted", alive("a"), func() *corev1.Pod {
			e := pod("a", corev1.PodFailed, terminated(137, "Error"))
			e.Status.Reason = "Evicted"
			return e
		}(), []providers.EventReason{providers.ReasonDied}, 137},
		{"out of memory", alive("a"), pod("a", corev1.PodFailed, terminated(137, "OOMKilled")), []providers.EventReason{providers.ReasonOOM, providers.ReasonDied}, 137},
		{"deleted behind the back", alive("a"), nil, []providers.EventReason{providers.ReasonDied}, killedExitCode},
		{"deletion started behind the back", alive("a"), deleting(alive("a")), []providers.EventReason{providers.ReasonDied}, killedExitCode},
		{"already reported, then deleted", pod("a", corev1.PodFailed, terminated(1, "Error")), nil, nil, 0},
		{"deleting, then deleted", deleting(alive("a")), nil, nil, 0},
		{"slept by the provider", alive("slept"), deleting(alive("slept")), []providers.EventReason{providers.ReasonSlept}, 0},
		{"destroyed by the provider", alive("destroyed"), nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := p.eventsFor(tc.old, tc.cur)
			var got []providers.EventReason
			for _, ev := range evs {
				got = append(got, ev.Reason)
				assert.Equal(t, "agent-x", ev.InstanceID)
				assert.Equal(t, "sess_1", ev.SessionID)
				assert.False(t, ev.Time.IsZero())
			}
			assert.Equal(t, tc.want, got)
			if len(evs) > 0 && tc.want[len(tc.want)-1] == providers.ReasonDied {
				assert.Equal(t, tc.code, evs[len(evs)-1].ExitCode)
			}
		})
	}

	p.creating.Mark("agent-x")
	assert.Empty(t, p.eventsFor(alive("a"), nil), "a pod still being created is left to Create")
}

// TestAPIErrors: API errors become clear errors wrapping the sentinel
// that fits, and stay recognisable as API errors.
func TestAPIErrors(t *testing.T) {
	p := offline(t, nil)
	pods := schema.GroupResource{Resource: "pods"}
	for _, tc := range []struct {
		name  string
		err   error
		is    error
		want  string
		check func(error) bool
	}{
		{"forbidden", apierrors.NewForbidden(pods, "agent-x", errors.New(`User "system:serviceaccount:x:y" cannot create resource "pods"`)),
			providers.ErrUnavailable, `forbidden in namespace "agcluster"`, apierrors.IsForbidden},
		{"unauthorized", apierrors.NewUnauthorized("bad token"), providers.ErrUnavailable, "refused the credentials", apierrors.IsUnauthorized},
		{"namespace missing", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "agcluster"), providers.ErrUnavailable,
			`namespace "agcluster" does not exist`, apierrors.IsNotFound},
		{"already exists", apierrors.NewAlreadyExists(pods, "agent-x"), nil, "this conversation has an agent already", apierrors.IsAlreadyExists},
		{"not found", apierrors.NewNotFound(pods, "agent-x"), providers.ErrGone, "not found", apierrors.IsNotFound},
		{"unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, providers.ErrUnavailable, "API server at https://127.0.0.1:1 unavailable", nil},
		{"overloaded", apierrors.NewTooManyRequests("slow down", 1), providers.ErrUnavailable, "unavailable", apierrors.IsTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.apiError("create pod", "agent-x", tc.err)
			assert.Contains(t, err.Error(), "kubernetes: create pod agent-x: ")
			assert.Contains(t, err.Error(), tc.want)
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
			for _, other := range []error{providers.ErrUnavailable, providers.ErrGone} {
				if other != tc.is {
					assert.NotErrorIs(t, err, other)
				}
			}
			if tc.check != nil {
				assert.True(t, tc.check(err), "still recognisable as the API error")
			}
		})
	}
}
