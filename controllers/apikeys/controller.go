// Package apikeys is the APIKey controller: it turns each APIKey into key
// material that validators check without ever seeing a plaintext key.
//
// For a generated key (spec.secretName) it generates the key, records its
// hash in the APIKey's status (which sidecars and the token endpoint read)
// and delivers the plaintext in a Secret owned by the APIKey; for a
// caller-supplied hash (spec.hash) it records the hash only. It rotates keys
// on schedule or on request with a grace period, marks keys expired or
// revoked, reports a delivery Secret that went missing or was altered, and
// takes over once the record ConfigMaps of previous versions.
// docs/apikeys.md describes the formats and the restart-safety design.
//
// Each reconcile reads (APIKey, delivery Secret, a previous version's
// record), decides with pure functions (decide.go), then writes: status
// first (the source of truth), the delivery Secret second, the status's
// delivery fields third, deletions last. Every write is conditional on the
// resourceVersion read, so a decision taken on a stale cache fails with a
// conflict instead of overwriting newer state.
package apikeys

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"time"

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
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/owned"
)

// ControllerName names the controller, its logger and its Events.
const ControllerName = "gatehouse-apikey"

// secretNameIndex indexes APIKeys by spec.secretName, so that a change to
// any Secret (including one the operator does not own, such as the Secret
// that blocks a name) reaches the APIKeys that name it.
const secretNameIndex = "spec.secretName"

// controllerIndex indexes the cached Secrets by the UID of the APIKey that
// controls them, so that finding an APIKey's delivery Secrets costs the
// number it has, not the number of Secrets in its namespace: a label
// selector is matched against every Secret of the namespace, and with one
// Secret per APIKey that made each reconcile linear and issuing a
// namespace's keys quadratic in their number.
const controllerIndex = "gatehouse.dev/controller-apikey-uid"

// controllingAPIKey is controllerIndex's value for o: the UID of the
// APIKey controlling it, if one does.
func controllingAPIKey(o client.Object) []string {
	if ref := apiKeyController(o); ref != nil {
		return []string{string(ref.UID)}
	}
	return nil
}

// apiKeyController is o's controller reference if an APIKey controls o.
func apiKeyController(o client.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOf(o)
	if ref == nil || ref.Kind != "APIKey" || ref.APIVersion != gatehousev1.GroupVersion.String() {
		return nil
	}
	return ref
}

// Reconciler reconciles APIKeys. The fields after Recorder are test seams
// with production defaults.
type Reconciler struct {
	// Client reads (usually from the cache) and writes.
	Client client.Client
	// APIReader reads straight from the API server: a previous version's
	// record ConfigMap (not cached), and the delivery Secret again when a
	// create finds its name taken.
	APIReader client.Reader
	// Scheme sets owner references.
	Scheme *runtime.Scheme
	// Recorder emits Events.
	Recorder events.EventRecorder
	// KeepLegacyRecords keeps a record ConfigMap per APIKey, mirrored from
	// status, for sidecars of earlier versions (the operator's
	// --keep-legacy-records); false deletes them.
	KeepLegacyRecords bool

	// Clock defaults to the real clock.
	Clock clock.PassiveClock
	// Rand is the key entropy source; defaults to crypto/rand.
	Rand io.Reader
	// ConflictRecheck is how soon an APIKey whose delivery Secret name is
	// taken looks at the name again; DefaultConflictRecheck when 0.
	ConflictRecheck time.Duration

	// secretsIndexed says Client's cache indexes Secrets by controllerIndex
	// (SetupWithManager registers it). A Client without that index (a
	// direct client in tests) is asked by label instead.
	secretsIndexed bool
}

// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=apikeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=apikeys/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one APIKey's status and delivery Secret in line with its
// spec and the time.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	ak := &gatehousev1.APIKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, ak); err != nil {
		// Gone: validators forget its keys with it, and owner references
		// let the garbage collector remove the delivery Secret.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if _, err := rotationRequest(ak.Annotations); err != nil {
		logger.Info("ignoring a malformed rotation request", "annotation", gatehousev1.AnnotationRotateRequestedAt, "error", err.Error())
	}

	// Decide on the cache first. A create that finds the delivery Secret's
	// name taken (the cache does not hold Secrets we do not own) decides
	// again on what the API server says.
	live := false
	for {
		reader := client.Reader(r.Client)
		if live {
			reader = r.APIReader
			// The failed pass may have written status already.
			if err := reader.Get(ctx, req.NamespacedName, ak); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
		}
		obs, err := r.observe(ctx, reader, ak)
		if err != nil {
			return ctrl.Result{}, err
		}
		d, err := decide(obs, func() (apikeyformat.Key, error) { return apikeyformat.Generate(r.rand()) })
		if err != nil {
			return ctrl.Result{}, err
		}
		err = r.write(ctx, ak, obs, d)
		if apierrors.IsAlreadyExists(err) && !live && r.APIReader != nil {
			live = true
			continue
		}
		if err != nil {
			if !owned.LogConflict(ctx, err) {
				r.reportWriteFailure(ctx, ak, err)
			}
			// A conflict: somebody (usually our own previous reconcile,
			// through a lagging cache) got there first; reconcile again.
			return ctrl.Result{}, err
		}
		for _, e := range d.Events {
			r.Recorder.Eventf(ak, nil, e.Type, e.Reason, e.Action, "%s", e.Note)
		}
		if len(d.Log) > 0 {
			logger.Info("api key changed", d.Log...)
		}
		if d.DeleteLegacy {
			// Come back to clear status.recordConfigMapName.
			return ctrl.Result{RequeueAfter: time.Millisecond}, nil
		}
		return ctrl.Result{RequeueAfter: r.requeueAfter(d)}, nil
	}
}

// DefaultConflictRecheck is how often a delivery Secret name held by a
// Secret the operator does not control is looked at again.
const DefaultConflictRecheck = time.Minute

// requeueAfter is when d's APIKey is due again: its next time-driven
// change, and no later than the conflict re-check when its name is taken.
func (r *Reconciler) requeueAfter(d decision) time.Duration {
	if !d.NameTaken {
		return d.RequeueAfter
	}
	recheck := r.ConflictRecheck
	if recheck <= 0 {
		recheck = DefaultConflictRecheck
	}
	if d.RequeueAfter > 0 && d.RequeueAfter < recheck {
		return d.RequeueAfter
	}
	return recheck
}

// liveReader is APIReader, or Client where none is set (tests that
// reconcile by hand with a client of the API server).
func (r *Reconciler) liveReader() client.Reader {
	if r.APIReader == nil {
		return r.Client
	}
	return r.APIReader
}

func (r *Reconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

func (r *Reconciler) rand() io.Reader {
	if r.Rand == nil {
		return rand.Reader
	}
	return r.Rand
}

// observe reads the delivery Secret through reader and a previous
// version's record ConfigMap straight from the API server.
func (r *Reconciler) observe(ctx context.Context, reader client.Reader, ak *gatehousev1.APIKey) (observation, error) {
	obs := observation{APIKey: ak, Now: r.now(), KeepLegacy: r.KeepLegacyRecords}
	if name := ak.Spec.SecretName; name != "" {
		sec := &corev1.Secret{}
		switch err := reader.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: name}, sec); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return obs, fmt.Errorf("reading delivery secret: %w", err)
		default:
			obs.Delivery, obs.secret = readDelivery(sec, ak), sec
		}
	}
	if err := r.observeLegacy(ctx, ak, &obs); err != nil {
		return obs, err
	}
	return obs, nil
}

// observeLegacy reads the record ConfigMap a previous version named in
// status.recordConfigMapName. It counts only if this APIKey, by UID,
// controls it: anyone may create a ConfigMap of that name.
func (r *Reconciler) observeLegacy(ctx context.Context, ak *gatehousev1.APIKey, obs *observation) error {
	name := ak.Status.RecordConfigMapName
	if name == "" {
		return nil
	}
	reader := r.liveReader()
	cm := &corev1.ConfigMap{}
	switch err := reader.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: name}, cm); {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading the previous version's record: %w", err)
	}
	if !metav1.IsControlledBy(cm, ak) || cm.Labels[gatehousev1.LabelRecord] != gatehousev1.RecordAPIKey {
		return nil
	}
	obs.LegacyExists, obs.legacyCM = true, cm
	if rec, err := apikeyformat.UnmarshalRecord([]byte(cm.Data[gatehousev1.RecordDataKey])); err == nil && rec.Name == ak.Name {
		obs.Legacy = rec
	}
	return nil
}

