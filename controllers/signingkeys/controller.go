// Package signingkeys is the SigningKey controller: it keeps each
// SigningKey's private keys in an operator-only Secret, rotates them in
// three phases (Next → Active → Retired), and publishes the public JWKS in
// a ConfigMap that sidecars and the discovery server read.
//
// Each reconcile reads (SigningKey, Secret, ConfigMap), decides with the
// pure functions of internal/keyring, then writes: the Secret first (the
// source of truth), the ConfigMap second, the status last. The ConfigMap and
// the status are derived from the Secret, so a crash between two writes is
// repaired by the next reconcile. Every update is conditional on the
// resourceVersion read, so a decision taken on a stale cache fails with a
// conflict instead of overwriting newer state. docs/signingkeys.md
// describes the formats, the timeline and the recovery rules.
package signingkeys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/internal/owned"
)

// ControllerName names the controller, its logger and its Events.
const ControllerName = "gatehouse-signingkey"

const (
	// ReasonJWKSConflict means the JWKS ConfigMap name is taken by a
	// ConfigMap this SigningKey does not control.
	ReasonJWKSConflict = "JWKSConflict"

	actionRotate    = "Rotate"
	actionReconcile = "Reconcile"

	// conflictRetry is how often a name conflict is looked at again when
	// no watch event reports that it was resolved.
	conflictRetry = time.Minute
)

// Reconciler reconciles SigningKeys. The fields after Recorder are test
// seams with production defaults.
type Reconciler struct {
	// Client reads (usually from the cache) and writes.
	Client client.Client
	// APIReader reads straight from the API server, to confirm a
	// surprising cached view (a missing Secret, keys missing from it)
	// before keys are declared lost.
	APIReader client.Reader
	// Scheme sets owner references.
	Scheme *runtime.Scheme
	// Recorder emits Events.
	Recorder events.EventRecorder

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

// observation is what a reconcile reads.
type observation struct {
	secret        *corev1.Secret
	secretForeign bool
	keySet        *keyring.KeySet
	// docBroken: the Secret exists but its document is unusable.
	docBroken bool

	cm        *corev1.ConfigMap
	cmForeign bool
	published map[string]bool
	pubKeys   map[string]jwk.Key
}

// Reconcile brings one SigningKey's Secret, JWKS ConfigMap and status in
// line with its spec and the time.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	sk := &gatehousev1.SigningKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, sk); err != nil {
		// Gone: owner references let the garbage collector remove the
		// Secret and the ConfigMap.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if sk.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	now := r.now()

	policy, err := keyring.PolicyFor(sk)
	if err != nil {
		return ctrl.Result{}, r.setNotReady(ctx, sk, now, gatehousev1.ReasonInvalidSpec, fmt.Sprintf("The spec is invalid: %v.", err))
	}

	obs, err := r.observe(ctx, r.Client, sk)
	if err != nil {
		return ctrl.Result{}, err
	}
	if r.APIReader != nil && suspicious(sk, obs, policy, now) {
		// The cache may lag behind our own last writes: never declare
		// keys lost on the strength of a stale view.
		if obs, err = r.observe(ctx, r.APIReader, sk); err != nil {
			return ctrl.Result{}, err
		}
	}
	switch {
	case obs.secretForeign:
		msg := fmt.Sprintf("Secret %s exists and is not controlled by this SigningKey; rename or delete it.", keyring.SecretName(sk.Name))
		return ctrl.Result{RequeueAfter: conflictRetry}, r.setNotReady(ctx, sk, now, gatehousev1.ReasonSecretConflict, msg)
	case obs.cmForeign:
		msg := fmt.Sprintf("ConfigMap %s exists and is not controlled by this SigningKey; rename or delete it, or set spec.jwksConfigMapName.", keyring.JWKSConfigMapName(sk))
		return ctrl.Result{RequeueAfter: conflictRetry}, r.setNotReady(ctx, sk, now, ReasonJWKSConflict, msg)
	}

	var changes []keyring.Change
	ks := obs.keySet
	if ks == nil {
		ks = &keyring.KeySet{}
	}
	recovered, lost, gone := keyring.Recover(ks, sk.Status.Keys, obs.pubKeys, policy, now)
	if obs.secret == nil && len(sk.Status.Keys) > 0 || obs.docBroken || len(lost)+len(gone) > 0 || len(ks.Invalid) > 0 {
		msg := fmt.Sprintf("Private keys in Secret %s were lost (the Secret was deleted or edited).", keyring.SecretName(sk.Name))
		if len(lost) > 0 {
			msg += fmt.Sprintf(" Keys %s stay published, retired, so tokens they signed verify until the overlap ends.", strings.Join(lost, ", "))
		}
		if len(gone) > 0 {
			msg += fmt.Sprintf(" Keys %s are gone from the JWKS too: tokens they signed now fail.", strings.Join(gone, ", "))
		}
		msg += " A new key signs from now on."
		changes = append(changes, keyring.Change{Type: corev1.EventTypeWarning, Reason: gatehousev1.ReasonKeyLost, Message: msg})
		logger.Info("signing keys lost", "lost", lost, "gone", gone, "invalid", ks.Invalid)
		ks = recovered
		// Rewrite the Secret even when the surviving keys are unchanged,
		// so that the unusable entries are gone.
		obs.docBroken = true
	}

	published := obs.published
	var next time.Time
	var told []keyring.Change
	for pass := 0; ; pass++ {
		if pass > 2 {
			return ctrl.Result{}, errors.New("signing key state did not settle")
		}
		plan, err := keyring.Decide(ks, policy, published, now, r.generator())
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("deciding keys: %w", err)
		}
		changes = append(changes, plan.Changes...)
		ks, next = plan.KeySet, plan.NextTransition
		if plan.Changed || obs.secret == nil || obs.docBroken {
			if obs.secret, err = r.writeSecret(ctx, sk, obs.secret, ks); err != nil {
				return ctrl.Result{}, r.writeFailed(ctx, sk, now, err)
			}
			obs.docBroken = false
			// The changes are durable now: tell them even if a later write
			// fails (a retry would not decide them again).
			r.emit(ctx, sk, changes)
			told = append(told, changes...)
			changes = nil
		}
		doc, err := ks.JWKS(now)
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("assembling jwks: %w", err)
		}
		written, cm, err := r.writeConfigMap(ctx, sk, obs.cm, doc)
		if err != nil {
			return ctrl.Result{}, r.writeFailed(ctx, sk, now, fmt.Errorf("writing jwks configmap: %w", err))
		}
		obs.cm = cm
		if !written {
			break
		}
		// The JWKS now holds what it holds: decide again so a new next
		// key is scheduled from this publication.
		fresh := false
		for kid := range keyring.PublishedKeys(doc) {
			if !published[kid] {
				fresh = true
			}
			published = setWith(published, kid)
		}
		if !fresh {
			break
		}
	}
	if err := r.deleteStaleConfigMaps(ctx, sk); err != nil {
		return ctrl.Result{}, err
	}

	before := sk.Status.DeepCopy()
	if err := r.writeStatus(ctx, sk, ks, policy, now); err != nil {
		return ctrl.Result{}, err
	}
	told = append(told, changes...)
	r.emit(ctx, sk, append(changes, dedupe(keyring.PhaseChanges(before.Keys, sk.Status.Keys), told)...))
	if next.IsZero() {
		return ctrl.Result{}, nil
	}
	// Requeue at the exact transition, measured on the injected clock.
	return ctrl.Result{RequeueAfter: max(next.Sub(r.now()), time.Millisecond)}, nil
}

