package webhook

import (
	"context"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

var (
	t0   = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	spec = certSpec{
		DNSNames:     []string{"gh-webhook", "gh-webhook.ns", "gh-webhook.ns.svc", "gh-webhook.ns.svc.cluster.local"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		CAValidity:   300 * 24 * time.Hour,
		CertValidity: 90 * 24 * time.Hour,
	}
)

func issue(t *testing.T, now time.Time) *bundle {
	t.Helper()
	b, err := apply(now, &bundle{}, decision{NewCA: true, NewServing: true}, spec, "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPlan(t *testing.T) {
	fresh := issue(t, t0)
	other := issue(t, t0)
	renamed := spec
	renamed.DNSNames = []string{"other"}
	foreign := &bundle{CA: fresh.CA, Serving: other.Serving, Trusted: fresh.Trusted}

	retiredExpired, err := apply(t0.Add(250*24*time.Hour), fresh, decision{NewCA: true, NewServing: true}, spec, "test-ca")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		now    time.Time
		b      *bundle
		spec   certSpec
		want   decision
		reason string
	}{
		{name: "An empty Secret gets a CA and a serving certificate.", now: t0, b: &bundle{}, spec: spec, want: decision{NewCA: true, NewServing: true}, reason: "no valid CA"},
		{name: "Fresh certificates are left alone.", now: t0.Add(time.Hour), b: fresh, spec: spec},
		{name: "A serving certificate in the last third of its life is reissued from the same CA.", now: t0.Add(61 * 24 * time.Hour), b: fresh, spec: spec, want: decision{NewServing: true}, reason: "last third"},
		{name: "A serving certificate one day before its renewal point is kept.", now: t0.Add(59 * 24 * time.Hour), b: fresh, spec: spec},
		{name: "A CA in the last third of its life is replaced, and the serving certificate with it.", now: t0.Add(201 * 24 * time.Hour), b: fresh, spec: spec, want: decision{NewCA: true, NewServing: true}, reason: "CA is in the last third"},
		{name: "A serving certificate for other names is reissued.", now: t0, b: fresh, spec: renamed, want: decision{NewServing: true}, reason: "names differ"},
		{name: "A serving certificate signed by another CA is reissued.", now: t0, b: foreign, spec: spec, want: decision{NewServing: true}, reason: "not signed by the current CA"},
		{name: "A retired CA is dropped from the bundle once it has expired.", now: t0.Add(301 * 24 * time.Hour), b: retiredExpired, spec: spec, want: decision{Prune: true}, reason: "retired CA has expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := plan(tt.now, tt.b, tt.spec)
			if got.NewCA != tt.want.NewCA || got.NewServing != tt.want.NewServing || got.Prune != tt.want.Prune {
				t.Fatalf("plan = %+v, want %+v", got, tt.want)
			}
			if !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", got.Reason, tt.reason)
			}
		})
	}
}

// verify checks that b's serving certificate is trusted through b's
// caBundle for name, as the API server checks it.
func verify(t *testing.T, b *bundle, now time.Time, name string) error {
	t.Helper()
	return verifyWith(t, b.caBundle(), b.Serving.Cert, now, name)
}

// verifyWith checks that serving is trusted through the PEM bundle caPEM.
func verifyWith(t *testing.T, caPEM []byte, serving *x509.Certificate, now time.Time, name string) error {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("caBundle holds no certificate")
	}
	_, err := serving.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func TestIssuedCertificates(t *testing.T) {
	b := issue(t, t0)
	for _, name := range append(spec.DNSNames, "127.0.0.1") {
		if err := verify(t, b, t0, name); err != nil {
			t.Errorf("the serving certificate does not verify for %s: %v", name, err)
		}
	}
	if err := verify(t, b, t0, "evil.example.com"); err == nil {
		t.Error("the serving certificate verifies for a name it was not issued for")
	}
	if b.CA.Cert.PublicKeyAlgorithm != x509.ECDSA || b.Serving.Cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Error("keys are not ECDSA")
	}
	if !b.CA.Cert.MaxPathLenZero || b.Serving.Cert.IsCA {
		t.Error("the CA may sign intermediates, or the serving certificate is a CA")
	}
	reparsed := parseBundle(b.data())
	if reparsed.CA == nil || reparsed.Serving == nil || !reparsed.CA.Cert.Equal(b.CA.Cert) || !reparsed.Serving.Cert.Equal(b.Serving.Cert) {
		t.Fatal("the Secret's data does not parse back into the same certificates")
	}
}