// readDelivery extracts the key of a delivery Secret. A key that does not
// parse (hand-edited) counts as lost.
func readDelivery(sec *corev1.Secret, ak *gatehousev1.APIKey) deliveryState {
	ds := deliveryState{Exists: true}
	if !metav1.IsControlledBy(sec, ak) {
		ds.Foreign = true
		return ds
	}
	if k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey])); err == nil {
		ds.Key = &k
	}
	return ds
}

// write applies a decision: status (the source of truth) first, then the
// delivery Secret and the status's delivery fields, then deletions.
func (r *Reconciler) write(ctx context.Context, ak *gatehousev1.APIKey, obs observation, d decision) error {
	ak = ak.DeepCopy()
	if err := r.writeStatus(ctx, ak, d.Status); err != nil {
		return err
	}
	if d.Delivery != nil {
		if err := r.writeDelivery(ctx, ak, obs.secret, d.Delivery); err != nil {
			// The API server's message could quote the object; keep only the
			// reason.
			return secretWriteError(err)
		}
		// Recording the delivery must not be lost to a conflict with a
		// spec edit made since step 1 (the key would count as never
		// delivered and be replaced): only the operator writes status, so
		// a merge patch of what changed, without a version precondition,
		// is safe here.
		before := ak.DeepCopy()
		ak.Status = *d.Delivered.DeepCopy()
		if err := r.Client.Status().Patch(ctx, ak, client.MergeFrom(before)); err != nil {
			return fmt.Errorf("recording the delivery in status: %w", err)
		}
	}
	if d.DeleteStale {
		// The Secret name the decision was taken on: ak may hold a newer
		// spec by now (the status patch returns the latest object), and its
		// new Secret is delivered by the next reconcile, not this one.
		if err := r.deleteStaleDeliveries(ctx, ak, obs.APIKey.Spec.SecretName); err != nil {
			return err
		}
	}
	if d.MirrorLegacy {
		if err := r.mirrorLegacy(ctx, ak, obs.legacyCM); err != nil {
			return err
		}
	}
	if d.DeleteLegacy && obs.legacyCM != nil {
		if err := owned.Delete(ctx, r.Client, obs.legacyCM); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting the previous version's record: %w", err)
		}
		log.FromContext(ctx).Info("deleted the previous version's record configmap", "configMap", obs.legacyCM.Name)
	}
	return nil
}

// writeStatus writes st if it differs from ak's status, and updates ak to
// what the API server returned.
func (r *Reconciler) writeStatus(ctx context.Context, ak *gatehousev1.APIKey, st *gatehousev1.APIKeyStatus) error {
	if st == nil || equality.Semantic.DeepEqual(&ak.Status, st) {
		return nil
	}
	ak.Status = *st.DeepCopy()
	if err := r.Client.Status().Update(ctx, ak); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	return nil
}

func (r *Reconciler) writer() owned.Writer {
	return owned.Writer{Client: r.Client, Scheme: r.Scheme}
}

func (r *Reconciler) writeDelivery(ctx context.Context, ak *gatehousev1.APIKey, observed *corev1.Secret, km *keyMaterial) error {
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   ak.Namespace,
			Name:        ak.Spec.SecretName,
			Labels:      owned.Labels(ak, nil),
			Annotations: map[string]string{AnnotationIssuedAt: km.IssuedAt.UTC().Format(time.RFC3339)},
		},
		Type: DeliverySecretType,
		Data: map[string][]byte{
			gatehousev1.DeliveryKeyDataKey:   []byte(km.Key.Plaintext()),
			gatehousev1.DeliveryKeyIDDataKey: []byte(km.Key.ID()),
		},
	}
	// An observed Secret that is not ours was caught by decide; one that
	// appeared since is refused by the writer with a conflict.
	_, _, err := r.writer().Secret(ctx, ak, observed, want)
	return err
}

