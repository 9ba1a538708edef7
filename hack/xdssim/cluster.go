package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sync/errgroup"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gatehouse.dev/gatehouse/internal/scheme"
	"gatehouse.dev/gatehouse/test/controlplane"
	"gatehouse.dev/gatehouse/test/kubeidentity"
	"gatehouse.dev/gatehouse/test/sidecarrbac"
)

// cluster is the API server the simulation runs on, with admin clients.
type cluster struct {
	cp     *controlplane.ControlPlane
	config *rest.Config
	client client.Client
	cs     *kubernetes.Clientset
}

// repoRoot is the top of the source tree this command was built from.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// assetsDir is --assets, or what hack/build-apiserver.sh builds (cached).
func assetsDir(ctx context.Context, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(), "hack", "build-apiserver.sh")) //nolint:gosec // the repository's own script
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the API server with hack/build-apiserver.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// startCluster starts etcd and kube-apiserver on 127.0.0.1 with the CRDs.
func startCluster(assets string) (*cluster, error) {
	cp, err := controlplane.Start(assets)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, 0 // the simulation's own writes are not the subject; never throttle them
	c := &cluster{cp: cp, config: cfg}
	if c.client, err = client.New(cfg, client.Options{Scheme: scheme.New()}); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	if c.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return c, nil
}

func (c *cluster) stop() error { return c.cp.Stop() }

// createNamespace creates the namespace name with a ServiceAccount
// "sidecar" (the simulated and full sidecars' identity) and, for informer
// sidecars, a Role with the sidecar's generated rules bound to it.
func (c *cluster) createNamespace(ctx context.Context, name string) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sidecarSA, Namespace: name}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sidecarSA, Namespace: name}, Rules: sidecarrbac.Rules()},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: sidecarSA, Namespace: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sidecarSA},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sidecarSA, Namespace: name}},
		},
	}
	for _, o := range objs {
		if err := c.client.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// sidecarSA is the ServiceAccount every sidecar of a namespace runs as.
const sidecarSA = "sidecar"

// token returns a new hour-long token of the namespace's sidecar
// ServiceAccount for audience (the API server's own when empty), bound to
// pod when it is not nil, as the kubelet projects one into each pod: every
// call gives a different token.
func (c *cluster) token(ctx context.Context, ns, audience string, pod *corev1.Pod) (string, error) {
	var audiences []string
	if audience != "" {
		audiences = []string{audience}
	}
	return kubeidentity.Token(ctx, c.cs, ns, sidecarSA, pod, audiences...)
}

// tokens returns n tokens of the namespace's sidecar ServiceAccount for
// audience (the API server's own when empty), requested 16 at a time.
// With a pod prefix, each is bound to a Pod of its own, <prefix>-<i>,
// created first (nothing runs it: there is no kubelet): the xDS server
// accepts only pod-bound tokens, as the kubelet projects them.
func (c *cluster) tokens(ctx context.Context, ns, audience, podPrefix string, n int) ([]string, error) {
	out := make([]string, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range out {
		g.Go(func() error {
			var pod *corev1.Pod
			if podPrefix != "" {
				var err error
				if pod, err = c.createPod(ctx, ns, fmt.Sprintf("%s-%d", podPrefix, i)); err != nil {
					return err
				}
			}
			t, err := c.token(ctx, ns, audience, pod)
			out[i] = t
			return err
		})
	}
	return out, g.Wait()
}

// createPod creates a Pod object running as the sidecar ServiceAccount.
func (c *cluster) createPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	pod := kubeidentity.NewPod(ns, name, sidecarSA)
	pod.Labels = map[string]string{"app": "xdssim"}
	if err := c.client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
	}
	return pod, nil
}