// TestClientsGivenTheBundleBeforeARotationTrustTheCertificateAfterIt is
// what injected xDS sidecars rely on: a pod keeps the CA bundle of its
// admission, so the CA that signs after a rotation must be in the bundle
// before it. It holds for one rotation; a client older than that must be
// given the bundle again (docs/xds.md, "CA rotation").
func TestClientsGivenTheBundleBeforeARotationTrustTheCertificateAfterIt(t *testing.T) {
	first := issue(t, t0)
	admitted := first.caBundle()
	rotate := func(b *bundle) (*bundle, time.Time) {
		t.Helper()
		at := renewAt(b.CA.Cert)
		d := plan(at, b, spec)
		if !d.NewCA {
			t.Fatalf("plan at the CA's renewal point = %+v", d)
		}
		next, err := apply(at, b, d, spec, "test-ca")
		if err != nil {
			t.Fatal(err)
		}
		return next, at
	}
	second, at := rotate(first)
	if second.CA.Cert.Equal(first.CA.Cert) {
		t.Fatal("the CA was not replaced")
	}
	if err := verifyWith(t, admitted, second.Serving.Cert, at, "gh-webhook.ns.svc"); err != nil {
		t.Fatalf("a client given the bundle before the rotation does not trust the certificate after it: %v", err)
	}
	if renewAt(second.CA.Cert).Sub(at).Round(time.Hour) != renewAt(first.CA.Cert).Sub(t0).Round(time.Hour) {
		t.Errorf("the promoted CA turns over after %v, the first after %v: want the same period", renewAt(second.CA.Cert).Sub(at), renewAt(first.CA.Cert).Sub(t0))
	}
	reparsed := parseBundle(second.data())
	if reparsed.Next == nil || !reparsed.Next.Cert.Equal(second.Next.Cert) {
		t.Fatal("the next CA does not survive the Secret")
	}
	third, at := rotate(second)
	if err := verifyWith(t, admitted, third.Serving.Cert, at, "gh-webhook.ns.svc"); err == nil {
		t.Fatal("the bundle of two rotations ago still verifies: the test does not model the bound it documents")
	}
}

func TestASecretWithoutANextCAGetsOneAndKeepsItsCertificates(t *testing.T) {
	old := issue(t, t0)
	old.Next, old.Trusted = nil, old.Trusted[:1]
	d := plan(t0.Add(time.Hour), old, spec)
	if d.NewCA || d.NewServing || !d.NewNext {
		t.Fatalf("plan = %+v, want a next CA only", d)
	}
	b, err := apply(t0.Add(time.Hour), old, d, spec, "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !b.CA.Cert.Equal(old.CA.Cert) || !b.Serving.Cert.Equal(old.Serving.Cert) || b.Next == nil || len(b.Trusted) != 2 || !b.Trusted[1].Equal(b.Next.Cert) {
		t.Fatalf("want the same CA and serving certificate with a next CA trusted, got %d trusted", len(b.Trusted))
	}
}

