package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// CertStore holds the serving certificate every replica presents, and the
// bundle of CAs that clients must trust for it. It is read on every TLS
// handshake (and every injection, for the bundle) and replaced whole when
// the Secret changes.
type CertStore struct {
	cert  atomic.Pointer[tls.Certificate]
	trust atomic.Pointer[[]byte]
}

// SetTrust installs the PEM bundle of trusted CAs (the Secret's ca.crt:
// the current CA first, then retired ones still valid).
func (s *CertStore) SetTrust(caPEM []byte) {
	if len(caPEM) == 0 {
		return
	}
	b := bytes.Clone(caPEM)
	s.trust.Store(&b)
}

// Trust returns the PEM bundle of trusted CAs, for injected sidecars.
func (s *CertStore) Trust() ([]byte, error) {
	if b := s.trust.Load(); b != nil {
		return *b, nil
	}
	return nil, errors.New("no CA bundle loaded yet")
}

// Set parses and installs a PEM certificate and key.
func (s *CertStore) Set(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("loading serving certificate: %w", err)
	}
	s.cert.Store(&c)
	return nil
}

// GetCertificate is the tls.Config hook.
func (s *CertStore) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no webhook serving certificate loaded yet")
}

// Checker is a readiness check: a replica without a certificate cannot
// serve the webhook.
func (s *CertStore) Checker(*http.Request) error {
	if s.cert.Load() == nil {
		return errors.New("no webhook serving certificate loaded yet")
	}
	return nil
}

// CertManager keeps the webhook's CA and serving certificate in a Secret,
// replaces them before they expire, and keeps the webhook configuration's
// caBundle equal to the trusted CAs. It runs on the elected leader only;
// CertWatcher spreads the result to every replica.
type CertManager struct {
	// Client writes the Secret and the webhook configuration.
	Client client.Client
	// Reader reads them uncached, so that no cluster-wide Secret informer
	// (and permission) is needed.
	Reader client.Reader
	// Namespace and SecretName name the certificate Secret.
	Namespace, SecretName string
	// ConfigurationName is the MutatingWebhookConfiguration to patch.
	ConfigurationName string
	// Spec says what the certificates hold.
	Spec certSpec
	// Store, when set, receives the certificate at once, before the
	// Secret watcher sees it.
	Store *CertStore
	// Resync bounds the time between two checks, so that a caBundle reset
	// by someone else is repaired.
	Resync time.Duration
	Clock  clock.Clock
	Log    logr.Logger
}

// NeedLeaderElection makes the CertManager leader-only: one writer.
func (m *CertManager) NeedLeaderElection() bool { return true }