// emit records changes as Events and log lines.
func (r *Reconciler) emit(ctx context.Context, sk *gatehousev1.SigningKey, changes []keyring.Change) {
	logger := log.FromContext(ctx)
	for _, c := range changes {
		action := actionRotate
		if c.Reason == keyring.ReasonBadRotateRequest || c.Reason == keyring.ReasonRotationIgnored {
			action = actionReconcile
		}
		r.Recorder.Eventf(sk, nil, c.Type, c.Reason, action, "%s", c.Message)
		logger.Info("signing key changed", "reason", c.Reason, "kid", c.KeyID)
	}
}

func setWith(m map[string]bool, k string) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[k] = true
	return m
}

// dedupe drops phase-change events that a decision change already told.
func dedupe(phase, told []keyring.Change) []keyring.Change {
	return slices.DeleteFunc(phase, func(c keyring.Change) bool {
		return slices.ContainsFunc(told, func(t keyring.Change) bool {
			return t.KeyID == c.KeyID && (t.Reason == c.Reason || c.Reason == keyring.ReasonKeyRemoved && t.Reason == gatehousev1.ReasonKeyLost)
		})
	})
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

// suspicious reports whether the cached view looks like lost keys: a
// missing or unreadable Secret, or keys the status reports that the
// Secret lacks. The cache may simply not have seen our last write yet.
func suspicious(sk *gatehousev1.SigningKey, obs observation, p keyring.Policy, now time.Time) bool {
	if obs.docBroken || (obs.keySet != nil && len(obs.keySet.Invalid) > 0) {
		return true
	}
	if obs.secret == nil || obs.cm == nil {
		// The cache holds only objects with the operator's label: an
		// object in the way (a user's Secret or ConfigMap of that name)
		// is seen only by an uncached read.
		return true
	}
	_, lost, gone := keyring.Recover(obs.keySet, sk.Status.Keys, obs.pubKeys, p, now)
	return len(lost)+len(gone) > 0
}

// observe reads the Secret and the JWKS ConfigMap through reader.
func (r *Reconciler) observe(ctx context.Context, reader client.Reader, sk *gatehousev1.SigningKey) (observation, error) {
	var obs observation
	sec := &corev1.Secret{}
	switch err := reader.Get(ctx, types.NamespacedName{Namespace: sk.Namespace, Name: keyring.SecretName(sk.Name)}, sec); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return obs, fmt.Errorf("reading signing key secret: %w", err)
	case !metav1.IsControlledBy(sec, sk):
		obs.secretForeign = true
	default:
		obs.secret = sec
		ks, err := keyring.LoadKeySet(sec)
		if err != nil {
			obs.docBroken = true
		} else {
			obs.keySet = ks
		}
	}
	cm := &corev1.ConfigMap{}
	switch err := reader.Get(ctx, types.NamespacedName{Namespace: sk.Namespace, Name: keyring.JWKSConfigMapName(sk)}, cm); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return obs, fmt.Errorf("reading jwks configmap: %w", err)
	case !metav1.IsControlledBy(cm, sk):
		obs.cmForeign = true
	default:
		obs.cm = cm
		obs.pubKeys = keyring.PublishedKeys([]byte(cm.Data[gatehousev1.JWKSDataKey]))
		obs.published = map[string]bool{}
		for kid := range obs.pubKeys {
			obs.published[kid] = true
		}
	}
	return obs, nil
}