func TestCARotationKeepsOldCertificatesTrusted(t *testing.T) {
	old := issue(t, t0)
	// The serving certificate was last renewed shortly before the CA's
	// renewal point, so it is still valid when the CA turns over.
	var err error
	if old.Serving, err = newServing(t0.Add(195*24*time.Hour), old.CA, spec); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(201 * 24 * time.Hour)
	next, err := apply(at, old, plan(at, old, spec), spec, "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if next.CA.Cert.Equal(old.CA.Cert) {
		t.Fatal("the CA was not replaced")
	}
	if len(next.Trusted) != 3 || !next.Trusted[0].Equal(next.CA.Cert) || !next.Trusted[1].Equal(next.Next.Cert) || !next.Trusted[2].Equal(old.CA.Cert) {
		t.Fatalf("trusted = %d certificates, want the new CA, the next one, then the old one", len(next.Trusted))
	}
	// A replica still serving the old certificate is trusted by the new
	// bundle, and so is the new certificate.
	stale := &bundle{CA: next.CA, Serving: old.Serving, Trusted: next.Trusted}
	if err := verify(t, stale, at, "gh-webhook.ns.svc"); err != nil {
		t.Errorf("the old serving certificate is not trusted during the rotation: %v", err)
	}
	if err := verify(t, next, at, "gh-webhook.ns.svc"); err != nil {
		t.Errorf("the new serving certificate is not trusted: %v", err)
	}
}

type fixture struct {
	clock *clocktesting.FakeClock
	c     client.Client
	m     *CertManager
	store *CertStore
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "gh-injector", UID: "mwc-uid"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "a.auth.gatehouse.dev"}, {Name: "b.auth.gatehouse.dev"},
		},
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(mwc).Build()
	f := &fixture{clock: clocktesting.NewFakeClock(t0), c: c, store: &CertStore{}}
	f.m = &CertManager{Client: c, Reader: c, Namespace: "ns", SecretName: "gh-tls", ConfigurationName: "gh-injector",
		Spec: spec, Store: f.store, Resync: 10 * time.Minute, Clock: f.clock, Log: logr.Discard()}
	return f
}

func (f *fixture) read(t *testing.T) (*corev1.Secret, *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	s := &corev1.Secret{}
	if err := f.c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "gh-tls"}, s); err != nil {
		t.Fatal(err)
	}
	m := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := f.c.Get(context.Background(), client.ObjectKey{Name: "gh-injector"}, m); err != nil {
		t.Fatal(err)
	}
	return s, m
}

