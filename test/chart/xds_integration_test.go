package chart

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spf13/pflag"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	operatorapp "gatehouse.dev/gatehouse/operator/app"
	"gatehouse.dev/gatehouse/operator/webhook"
	sidecarapp "gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/stack"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// TestIntegrationTheChartsXDSWiringGivesAnInjectedSidecarItsState goes from
// the chart rendered with xds.enabled to a sidecar that allows a key: the
// operator runs with the chart's arguments, the API server calls its
// webhook (the chart's webhook configuration, by url on loopback) for a
// labelled pod, and the sidecar runs with exactly the arguments injected
// into that pod, its files written as the kubelet would (the downward-API
// CA bundle and labels, a TokenRequest for the injected audience). Only
// the addresses differ: listeners move to 127.0.0.1 ports and the xDS
// target, a cluster DNS name, is dialled on the operator's loopback port,
// still checking the injected server name. With cert-manager, the
// certificate directory the chart mounts is written by the test as
// cert-manager would from the chart's Certificate (tls.crt, tls.key,
// ca.crt), and the caBundle as its cainjector would.
func TestIntegrationTheChartsXDSWiringGivesAnInjectedSidecarItsState(t *testing.T) {
	t.Run("With the operator's own CA.", func(t *testing.T) { testChartsXDSWiring(t, false) })
	t.Run("With cert-manager's certificate.", func(t *testing.T) { testChartsXDSWiring(t, true) })
}

func testChartsXDSWiring(t *testing.T, certManager bool) {
	env, ns := testenv.Start(t)
	tenant := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prefix := "gh-" + ns
	objs := renderIn(t, ns, "xds.enabled=true", "fullnameOverride="+prefix, fmt.Sprintf("webhook.certManager.enabled=%v", certManager))

	webhookAddr, xdsAddr := freeLoopback(t), freeLoopback(t)
	var extra []string
	var caBundle []byte
	if certManager {
		dir := certManagerDir(t, objs.find(t, "Certificate", prefix+"-webhook-tls"))
		extra = append(extra, "--webhook-cert-dir="+dir)
		var err error
		if caBundle, err = os.ReadFile(filepath.Join(dir, "ca.crt")); err != nil {
			t.Fatal(err)
		}
	}
	startOperatorWithChartArgs(ctx, t, env, objs, prefix, append(extra, "--webhook-bind-address="+webhookAddr, "--xds-bind-address="+xdsAddr))
	installWebhookByURL(ctx, t, env, objs, prefix+"-sidecar-injector", webhookAddr, tenant, caBundle)

	for _, o := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: tenant}},
		testfixture.Policy(tenant, "main", time.Time{}, nil, gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}}),
		&gatehousev1.APIKey{
			ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: tenant},
			Spec:       gatehousev1.APIKeySpec{Subject: "service:billing", Scopes: []string{"orders:read"}, SecretName: "billing-key"},
		},
	} {
		o.SetResourceVersion("")
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T: %v", o, err)
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: tenant, Labels: map[string]string{webhook.LabelInject: "true", "app": "orders"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatalf("creating the opted-in pod: %v", err)
	}
	var sidecar corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if c.Name == webhook.SidecarName {
			sidecar = c
		}
	}
	if !slices.Contains(sidecar.Args, "--source=xds") {
		t.Fatalf("the pod came back with sidecar args %q, want the xDS source", sidecar.Args)
	}

	args := kubeletView(t, env, pod, sidecar)
	args = append(args, "--xds-address=passthrough:///"+xdsAddr, "--grpc-bind-address=127.0.0.1:0", "--http-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:0", "--metrics-bind-address=0", "--drain-delay=0s")
	addrs := runSidecar(t, args)

	key := deliveredKey(ctx, t, env, tenant, "billing-key")
	check := func() string {
		v, err := stack.CheckGRPC(ctx, addrs.GRPC, stack.Request{Method: "GET", Host: "orders", Path: "/orders/1", Headers: map[string]string{"x-api-key": key.Plaintext()}})
		if err != nil {
			return err.Error()
		}
		return v.String()
	}
	framework.Eventually(t, "the injected sidecar to allow the key it received over xDS", time.Minute, func() (bool, string) {
		got := check()
		return strings.HasPrefix(got, "allowed"), got
	})

	env.DisableAPIKey(t, tenant, "billing")
	framework.Eventually(t, "the injected sidecar to deny the disabled key", 30*time.Second, func() (bool, string) {
		got := check()
		return strings.Contains(got, "api_key_revoked"), got
	})
}

