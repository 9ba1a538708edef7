// Package demo runs Gatehouse for real on the local machine: an etcd and a
// kube-apiserver on 127.0.0.1 (built from source by hack/build-apiserver.sh)
// with the Gatehouse CRDs, the operator and a sidecar (test/stack), the
// sample resources, and real requests over gRPC and the HTTP contract:
// allowed with the API key, allowed with a token from the token endpoint,
// denied without credentials or scope, denied once the key is disabled.
//
// Every expectation is checked: the demo fails (non-zero exit) if Gatehouse
// answers anything else.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/config/samples"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/scheme"
	"gatehouse.dev/gatehouse/test/controlplane"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/sidecarrbac"
	"gatehouse.dev/gatehouse/test/stack"
)

const (
	// Namespace is where the demo applies the samples.
	Namespace = "demo"
	// ServiceAccount is the identity the demo's sidecar runs as.
	ServiceAccount = "orders"
)

// Options configure a demo run.
type Options struct {
	// AssetsDir holds the kube-apiserver and etcd binaries.
	AssetsDir string
	// Out receives the demo's narration.
	Out io.Writer
	// Wait keeps everything running after the script until ctx ends
	// (Ctrl-C), so that people can explore with kubectl and curl.
	Wait bool
}

// Run runs the demo script and stops everything it started before it
// returns, also when ctx is cancelled half way.
func Run(ctx context.Context, o Options) (err error) {
	if o.AssetsDir == "" {
		return errors.New("no kube-apiserver/etcd directory: set KUBEBUILDER_ASSETS or pass --assets (make demo does this)")
	}
	d := &demo{out: o.Out}
	logDir, err := os.MkdirTemp("", "gatehouse-demo-logs-")
	if err != nil {
		return err
	}
	logs, err := newLogFile(filepath.Join(logDir, "gatehouse.log"))
	if err != nil {
		return err
	}
	defer func() {
		_ = logs.Close()
		if err != nil {
			d.say("    (logs of the operator and the sidecar: %s)", logs.path)
			return
		}
		_ = os.RemoveAll(logDir)
	}()
	// The sidecar's informers and client-go log through the global
	// loggers: into the file, not over the narration.
	ctrl.SetLogger(logs.logger("k8s"))
	klog.SetLogger(logs.logger("klog"))

	d.step("starting etcd and kube-apiserver on 127.0.0.1, installing the Gatehouse CRDs")
	cp, err := controlplane.Start(o.AssetsDir)
	if err != nil {
		return err
	}
	defer func() {
		d.say("==> stopping the sidecar, the operator, kube-apiserver and etcd; removing temporary files")
		_ = cp.Stop()
	}()
	c, err := client.New(cp.Config, client.Options{Scheme: scheme.New()})
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	d.client = c
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", Namespace, err)
	}
	if err := sidecarrbac.Bind(ctx, c, Namespace, ServiceAccount); err != nil {
		return err
	}

	d.step("starting the operator (controllers, JWKS/discovery and the token endpoint) and a sidecar for pods labelled app=orders")
	s, err := stack.Start(ctx, stack.Options{
		OperatorConfig: cp.Config,
		SidecarConfig:  sidecarrbac.Impersonating(cp.Config, Namespace, ServiceAccount),
		Namespace:      Namespace,
		PodLabels:      map[string]string{"app": "orders"},
		OperatorLog:    logs.logger("operator"),
		SidecarLog:     logs.logger("sidecar"),
	})
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := s.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	d.stack = s
	d.say("    operator: discovery and token endpoint at %s", s.DiscoveryURL)
	d.say("    sidecar:  ext_authz gRPC at %s, HTTP at %s (as ServiceAccount %s/%s: reads ConfigMaps and AuthPolicies only)", s.Sidecar.GRPC, s.Sidecar.HTTP, Namespace, ServiceAccount)

	d.step("applying the samples (config/samples) to namespace %s", Namespace)
	if _, err := ApplySamples(ctx, c, Namespace); err != nil {
		return err
	}
	if err := d.waitReady(ctx); err != nil {
		return err
	}
	d.say("%s", kubectlGet(ctx, cp.KubeconfigPath))

	if err := d.requests(ctx); err != nil {
		return err
	}
	d.say("\nEvery request got the answer it should.")

	if o.Wait {
		d.say("\nGatehouse keeps running. Explore with:\n"+
			"    export KUBECONFIG=%s\n"+
			"    kubectl get apikeys,signingkeys,authpolicies -n %s\n"+
			"    curl -s -H 'Host: auth.example.com' %s/platform/.well-known/jwks.json\n"+
			"    curl -s -o /dev/null -w '%%{http_code}\\n' http://%s/orders/1   # the sidecar's HTTP contract: 401\n"+
			"Press Ctrl-C to stop.", cp.KubeconfigPath, Namespace, s.DiscoveryURL, s.Sidecar.HTTP)
		<-ctx.Done()
	}
	return nil
}