func TestCertManagerReconcile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)

	next, err := f.m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secret, mwc := f.read(t)
	b := parseBundle(secret.Data)
	t.Run("The first pass writes a TLS Secret owned by the webhook configuration.", func(t *testing.T) {
		if secret.Type != corev1.SecretTypeTLS || b.CA == nil || b.Serving == nil {
			t.Fatalf("secret type %s, parsed %+v", secret.Type, b)
		}
		if len(secret.OwnerReferences) != 1 || secret.OwnerReferences[0].UID != "mwc-uid" || secret.OwnerReferences[0].Kind != "MutatingWebhookConfiguration" {
			t.Fatalf("owners = %+v", secret.OwnerReferences)
		}
	})
	t.Run("The first pass writes the CA into every webhook's caBundle.", func(t *testing.T) {
		for _, w := range mwc.Webhooks {
			if string(w.ClientConfig.CABundle) != string(b.caBundle()) {
				t.Fatalf("webhook %s caBundle is not the CA", w.Name)
			}
		}
	})
	t.Run("The store serves the Secret's certificate at once.", func(t *testing.T) {
		c, err := f.store.GetCertificate(nil)
		if err != nil || !c.Leaf.Equal(b.Serving.Cert) {
			t.Fatalf("store certificate: %v", err)
		}
		if trust, err := f.store.Trust(); err != nil || string(trust) != string(b.caBundle()) {
			t.Fatalf("the store's CA bundle for xDS sidecars is not the caBundle (%v)", err)
		}
	})
	t.Run("The next renewal is the serving certificate's two-thirds point.", func(t *testing.T) {
		if want := renewAt(b.Serving.Cert); !next.Equal(want) {
			t.Fatalf("next = %v, want %v", next, want)
		}
	})

	t.Run("A second pass at the same time writes nothing.", func(t *testing.T) {
		if _, err := f.m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		s2, m2 := f.read(t)
		if s2.ResourceVersion != secret.ResourceVersion || m2.ResourceVersion != mwc.ResourceVersion {
			t.Fatal("an idle pass wrote the Secret or the webhook configuration")
		}
	})

	t.Run("A caBundle erased by someone else is written again.", func(t *testing.T) {
		_, m := f.read(t)
		m.Webhooks[1].ClientConfig.CABundle = nil
		if err := f.c.Update(ctx, m); err != nil {
			t.Fatal(err)
		}
		if _, err := f.m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		_, m = f.read(t)
		if string(m.Webhooks[1].ClientConfig.CABundle) != string(b.caBundle()) {
			t.Fatal("the caBundle was not repaired")
		}
	})

	t.Run("At the serving certificate's renewal point it is reissued by the same CA.", func(t *testing.T) {
		f.clock.SetTime(renewAt(b.Serving.Cert))
		if _, err := f.m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		s, m := f.read(t)
		nb := parseBundle(s.Data)
		if nb.Serving.Cert.Equal(b.Serving.Cert) || !nb.CA.Cert.Equal(b.CA.Cert) {
			t.Fatal("want a new serving certificate from the same CA")
		}
		if string(m.Webhooks[0].ClientConfig.CABundle) != string(b.caBundle()) {
			t.Fatal("the caBundle changed although the CA did not")
		}
		c, _ := f.store.GetCertificate(nil)
		if !c.Leaf.Equal(nb.Serving.Cert) {
			t.Fatal("the store still serves the old certificate")
		}
	})

	t.Run("At the CA's renewal point the caBundle trusts the new and the old CA.", func(t *testing.T) {
		f.clock.SetTime(renewAt(b.CA.Cert))
		if _, err := f.m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		s, m := f.read(t)
		nb := parseBundle(s.Data)
		if nb.CA.Cert.Equal(b.CA.Cert) || !nb.CA.Cert.Equal(b.Next.Cert) || len(nb.Trusted) != 3 || !nb.Trusted[2].Equal(b.CA.Cert) {
			t.Fatal("want the next CA in place, a new next one, and the old one still trusted")
		}
		if got := parseCerts(m.Webhooks[0].ClientConfig.CABundle); len(got) != 3 {
			t.Fatalf("caBundle holds %d CAs, want 3", len(got))
		}
		if trust, _ := f.store.Trust(); string(trust) != string(m.Webhooks[0].ClientConfig.CABundle) {
			t.Fatal("sidecars injected after the rotation would not trust both CAs")
		}
	})
}

func TestCertManagerWithoutWebhookConfigurationRetries(t *testing.T) {
	f := newFixture(t)
	if err := f.c.Delete(context.Background(), &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "gh-injector"}}); err != nil {
		t.Fatal(err)
	}
	_, err := f.m.Reconcile(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("want a not-found error, got %v", err)
	}
	// The Secret is written anyway, so that replicas can serve as soon as
	// the configuration appears.
	s := &corev1.Secret{}
	if err := f.c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "gh-tls"}, s); err != nil {
		t.Fatalf("no Secret: %v", err)
	}
	if len(s.OwnerReferences) != 0 {
		t.Fatalf("owners = %v without a webhook configuration", s.OwnerReferences)
	}
}

func TestCertManagerStartRenewsOnTime(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.m.Start(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Start did not return after cancel")
		}
	}()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("the first certificate", func() bool { _, err := f.store.GetCertificate(nil); return err == nil })
	first, _ := f.store.GetCertificate(nil)
	waitFor("the loop to wait on the clock", f.clock.HasWaiters)

	// Resync passes (every 10 minutes) keep the certificate...
	f.clock.Step(10 * time.Minute)
	waitFor("the loop to wait again", f.clock.HasWaiters)
	if c, _ := f.store.GetCertificate(nil); !c.Leaf.Equal(first.Leaf) {
		t.Fatal("a resync pass replaced a fresh certificate")
	}
	// ...and the renewal point replaces it.
	f.clock.SetTime(renewAt(first.Leaf))
	waitFor("a renewed certificate", func() bool { c, _ := f.store.GetCertificate(nil); return !c.Leaf.Equal(first.Leaf) })
}