func (r *Reconciler) writer() owned.Writer {
	return owned.Writer{Client: r.Client, Scheme: r.Scheme}
}

func jwksLabels(sk *gatehousev1.SigningKey) map[string]string {
	return owned.Labels(sk, map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordJWKS})
}

// writeSecret stores ks, creating the Secret if needed, and returns what
// was written.
func (r *Reconciler) writeSecret(ctx context.Context, sk *gatehousev1.SigningKey, observed *corev1.Secret, ks *keyring.KeySet) (*corev1.Secret, error) {
	doc, err := ks.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding key set: %w", err)
	}
	if observed != nil && observed.Type != keyring.SecretType {
		// The type is immutable: a Secret of another type that we control
		// can only have been replaced by hand. Recreate it.
		if err := owned.Delete(ctx, r.Client, observed.DeepCopy()); err != nil {
			return nil, secretWriteError(err)
		}
		observed = nil
	}
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: sk.Namespace, Name: keyring.SecretName(sk.Name), Labels: owned.Labels(sk, nil)},
		Type:       keyring.SecretType,
		Data:       map[string][]byte{keyring.SecretDataKey: doc},
	}
	sec, _, err := r.writer().Secret(ctx, sk, observed, want)
	if err != nil {
		return nil, secretWriteError(err)
	}
	return sec, nil
}

// writeConfigMap makes the JWKS ConfigMap hold doc and reports whether it
// wrote.
func (r *Reconciler) writeConfigMap(ctx context.Context, sk *gatehousev1.SigningKey, observed *corev1.ConfigMap, doc []byte) (bool, *corev1.ConfigMap, error) {
	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: sk.Namespace, Name: keyring.JWKSConfigMapName(sk), Labels: jwksLabels(sk)},
		Data:       map[string]string{gatehousev1.JWKSDataKey: string(doc), gatehousev1.JWKSIssuerKey: sk.Spec.Issuer},
	}
	cm, written, err := r.writer().ConfigMap(ctx, sk, observed, want)
	return written, cm, err
}

// deleteStaleConfigMaps deletes JWKS ConfigMaps this SigningKey controls
// under a name other than the current one (spec.jwksConfigMapName
// changed), so that verifiers selecting by label find exactly one.
func (r *Reconciler) deleteStaleConfigMaps(ctx context.Context, sk *gatehousev1.SigningKey) error {
	list := &corev1.ConfigMapList{}
	if err := r.Client.List(ctx, list, client.InNamespace(sk.Namespace), client.MatchingLabels(jwksLabels(sk))); err != nil {
		return fmt.Errorf("listing jwks configmaps: %w", err)
	}
	current := keyring.JWKSConfigMapName(sk)
	for i := range list.Items {
		cm := &list.Items[i]
		if cm.Name == current || !metav1.IsControlledBy(cm, sk) {
			continue
		}
		if err := owned.Delete(ctx, r.Client, cm); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting stale jwks configmap: %w", err)
		}
		log.FromContext(ctx).Info("deleted stale jwks configmap", "configMap", cm.Name)
	}
	return nil
}