// demo is one run's state and narration.
type demo struct {
	out    io.Writer
	client client.Client
	stack  *stack.Stack
	steps  int
}

func (d *demo) say(format string, args ...any) { _, _ = fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) step(format string, args ...any) {
	d.steps++
	d.say(fmt.Sprintf("==> %d. ", d.steps)+format, args...)
}

// waitReady waits for the operator to make the samples Ready.
func (d *demo) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	objs := []client.Object{&gatehousev1.SigningKey{}, &gatehousev1.APIKey{}, &gatehousev1.AuthPolicy{}}
	names := []string{"platform", "billing", "orders"}
	for i, obj := range objs {
		err := framework.Poll(ctx, fmt.Sprintf("%T %s to be Ready", obj, names[i]), func() (bool, string) {
			if err := d.client.Get(ctx, types.NamespacedName{Namespace: Namespace, Name: names[i]}, obj); err != nil {
				return false, err.Error()
			}
			conds := ReadyConditions(obj)
			return conditions.IsTrue(conds, gatehousev1.ConditionReady), fmt.Sprint(conds)
		})
		if err != nil {
			return err
		}
	}
	if err := d.stack.WaitReady(ctx); err != nil {
		return err
	}
	d.say("    the operator made every sample Ready and the sidecar loaded them in %v", time.Since(start).Round(time.Millisecond))
	return nil
}

// ReadyConditions returns the status conditions of a sample resource.
func ReadyConditions(obj client.Object) []metav1.Condition {
	switch o := obj.(type) {
	case *gatehousev1.SigningKey:
		return o.Status.Conditions
	case *gatehousev1.APIKey:
		return o.Status.Conditions
	case *gatehousev1.AuthPolicy:
		return o.Status.Conditions
	}
	return nil
}

// expectation is one request and the answer it must get.
type expectation struct {
	what    string
	req     stack.Request
	allowed bool
	status  int
}

