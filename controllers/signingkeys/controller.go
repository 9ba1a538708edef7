// Package signingkeys is the SigningKey controller: it keeps each
// SigningKey's private keys in an operator-written Secret, rotates them in
// three phases (Next → Active → Retired), and publishes the public JWKS in
// the SigningKey's status, which sidecars, the token endpoint and the
// discovery server trust and nobody but the operator may write.
//
// Each reconcile reads (SigningKey, Secret, the other claimants of its
// issuer, JWKS ConfigMaps earlier versions wrote), decides once with the
// pure function decide (decide.go), then writes: the Secret first, the
// status second, and deletes the legacy ConfigMaps last. What the next
// step depends on (a key published in status) is handed over to the next
// reconcile through the status it reads, as cert-manager's controllers do:
// a reconcile never loops decide/write. Every update is conditional on the
// resourceVersion read, so a decision taken on a stale cache fails with a
// conflict instead of overwriting newer state. docs/signingkeys.md
// describes the formats, the timeline and the recovery rules.
package signingkeys

import (
	"context"
	"crypto/rand"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
)

// ControllerName names the controller, its logger and its Events.
const ControllerName = "gatehouse-signingkey"

const (
	actionRotate    = "Rotate"
	actionReconcile = "Reconcile"

	// conflictRetry is how often a name or issuer conflict is looked at
	// again when no watch event reports that it was resolved.
	conflictRetry = time.Minute
)

// Reconciler reconciles SigningKeys. The fields after IssuerPrefix are
// test seams with production defaults.
type Reconciler struct {
	// Client reads (usually from the cache, which must have
	// keyring.IssuerIndex: SetupWithManager registers it) and writes.
	Client client.Client
	// APIReader reads straight from the API server, to confirm a
	// surprising cached view (a missing Secret, keys missing from it, keys
	// the status never published) before acting on it.
	APIReader client.Reader
	// Scheme sets owner references.
	Scheme *runtime.Scheme
	// Recorder emits Events.
	Recorder events.EventRecorder
	// IssuerPrefix, when set, confines each namespace's issuers (the
	// operator's --issuer-prefix).
	IssuerPrefix keyring.IssuerPrefix
	// KeepLegacyRecords keeps the JWKS ConfigMap that sidecars of earlier
	// versions read, mirrored from status (the operator's
	// --keep-legacy-records); false deletes it.
	KeepLegacyRecords bool

	// Clock defaults to the real clock.
	Clock clock.PassiveClock
	// Generator makes new keys; defaults to crypto/rand.
	Generator keyring.Generator
}

// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=signingkeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=signingkeys/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile reads one SigningKey's state, decides once, and writes.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	sk := &gatehousev1.SigningKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, sk); err != nil {
		// Gone: owner references let the garbage collector remove the
		// Secret.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if sk.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	obs, err := r.read(ctx, sk)
	if err != nil {
		return ctrl.Result{}, err
	}
	d, err := decide(obs, r.now(), r.IssuerPrefix, r.generator())
	if err != nil {
		return ctrl.Result{}, err
	}
	return r.write(ctx, obs, d)
}

// emit records changes as Events and log lines.
func (r *Reconciler) emit(ctx context.Context, sk *gatehousev1.SigningKey, changes []Change) {
	logger := log.FromContext(ctx)
	for _, c := range changes {
		action := actionRotate
		switch c.Reason {
		case ReasonBadRotateRequest, ReasonRotationIgnored, gatehousev1.ReasonIssuerConflict, gatehousev1.ReasonIssuerOutsidePrefix,
			gatehousev1.ReasonSecretConflict, gatehousev1.ReasonInvalidSpec, gatehousev1.ReasonWriteFailed:
			action = actionReconcile
		}
		r.Recorder.Eventf(sk, nil, c.Type, c.Reason, action, "%s", c.Message)
		logger.Info("signing key changed", "reason", c.Reason, "kid", c.KeyID)
	}
}

func (r *Reconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

func (r *Reconciler) generator() keyring.Generator {
	if r.Generator == nil {
		return keyring.NewGenerator(rand.Reader)
	}
	return r.Generator
}

// SetupWithManager registers the controller and the issuer index it (and
// discovery and the token endpoint) look claimants up with.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Scheme == nil {
		r.Scheme = mgr.GetScheme()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder(ControllerName)
	}
	if err := keyring.IndexIssuer(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("signingkey").
		For(&gatehousev1.SigningKey{}, builder.WithPredicates(specOrMetadataChanged)).
		Owns(&corev1.Secret{}).
		// A foreign Secret blocking the name: retry as soon as it goes.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(secretToSigningKey)).
		// Another claimant of the issuer came, changed or went: the
		// owner may have changed.
		Watches(&gatehousev1.SigningKey{}, handler.EnqueueRequestsFromMapFunc(r.otherClaimants), builder.WithPredicates(specOrMetadataChanged))
	if r.KeepLegacyRecords {
		// A legacy JWKS ConfigMap edited or deleted by hand is written again.
		b = b.Owns(&corev1.ConfigMap{})
	}
	return b.Complete(r)
}

// otherClaimants maps a SigningKey to the other SigningKeys naming its
// issuer (from the cache).
func (r *Reconciler) otherClaimants(ctx context.Context, o client.Object) []reconcile.Request {
	sk, ok := o.(*gatehousev1.SigningKey)
	if !ok {
		return nil
	}
	claimants, err := keyring.Claimants(ctx, r.Client, sk.Spec.Issuer)
	if err != nil {
		log.FromContext(ctx).Error(err, "listing the claimants of an issuer")
		return nil
	}
	var out []reconcile.Request
	for _, c := range claimants {
		if c.Namespace != sk.Namespace || c.Name != sk.Name {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}})
		}
	}
	return out
}

func secretToSigningKey(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := strings.CutSuffix(o.GetName(), "-signing-keys")
	if !ok || metav1.GetControllerOf(o) != nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// specOrMetadataChanged skips the update events of our own status writes:
// the spec (generation), annotations (rotation requests), labels and the
// deletion timestamp are what a reconcile depends on. A reconcile that
// needs the next one to see its status write requeues itself.
var specOrMetadataChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() ||
			!maps.Equal(o.GetAnnotations(), n.GetAnnotations()) ||
			!maps.Equal(o.GetLabels(), n.GetLabels()) ||
			!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp())
	},
}