// writeStatus derives the status from ks and writes it when it changed.
func (r *Reconciler) writeStatus(ctx context.Context, sk *gatehousev1.SigningKey, ks *keyring.KeySet, p keyring.Policy, now time.Time) error {
	st := keyring.StatusWithNextRotation(ks, p, now)
	next := sk.DeepCopy()
	s := &next.Status
	s.ObservedGeneration = sk.Generation
	s.ActiveKeyID, s.NextRotationTime, s.LastRotationTime, s.Keys = st.ActiveKeyID, st.NextRotationTime, st.LastRotationTime, st.Keys
	s.SecretName, s.JWKSConfigMapName = keyring.SecretName(sk.Name), keyring.JWKSConfigMapName(sk)

	var revoked, lost []string
	published := 0
	for _, k := range ks.Keys {
		switch {
		case !k.RevokedAt.IsZero():
			revoked = append(revoked, k.ID)
		case k.Lost:
			lost = append(lost, k.ID)
			published++
		default:
			published++
		}
	}
	reason := gatehousev1.ReasonKeysPublished
	msg := fmt.Sprintf("Key %s signs; %d key(s) are published in ConfigMap %s.", st.ActiveKeyID, published, s.JWKSConfigMapName)
	if len(lost) > 0 {
		reason = gatehousev1.ReasonKeyLost
		msg += fmt.Sprintf(" The private part of key(s) %s was lost; they stay published, retired, until their overlap ends.", strings.Join(lost, ", "))
	}
	if len(revoked) > 0 {
		reason = gatehousev1.ReasonKeyRevoked
		msg += fmt.Sprintf(" Revoked key(s) %s are withdrawn from the JWKS: tokens signed by them fail verification.", strings.Join(revoked, ", "))
	}
	conditions.Set(&s.Conditions, sk.Generation, metav1.NewTime(now), gatehousev1.ConditionReady, metav1.ConditionTrue, reason, msg)
	if equality.Semantic.DeepEqual(&sk.Status, s) {
		return nil
	}
	if err := r.Client.Status().Update(ctx, next); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	*sk = *next
	return nil
}

// setNotReady records a problem in the Ready condition (and an Event when
// it is new). Keys already published stay as they are.
func (r *Reconciler) setNotReady(ctx context.Context, sk *gatehousev1.SigningKey, now time.Time, reason, msg string) error {
	next := sk.DeepCopy()
	next.Status.ObservedGeneration = sk.Generation
	changed := conditions.Set(&next.Status.Conditions, sk.Generation, metav1.NewTime(now), gatehousev1.ConditionReady, metav1.ConditionFalse, reason, msg)
	if equality.Semantic.DeepEqual(&sk.Status, &next.Status) {
		return nil
	}
	if err := r.Client.Status().Update(ctx, next); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	if changed {
		r.Recorder.Eventf(sk, nil, corev1.EventTypeWarning, reason, actionReconcile, "%s", msg)
	}
	return nil
}

// writeFailed reports a failed write in status (best effort) and returns
// err for a retry. Conflicts are routine (a stale cache) and not reported.
func (r *Reconciler) writeFailed(ctx context.Context, sk *gatehousev1.SigningKey, now time.Time, err error) error {
	if owned.LogConflict(ctx, err) {
		return err
	}
	msg := fmt.Sprintf("Writing the key material failed (%s); the operator retries.", apierrors.ReasonForError(err))
	if serr := r.setNotReady(ctx, sk, now, gatehousev1.ReasonWriteFailed, msg); serr != nil {
		log.FromContext(ctx).V(1).Info("could not report the write failure in status", "reason", apierrors.ReasonForError(serr))
	}
	return err
}

// secretWriteError wraps a failed Secret write: it prints only the API
// reason, since the server's message may quote the private keys.
func secretWriteError(err error) error {
	return &owned.RedactedError{Op: "writing signing key secret", Err: err}
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
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
	return ctrl.NewControllerManagedBy(mgr).
		Named("signingkey").
		For(&gatehousev1.SigningKey{}, builder.WithPredicates(specOrMetadataChanged)).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ConfigMap{}).
		// A foreign Secret blocking the name: retry as soon as it goes.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(secretToSigningKey)).
		Complete(r)
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
// deletion timestamp are what a reconcile depends on.
var specOrMetadataChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() ||
			!maps.Equal(o.GetAnnotations(), n.GetAnnotations()) ||
			!maps.Equal(o.GetLabels(), n.GetLabels()) ||
			!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp())
	},
}
