// Package demo runs Gatehouse for real on the local machine: an etcd and a
// kube-apiserver on 127.0.0.1 (built from source by hack/build-apiserver.sh),
// the Gatehouse CRDs, the sample resources, and what the operator and the
// sidecar make of them.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"gatehouse.dev/gatehouse/config/samples"
	"gatehouse.dev/gatehouse/internal/controlplane"
	"gatehouse.dev/gatehouse/internal/scheme"
)

// Namespace is where the demo applies the samples.
const Namespace = "demo"

// Options configure a demo run.
type Options struct {
	// AssetsDir holds the kube-apiserver and etcd binaries.
	AssetsDir string
	// Out receives the demo's narration.
	Out io.Writer
	// Wait keeps everything running after the script until ctx ends
	// (Ctrl-C), so that people can explore with kubectl.
	Wait bool
}

// Run runs the demo script and stops everything it started before it
// returns, also when ctx is cancelled half way.
func Run(ctx context.Context, o Options) error {
	if o.AssetsDir == "" {
		return errors.New("no kube-apiserver/etcd directory: set KUBEBUILDER_ASSETS or pass --assets (make demo does this)")
	}
	say := func(format string, args ...any) { _, _ = fmt.Fprintf(o.Out, format+"\n", args...) }

	say("==> starting etcd and kube-apiserver on 127.0.0.1, installing the Gatehouse CRDs")
	cp, err := controlplane.Start(o.AssetsDir)
	if err != nil {
		return err
	}
	defer func() {
		say("==> stopping (kube-apiserver, etcd and the demo's temporary files)")
		_ = cp.Stop()
	}()
	c, err := client.New(cp.Config, client.Options{Scheme: scheme.New()})
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", Namespace, err)
	}

	say("==> applying the samples (config/samples) to namespace %s", Namespace)
	if err := applySamples(ctx, c); err != nil {
		return err
	}
	say("%s", kubectlGet(ctx, cp.KubeconfigPath))

	if o.Wait {
		say("==> Gatehouse is running. Explore with:\n    export KUBECONFIG=%s\n    kubectl get gatehouse -n %s\n  Press Ctrl-C to stop.", cp.KubeconfigPath, Namespace)
		<-ctx.Done()
	}
	return nil
}

func applySamples(ctx context.Context, c client.Client) error {
	files, err := fs.Glob(samples.Files, "*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		data, err := fs.ReadFile(samples.Files, f)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			return fmt.Errorf("decoding sample %s: %w", f, err)
		}
		obj.SetNamespace(Namespace)
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("applying sample %s: %w", f, err)
		}
	}
	return nil
}

// kubectlGet shows the resources as a user would see them, with kubectl when
// it is installed.
func kubectlGet(ctx context.Context, kubeconfig string) string {
	path, err := exec.LookPath("kubectl")
	if err != nil {
		return "(kubectl not found: skipping `kubectl get`)"
	}
	var out strings.Builder
	for _, kind := range []string{"apikeys", "signingkeys", "authpolicies"} {
		cmd := exec.CommandContext(ctx, path, //nolint:gosec // kubectl from PATH, fixed arguments
			"--kubeconfig", kubeconfig, "get", kind, "-n", Namespace)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		b, err := cmd.CombinedOutput()
		fmt.Fprintf(&out, "$ kubectl get %s -n %s\n%s", kind, Namespace, b)
		if err != nil {
			fmt.Fprintf(&out, "(kubectl failed: %v)\n", err)
		}
	}
	return out.String()
}
