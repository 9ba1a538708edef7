package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// servedCert dials the webhook like the API server does, trusting only the
// caBundle, and returns the certificate it presents.
func servedCert(addr string, caBundle []byte) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		return nil, errors.New("empty caBundle")
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func TestIntegrationWebhookInjectsThroughTheAPIServer(t *testing.T) {
	env, ns := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	mwcName := "gatehouse-test-" + ns
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: mwcName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "sidecar-injector.auth.gatehouse.dev",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](10),
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://" + addr + InjectPath)},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			ObjectSelector:    &metav1.LabelSelector{MatchLabels: map[string]string{LabelInject: "true"}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
		}},
	}
	if err := env.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), mwc) })

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := Setup(mgr, Options{
		BindAddress:       addr,
		Namespace:         ns,
		SecretName:        "gatehouse-webhook-tls",
		ServiceName:       "gatehouse-webhook",
		ClusterDomain:     "cluster.local",
		IPAddresses:       []net.IP{net.IPv4(127, 0, 0, 1)},
		ConfigurationName: mwcName,
		CAValidity:        365 * 24 * time.Hour,
		CertValidity:      90 * 24 * time.Hour,
		Injection:         &InjectionConfig{Image: "example.com/gatehouse:test"},
	}); err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)

	var caBundle []byte
	framework.Eventually(t, "the operator to write caBundle and serve a certificate it trusts", 30*time.Second, framework.NoError(func() error {
		got := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: mwcName}, got); err != nil {
			return err
		}
		caBundle = got.Webhooks[0].ClientConfig.CABundle
		_, err := servedCert(addr, caBundle)
		return err
	}))

	newPod := func(name string, labels, annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		}
	}

	injected := newPod("opted-in", optIn, nil)
	t.Run("A pod with the opt-in label comes back from the API server with the sidecar.", func(t *testing.T) {
		if err := env.Client.Create(ctx, injected); err != nil {
			t.Fatalf("creating the pod: %v", err)
		}
		got := sidecars(injected)
		if len(got) != 1 || got[0].RestartPolicy == nil || *got[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("init containers = %+v, want one native sidecar", injected.Spec.InitContainers)
		}
		if got[0].Image != "example.com/gatehouse:test" || len(injected.Spec.Volumes) != 2 {
			t.Fatalf("image %s, volumes %+v", got[0].Image, injected.Spec.Volumes)
		}
	})
	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
	}{
		{name: "A pod without the label is untouched.", pod: newPod("plain", map[string]string{"app": "x"}, nil)},
		{name: "A labelled pod with the opt-out annotation is untouched.", pod: newPod("opted-out", optIn, map[string]string{AnnotationInject: "false"})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := env.Client.Create(ctx, tt.pod); err != nil {
				t.Fatal(err)
			}
			if len(tt.pod.Spec.InitContainers) != 0 || len(tt.pod.Spec.Volumes) != 0 {
				t.Fatalf("the pod was changed: init containers %v, volumes %v", tt.pod.Spec.InitContainers, tt.pod.Spec.Volumes)
			}
		})
	}
	t.Run("Creating a pod that already has the sidecar injects nothing more.", func(t *testing.T) {
		again := newPod("again", optIn, nil)
		again.Spec = *injected.Spec.DeepCopy()
		if err := env.Client.Create(ctx, again); err != nil {
			t.Fatal(err)
		}
		if len(sidecars(again)) != 1 || len(again.Spec.Volumes) != len(injected.Spec.Volumes) || len(again.Spec.InitContainers) != len(injected.Spec.InitContainers) {
			t.Fatalf("re-injection changed the pod: init containers %d, volumes %d", len(again.Spec.InitContainers), len(again.Spec.Volumes))
		}
	})

	secret := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gatehouse-webhook-tls"}, secret); err != nil {
		t.Fatal(err)
	}
	t.Run("The certificate Secret is owned by the webhook configuration, for garbage collection.", func(t *testing.T) {
		if len(secret.OwnerReferences) != 1 || secret.OwnerReferences[0].Name != mwcName {
			t.Fatalf("owners = %+v", secret.OwnerReferences)
		}
	})

	t.Run("A certificate rotated in the Secret is served by every replica's watcher, and the API server accepts it.", func(t *testing.T) {
		before, err := servedCert(addr, caBundle)
		if err != nil {
			t.Fatal(err)
		}
		// A follower: its own store, fed only by the Secret watcher.
		cs, err := kubernetes.NewForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		follower := &CertStore{}
		wctx, stopWatcher := context.WithCancel(ctx)
		defer stopWatcher()
		go func() {
			_ = (&CertWatcher{Clientset: cs, Namespace: ns, Name: secret.Name, Store: follower, Log: mgr.GetLogger()}).Start(wctx)
		}()
		framework.Eventually(t, "the follower to load the certificate", 30*time.Second, framework.NoError(func() error {
			c, err := follower.GetCertificate(nil)
			if err == nil && !c.Leaf.Equal(before) {
				return errors.New("the follower loaded another certificate")
			}
			return err
		}))

		// Rotate as the leader would: a new serving certificate from the
		// same CA, written to the Secret.
		old := parseBundle(secret.Data)
		rotated, err := apply(time.Now(), old, decision{NewServing: true}, certSpec{
			DNSNames: old.Serving.Cert.DNSNames, IPAddresses: old.Serving.Cert.IPAddresses, CertValidity: time.Hour,
		}, "")
		if err != nil {
			t.Fatal(err)
		}
		secret.Data = rotated.data()
		if err := env.Client.Update(ctx, secret); err != nil {
			t.Fatal(err)
		}
		for name, check := range map[string]func() (*x509.Certificate, error){
			"the server": func() (*x509.Certificate, error) { return servedCert(addr, caBundle) },
			"the follower": func() (*x509.Certificate, error) {
				c, err := follower.GetCertificate(nil)
				if err != nil {
					return nil, err
				}
				return c.Leaf, nil
			},
		} {
			framework.Eventually(t, name+" to present the rotated certificate", 30*time.Second, framework.NoError(func() error {
				c, err := check()
				if err != nil {
					return err
				}
				if !c.Equal(rotated.Serving.Cert) {
					return errors.New("still the old certificate")
				}
				return nil
			}))
		}
		after := newPod("after-rotation", optIn, nil)
		if err := env.Client.Create(ctx, after); err != nil {
			t.Fatalf("the API server no longer reaches the webhook after the rotation: %v", err)
		}
		if len(sidecars(after)) != 1 {
			t.Fatal("no sidecar after the rotation")
		}
	})
}
