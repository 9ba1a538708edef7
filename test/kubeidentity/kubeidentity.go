// Package kubeidentity mints the identity the kubelet gives a pod, for
// tests and simulations on an API server that has no kubelet: a Pod object
// to bind a token to, and a token of a ServiceAccount from TokenRequest.
package kubeidentity

import (
	"context"
	"fmt"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// tokenSeconds is the lifetime of every token: an hour, longer than any
// test or simulation.
const tokenSeconds = 3600

// NewPod returns a Pod ns/name running as ServiceAccount sa, to be
// created; nothing will run it.
func NewPod(ns, name, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "example.com/app:test"}},
		},
	}
}

// Token returns a new hour-long token of ServiceAccount ns/sa for
// audiences (the API server's own when none). Bound to pod when pod is not
// nil, it is what the kubelet projects into that pod; unbound, it is what
// `kubectl create token` gives. Every call returns a different token.
func Token(ctx context.Context, cs kubernetes.Interface, ns, sa string, pod *corev1.Pod, audiences ...string) (string, error) {
	spec := authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](tokenSeconds)}
	if pod != nil {
		spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for %s/%s: %w", ns, sa, err)
	}
	return tr.Status.Token, nil
}