// Start reconciles until ctx ends: at each renewal time, every Resync, and
// after errors with a backoff.
func (m *CertManager) Start(ctx context.Context) error {
	const minBackoff = time.Second
	backoff := minBackoff
	for {
		next, err := m.Reconcile(ctx)
		wait := m.Resync
		if err != nil {
			m.Log.Error(err, "reconciling the webhook certificate; retrying", "retryIn", backoff.String())
			wait, backoff = backoff, min(backoff*2, m.Resync)
		} else {
			backoff = minBackoff
			if until := next.Sub(m.Clock.Now()); until < wait {
				wait = max(until, 0)
			}
		}
		t := m.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// Reconcile makes one pass: issue what plan asks for, write the Secret,
// patch caBundle. It returns when the certificates next need attention.
func (m *CertManager) Reconcile(ctx context.Context) (time.Time, error) {
	now := m.Clock.Now()
	log := m.Log.WithValues("secret", m.Namespace+"/"+m.SecretName)

	var mwc *admissionregistrationv1.MutatingWebhookConfiguration
	got := &admissionregistrationv1.MutatingWebhookConfiguration{}
	switch err := m.Reader.Get(ctx, client.ObjectKey{Name: m.ConfigurationName}, got); {
	case err == nil:
		mwc = got
	case !apierrors.IsNotFound(err):
		return time.Time{}, fmt.Errorf("reading webhook configuration %s: %w", m.ConfigurationName, err)
	}

	secret := &corev1.Secret{}
	exists := true
	if err := m.Reader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.SecretName}, secret); apierrors.IsNotFound(err) {
		exists = false
	} else if err != nil {
		return time.Time{}, fmt.Errorf("reading certificate secret: %w", err)
	}

	b := parseBundle(secret.Data)
	d := plan(now, b, m.Spec)
	if d.changes() {
		next, err := apply(now, b, d, m.Spec, "gatehouse-webhook-ca."+m.Namespace)
		if err != nil {
			return time.Time{}, err
		}
		b = next
		log.Info("issuing webhook certificates", "reason", d.Reason, "newCA", d.NewCA, "newServing", d.NewServing,
			"caSerial", b.CA.Cert.SerialNumber.Text(16), "servingSerial", b.Serving.Cert.SerialNumber.Text(16),
			"servingNotAfter", b.Serving.Cert.NotAfter)
	}

	owner := ownerRef(mwc)
	needsOwner := owner != nil && !hasOwner(secret, owner.UID)
	switch {
	case !exists:
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: m.Namespace,
				Name:      m.SecretName,
				Labels:    map[string]string{gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue},
			},
			Type: corev1.SecretTypeTLS,
			Data: b.data(),
		}
		if owner != nil {
			secret.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		if err := m.Client.Create(ctx, secret); err != nil {
			return time.Time{}, fmt.Errorf("creating certificate secret: %w", err)
		}
	case d.changes() || needsOwner:
		secret.Data = b.data()
		if needsOwner {
			secret.OwnerReferences = append(secret.OwnerReferences, *owner)
		}
		// The read's resourceVersion makes this fail on a concurrent
		// write (another replica without leader election): the next
		// pass starts from what won.
		if err := m.Client.Update(ctx, secret); err != nil {
			return time.Time{}, fmt.Errorf("updating certificate secret: %w", err)
		}
	}
	if m.Store != nil {
		if err := m.Store.Set(b.Serving.CertPEM, b.Serving.KeyPEM); err != nil {
			return time.Time{}, err
		}
		m.Store.SetTrust(b.caBundle())
	}

	if mwc == nil {
		return time.Time{}, fmt.Errorf("webhook configuration %s not found: caBundle not written yet", m.ConfigurationName)
	}
	caBundle := b.caBundle()
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, caBundle) {
			mwc.Webhooks[i].ClientConfig.CABundle = caBundle
			changed = true
		}
	}
	if changed {
		if err := m.Client.Update(ctx, mwc); err != nil {
			return time.Time{}, fmt.Errorf("writing caBundle of %s: %w", m.ConfigurationName, err)
		}
		log.Info("wrote caBundle", "webhookConfiguration", m.ConfigurationName, "trustedCAs", len(b.Trusted))
	}
	return b.nextRenewal(), nil
}

// ownerRef makes the webhook configuration own the Secret, so that the
// garbage collector deletes the Secret with the release.
func ownerRef(mwc *admissionregistrationv1.MutatingWebhookConfiguration) *metav1.OwnerReference {
	if mwc == nil || mwc.UID == "" {
		return nil
	}
	return &metav1.OwnerReference{
		APIVersion: admissionregistrationv1.SchemeGroupVersion.String(),
		Kind:       "MutatingWebhookConfiguration",
		Name:       mwc.Name,
		UID:        mwc.UID,
	}
}

func hasOwner(o metav1.Object, uid types.UID) bool {
	for _, r := range o.GetOwnerReferences() {
		if r.UID == uid {
			return true
		}
	}
	return false
}

// CertWatcher loads the serving certificate from the Secret into a
// CertStore whenever the Secret changes, on every replica. It watches that
// one Secret by name, which is all its RBAC allows.
type CertWatcher struct {
	Clientset       kubernetes.Interface
	Namespace, Name string
	Store           *CertStore
	Log             logr.Logger
}

// NeedLeaderElection is false: every replica serves the webhook.
func (w *CertWatcher) NeedLeaderElection() bool { return false }

// Start watches until ctx ends.
func (w *CertWatcher) Start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(w.Clientset, 0,
		informers.WithNamespace(w.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.Name).String()
		}))
	inf := factory.Core().V1().Secrets().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    w.load,
		UpdateFunc: func(_, obj any) { w.load(obj) },
	}); err != nil {
		return fmt.Errorf("watching certificate secret: %w", err)
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

func (w *CertWatcher) load(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	if err := w.Store.Set(s.Data[SecretCertKey], s.Data[SecretKeyKey]); err != nil {
		// The error names no key material.
		w.Log.Error(err, "ignoring an unusable certificate secret", "secret", s.Namespace+"/"+s.Name)
		return
	}
	w.Store.SetTrust(s.Data[SecretCAKey])
	w.Log.V(1).Info("loaded webhook serving certificate", "secret", s.Namespace+"/"+s.Name, "resourceVersion", s.ResourceVersion)
}