// requests runs the demo's requests over gRPC and HTTP and checks every
// answer.
func (d *demo) requests(ctx context.Context) error {
	d.step("reading the API key the operator delivered to Secret billing-api-key")
	sec := &corev1.Secret{}
	if err := d.client.Get(ctx, types.NamespacedName{Namespace: Namespace, Name: "billing-api-key"}, sec); err != nil {
		return fmt.Errorf("reading the delivered key: %w", err)
	}
	plain := string(sec.Data[gatehousev1.DeliveryKeyDataKey])
	key, err := apikeyformat.Parse(plain)
	if err != nil {
		return fmt.Errorf("the delivered key does not parse: %w", err)
	}
	d.say("    key ID %s (the key itself stays out of this output; only its SHA-256 is stored for the sidecars)", key.ID())

	d.step("exchanging the API key for a token: POST %s/oauth2/token (client credentials)", d.stack.DiscoveryURL)
	tr, err := stack.GetToken(ctx, d.stack.DiscoveryURL, plain, "orders:read", "orders")
	if err != nil {
		return err
	}
	if tr.Status != http.StatusOK {
		return fmt.Errorf("the token endpoint answered %s", tr)
	}
	d.say("    %s", tr)

	orders := func(method string, headers map[string]string) stack.Request {
		return stack.Request{Method: method, Host: "orders.demo.svc", Path: "/orders/42", Headers: headers}
	}
	withKey := map[string]string{"x-api-key": plain}
	withToken := map[string]string{"authorization": "Bearer " + tr.AccessToken}
	d.step("asking the sidecar, as Envoy would (gRPC Check and the HTTP contract)")
	if err := d.expect(ctx, []expectation{
		{"GET /orders/42 with the API key", orders("GET", withKey), true, http.StatusOK},
		{"GET /orders/42 with the token", orders("GET", withToken), true, http.StatusOK},
		{"GET /orders/42 without credentials", orders("GET", nil), false, http.StatusUnauthorized},
		{"DELETE /orders/42 with the orders:read token", orders("DELETE", withToken), false, http.StatusForbidden},
		{"GET /healthz without credentials (anonymous rule)", stack.Request{Method: "GET", Host: "orders.demo.svc", Path: "/healthz"}, true, http.StatusOK},
	}); err != nil {
		return err
	}

	d.step("disabling APIKey billing (spec.disabled: true)")
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"disabled":true}}`))
	start := time.Now()
	if err := d.client.Patch(ctx, &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "billing"}}, patch); err != nil {
		return fmt.Errorf("disabling the key: %w", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := framework.Poll(waitCtx, "the sidecar to deny the disabled key", func() (bool, string) {
		v, err := stack.CheckGRPC(waitCtx, d.stack.Sidecar.GRPC, orders("GET", withKey))
		if err != nil {
			return false, err.Error()
		}
		return !v.Allowed, fmt.Sprintf("allowed=%v status=%d reason=%s", v.Allowed, v.Status, v.Reason)
	}); err != nil {
		return fmt.Errorf("the disabled key was still allowed after 10s: %w", err)
	}
	d.say("    the sidecar denied the key %v after the update", time.Since(start).Round(time.Millisecond))
	if err := d.expect(ctx, []expectation{
		{"GET /orders/42 with the disabled API key", orders("GET", withKey), false, http.StatusUnauthorized},
		{"GET /orders/42 with its unexpired token", orders("GET", withToken), false, http.StatusUnauthorized},
	}); err != nil {
		return err
	}
	tr, err = stack.GetToken(ctx, d.stack.DiscoveryURL, plain, "orders:read", "orders")
	if err != nil {
		return err
	}
	if tr.Status != http.StatusUnauthorized || tr.Error != "invalid_client" {
		return fmt.Errorf("the token endpoint answered the disabled key with %s, want 401 invalid_client", tr)
	}
	d.say("    POST /oauth2/token with the disabled key: %s", tr)
	return nil
}

// expect sends each request over gRPC and HTTP and checks both answers.
func (d *demo) expect(ctx context.Context, es []expectation) error {
	for _, e := range es {
		g, err := stack.CheckGRPC(ctx, d.stack.Sidecar.GRPC, e.req)
		if err != nil {
			return err
		}
		h, err := stack.CheckHTTP(ctx, d.stack.Sidecar.HTTP, e.req)
		if err != nil {
			return err
		}
		d.say("    %-52s gRPC: %-36s HTTP: %s", e.what, g, h)
		for proto, v := range map[string]stack.Verdict{"gRPC": g, "HTTP": h} {
			if v.Allowed != e.allowed || v.Status != e.status {
				return fmt.Errorf("%s over %s: got %s, want allowed=%v status %d", e.what, proto, v, e.allowed, e.status)
			}
		}
	}
	return nil
}

// ApplySamples creates the resources of config/samples in ns, as a user
// would with kubectl apply, and returns the files applied.
func ApplySamples(ctx context.Context, c client.Client, ns string) ([]string, error) {
	files, err := fs.Glob(samples.Files, "*.yaml")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		data, err := fs.ReadFile(samples.Files, f)
		if err != nil {
			return nil, err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			return nil, fmt.Errorf("decoding sample %s: %w", f, err)
		}
		obj.SetNamespace(ns)
		if err := c.Create(ctx, obj); err != nil {
			return nil, fmt.Errorf("applying sample %s: %w", f, err)
		}
	}
	return files, nil
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

// logFile collects the operator's and the sidecar's logs.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func newLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // a path the demo made
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, f: f}, nil
}

func (l *logFile) logger(name string) logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		_, _ = fmt.Fprintf(l.f, "%s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), prefix, args)
	}, funcr.Options{}).WithName(name)
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