// renderIn renders the chart as a release in namespace ns.
func renderIn(t *testing.T, ns string, sets ...string) rendered {
	t.Helper()
	args := []string{"template", "gh", chartDir, "--namespace", ns}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	return decodeAll(t, out)
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// startOperatorWithChartArgs runs the operator in this process with the
// arguments of the chart's Deployment and the chart's injection config,
// then overrides: listeners off or on loopback (the operator's own webhook
// certificate then also names 127.0.0.1, which the API server dials).
func startOperatorWithChartArgs(ctx context.Context, t *testing.T, env *testenv.Env, objs rendered, prefix string, overrides []string) {
	t.Helper()
	cm := into[corev1.ConfigMap](t, objs.find(t, "ConfigMap", prefix+"-sidecar-injection"))
	injection := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(injection, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	args := into[appsv1.Deployment](t, objs.find(t, "Deployment", prefix)).Spec.Template.Spec.Containers[0].Args[1:]
	args = append(args, "--metrics-bind-address=0", "--health-probe-bind-address=0", "--discovery-bind-address=0", "--sidecar-injection-config="+injection)
	args = append(args, overrides...)
	var o operatorapp.Options
	fs := pflag.NewFlagSet("operator", pflag.ContinueOnError)
	o.BindFlags(fs)
	zfs := flag.NewFlagSet("zap", flag.ContinueOnError)
	(&zap.Options{}).BindFlags(zfs)
	fs.AddGoFlagSet(zfs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("the operator refuses the chart's arguments %q: %v", args, err)
	}
	o.Webhook.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	o.SkipControllerNameValidation = true
	o.Logger = testr.New(t).WithName("operator")
	mgr, err := operatorapp.New(ctx, env.Config, o)
	if err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)
}

// installWebhookByURL creates the chart's webhook configuration with the
// operator's loopback url instead of its Service, for tenant's pods only,
// with caBundle when set (cert-manager's cainjector), and waits until the
// caBundle (the operator's, without it) verifies what the webhook serves.
func installWebhookByURL(ctx context.Context, t *testing.T, env *testenv.Env, objs rendered, name, addr, tenant string, caBundle []byte) {
	t.Helper()
	mwc := into[admissionregistrationv1.MutatingWebhookConfiguration](t, objs.find(t, "MutatingWebhookConfiguration", name))
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://" + addr + *mwc.Webhooks[i].ClientConfig.Service.Path), CABundle: caBundle}
		mwc.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": tenant}}
	}
	if err := env.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), mwc) })
	framework.Eventually(t, "the operator to write the caBundle and serve the webhook", 60*time.Second, framework.NoError(func() error {
		got := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
			return err
		}
		return verifyServed(addr, got.Webhooks[0].ClientConfig.CABundle)
	}))
}

// kubeletView writes the files of the sidecar's volume mounts under a
// temporary root as the kubelet would (downward API, projected tokens
// through TokenRequest, bound to the pod), and returns the sidecar's arguments with those
// paths under the root and $(VAR) references to its env expanded.
func kubeletView(t *testing.T, env *testenv.Env, pod *corev1.Pod, c corev1.Container) []string {
	t.Helper()
	root := t.TempDir()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	mounts := make([]string, 0, len(c.VolumeMounts))
	for _, m := range c.VolumeMounts {
		writeVolume(t, env, pod, volumes[m.Name], filepath.Join(root, m.MountPath))
		mounts = append(mounts, m.MountPath)
	}
	vars := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			vars["$("+e.Name+")"] = fieldValue(t, pod, e.ValueFrom.FieldRef.FieldPath)
		}
	}
	args := make([]string, 0, len(c.Args))
	for _, a := range c.Args {
		for ref, v := range vars {
			a = strings.ReplaceAll(a, ref, v)
		}
		for _, mp := range mounts {
			a = strings.Replace(a, "="+mp+"/", "="+root+mp+"/", 1)
		}
		args = append(args, a)
	}
	return args
}