// deleteStaleDeliveries deletes delivery Secrets this APIKey controls under
// a name other than spec.secretName (the name changed, or the key is now
// given by hash), so that no plaintext key outlives its use.
func (r *Reconciler) deleteStaleDeliveries(ctx context.Context, ak *gatehousev1.APIKey, current string) error {
	var match client.ListOption = client.MatchingLabels(owned.Labels(ak, nil))
	if r.secretsIndexed {
		match = client.MatchingFields{controllerIndex: string(ak.UID)}
	}
	list := &corev1.SecretList{}
	if err := r.Client.List(ctx, list, client.InNamespace(ak.Namespace), match); err != nil {
		return fmt.Errorf("listing delivery secrets: %w", err)
	}
	for i := range list.Items {
		sec := &list.Items[i]
		if sec.Name == current || sec.Type != DeliverySecretType || !metav1.IsControlledBy(sec, ak) {
			continue
		}
		if err := owned.Delete(ctx, r.Client, sec); client.IgnoreNotFound(err) != nil {
			return secretWriteError(err)
		}
		log.FromContext(ctx).Info("deleted stale delivery secret", "secret", sec.Name)
	}
	return nil
}

// reportWriteFailure sets Ready=False with reason WriteFailed, best effort.
func (r *Reconciler) reportWriteFailure(ctx context.Context, ak *gatehousev1.APIKey, err error) {
	ak = ak.DeepCopy()
	msg := fmt.Sprintf("Writing the key material failed (%s); the operator retries.", apierrors.ReasonForError(err))
	if !conditions.Set(&ak.Status.Conditions, ak.Generation, metav1.NewTime(r.now()), gatehousev1.ConditionReady,
		metav1.ConditionFalse, gatehousev1.ReasonWriteFailed, msg) {
		return
	}
	if uerr := r.Client.Status().Update(ctx, ak); uerr != nil {
		log.FromContext(ctx).V(1).Info("could not report the write failure in status", "reason", apierrors.ReasonForError(uerr))
		return
	}
	r.Recorder.Eventf(ak, nil, corev1.EventTypeWarning, gatehousev1.ReasonWriteFailed, actionReconcile, "%s", msg)
}

// secretWriteError wraps a failed delivery Secret write: it prints only the
// API reason, since the server's message may quote the plaintext key.
func secretWriteError(err error) error {
	return &owned.RedactedError{Op: "writing delivery secret", Err: err}
}

// SetupWithManager registers the controller. workers is
// MaxConcurrentReconciles (at least 1).
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, workers int) error {
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
	if err := mgr.GetFieldIndexer().IndexField(ctx, &gatehousev1.APIKey{}, secretNameIndex, func(o client.Object) []string {
		if n := o.(*gatehousev1.APIKey).Spec.SecretName; n != "" {
			return []string{n}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing apikeys by secret name: %w", err)
	}
	// Indexed only when Client is the manager's: another client does not
	// read this cache.
	if r.Client == mgr.GetClient() {
		if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Secret{}, controllerIndex, controllingAPIKey); err != nil {
			return fmt.Errorf("indexing secrets by controlling apikey: %w", err)
		}
		r.secretsIndexed = true
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("apikey").
		For(&gatehousev1.APIKey{}, builder.WithPredicates(specOrMetadataChanged)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.apiKeysForSecret), builder.WithPredicates(notCreated)).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(workers, 1)})
	if r.KeepLegacyRecords {
		// A legacy record edited or deleted by hand is written again.
		b = b.Owns(&corev1.ConfigMap{})
	}
	return b.Complete(r)
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

// notCreated drops creation events of Secrets. The
// reconcile that created an object of ours has already done its work, and
// reacting to our own creations would double the reconciles (and, through
// a cache not yet showing our status write, cause conflicts) exactly when
// thousands of keys are issued at once. Updates and deletions, by hand or
// otherwise, are what need repairing; a Secret created by someone else under
// a name an APIKey wants is found when that APIKey's creation fails.
var notCreated = predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }}

// apiKeysForSecret maps a Secret to the APIKey controlling it and to the
// APIKeys naming it in spec.secretName (a conflict resolves when it goes).
func (r *Reconciler) apiKeysForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	if ref := apiKeyController(o); ref != nil {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: ref.Name}})
	}
	list := &gatehousev1.APIKeyList{}
	if err := r.Client.List(ctx, list, client.InNamespace(o.GetNamespace()), client.MatchingFields{secretNameIndex: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing apikeys by secret name")
		return reqs
	}
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}