func writeVolume(t *testing.T, env *testenv.Env, pod *corev1.Pod, v corev1.Volume, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	switch {
	case v.DownwardAPI != nil:
		for _, item := range v.DownwardAPI.Items {
			write(item.Path, fieldValue(t, pod, item.FieldRef.FieldPath))
		}
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			tok := src.ServiceAccountToken
			if tok == nil {
				t.Fatalf("volume %s projects %+v, which this test does not write", v.Name, src)
			}
			if tok.ExpirationSeconds == nil || *tok.ExpirationSeconds != 3600 {
				t.Fatalf("volume %s asks for a token of %v seconds; this test writes one of 3600", v.Name, tok.ExpirationSeconds)
			}
			write(tok.Path, env.PodToken(t, pod, tok.Audience))
		}
	default:
		t.Fatalf("volume %s is of a kind this test does not write: %+v", v.Name, v.VolumeSource)
	}
}

// fieldValue is what the kubelet writes for a downward-API field.
func fieldValue(t *testing.T, pod *corev1.Pod, path string) string {
	t.Helper()
	switch {
	case path == "metadata.namespace":
		return pod.Namespace
	case path == "metadata.name":
		return pod.Name
	case path == "metadata.labels":
		lines := make([]string, 0, len(pod.Labels))
		for k, v := range pod.Labels {
			lines = append(lines, k+"="+strconv.Quote(v))
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	case strings.HasPrefix(path, "metadata.annotations['"):
		return pod.Annotations[strings.TrimSuffix(strings.TrimPrefix(path, "metadata.annotations['"), "']")]
	}
	t.Fatalf("downward-API field %s is not written by this test", path)
	return ""
}

// runSidecar runs the sidecar with args, as cmd/gatehouse-sidecar does,
// until the test ends, and returns its addresses once it is ready.
func runSidecar(t *testing.T, args []string) sidecarapp.Addresses {
	t.Helper()
	f := &sidecarapp.Flags{}
	fs := pflag.NewFlagSet("gatehouse-sidecar", pflag.ContinueOnError)
	f.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("the sidecar refuses the injected arguments %q: %v", args, err)
	}
	cfg, release, err := f.Config(testr.New(t).WithName("sidecar"))
	if err != nil {
		t.Fatalf("the sidecar cannot start with the injected arguments %q: %v", args, err)
	}
	listening := make(chan sidecarapp.Addresses, 1)
	cfg.OnListening = func(a sidecarapp.Addresses) { listening <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sidecarapp.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sidecar: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the sidecar did not stop within 30s")
		}
		release()
	})
	var addrs sidecarapp.Addresses
	select {
	case addrs = <-listening:
	case err := <-done:
		t.Fatalf("the sidecar stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the sidecar did not listen within 30s")
	}
	framework.Eventually(t, "the sidecar to load its state over xDS and be ready", time.Minute, func() (bool, string) {
		resp, err := http.Get("http://" + addrs.Health + "/readyz") //nolint:noctx // a loopback probe in a test
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("/readyz answered %d", resp.StatusCode)
	})
	return addrs
}

func deliveredKey(ctx context.Context, t *testing.T, env *testenv.Env, ns, secret string) apikeyformat.Key {
	t.Helper()
	var key apikeyformat.Key
	framework.Eventually(t, "the operator to deliver "+secret, 60*time.Second, func() (bool, string) {
		sec := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secret}, sec); err != nil {
			return false, err.Error()
		}
		k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey]))
		key = k
		return err == nil, "no parsable key in the delivery Secret"
	})
	return key
}

// certManagerDir writes what cert-manager would put in the Secret of the
// chart's Certificate cert, issued by a CA Issuer: tls.crt for its
// dnsNames (and 127.0.0.1, where the API server dials the webhook here),
// tls.key and the CA's ca.crt.
func certManagerDir(t *testing.T, cert *unstructured.Unstructured) string {
	t.Helper()
	names, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-cert-manager-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), DNSNames: names, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, block := range map[string]*pem.Block{
		"tls.crt": {Type: "CERTIFICATE", Bytes: der},
		"tls.key": {Type: "PRIVATE KEY", Bytes: keyDER},
		"ca.crt":  {Type: "CERTIFICATE", Bytes: caDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
