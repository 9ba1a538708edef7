package signingkeys

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/internal/owned"
)

// write applies a decision: the Secret (the private keys) first, then the
// status (what validators trust), then the deletion (or, with
// KeepLegacyRecords, the upkeep) of the legacy JWKS ConfigMaps, which waits
// until the status publishes the JWKS.
func (r *Reconciler) write(ctx context.Context, obs observation, d decision) (ctrl.Result, error) {
	sk := obs.sk
	if d.writeSecret {
		if _, err := r.writeSecret(ctx, sk, obs.secret, d.keySet); err != nil {
			return ctrl.Result{}, r.writeFailed(ctx, sk, err)
		}
	}
	r.emit(ctx, sk, d.told)
	if err := r.writeStatus(ctx, sk, d); err != nil {
		return ctrl.Result{}, err
	}
	switch {
	case r.KeepLegacyRecords:
		if err := r.mirrorLegacy(ctx, sk, d.status, obs.legacy); err != nil {
			return ctrl.Result{}, err
		}
	case d.deleteLegacy:
		if err := r.deleteLegacy(ctx, obs.legacy); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: d.requeueAfter}, nil
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
	sec, _, err := owned.Writer{Client: r.Client, Scheme: r.Scheme}.Secret(ctx, sk, observed, want)
	if err != nil {
		return nil, secretWriteError(err)
	}
	return sec, nil
}

// writeStatus writes the decided status when it differs from the observed
// one, and tells what changed: key phases, and a new problem.
func (r *Reconciler) writeStatus(ctx context.Context, sk *gatehousev1.SigningKey, d decision) error {
	if equality.Semantic.DeepEqual(&sk.Status, &d.status) {
		return nil
	}
	next := sk.DeepCopy()
	next.Status = d.status
	if err := r.Client.Status().Update(ctx, next); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	phases := dedupe(PhaseChanges(sk.Status.Keys, d.status.Keys), d.told)
	if d.warning != nil {
		phases = append(phases, *d.warning)
	}
	r.emit(ctx, sk, phases)
	return nil
}

// deleteLegacy deletes the JWKS ConfigMaps an earlier version wrote for
// this SigningKey: the status publishes the JWKS now.
func (r *Reconciler) deleteLegacy(ctx context.Context, cms []corev1.ConfigMap) error {
	for i := range cms {
		cm := &cms[i]
		if err := owned.Delete(ctx, r.Client, cm); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting legacy jwks configmap: %w", err)
		}
		log.FromContext(ctx).Info("deleted legacy jwks configmap; the jwks is in the signingkey status now", "configMap", cm.Name)
	}
	return nil
}

// writeFailed reports a failed Secret write in status (best effort) and
// returns err for a retry. Conflicts are routine (a stale cache) and not
// reported.
func (r *Reconciler) writeFailed(ctx context.Context, sk *gatehousev1.SigningKey, err error) error {
	if owned.LogConflict(ctx, err) {
		return err
	}
	msg := fmt.Sprintf("Writing the key material failed (%s); the operator retries.", apierrors.ReasonForError(err))
	next := sk.DeepCopy()
	if conditions.Set(&next.Status.Conditions, sk.Generation, metav1.NewTime(r.now()), gatehousev1.ConditionReady, metav1.ConditionFalse, gatehousev1.ReasonWriteFailed, msg) {
		if serr := r.Client.Status().Update(ctx, next); serr != nil {
			log.FromContext(ctx).V(1).Info("could not report the write failure in status", "reason", apierrors.ReasonForError(serr))
		}
	}
	return err
}

// secretWriteError wraps a failed Secret write: it prints only the API
// reason, since the server's message may quote the private keys.
func secretWriteError(err error) error {
	return &owned.RedactedError{Op: "writing signing key secret", Err: err}
}

// dedupe drops phase-change events that a decision change already told.
func dedupe(phase, told []Change) []Change {
	out := phase[:0:0]
	for _, c := range phase {
		dup := false
		for _, t := range told {
			if t.KeyID == c.KeyID && (t.Reason == c.Reason || c.Reason == ReasonKeyRemoved && t.Reason == gatehousev1.ReasonKeyLost) {
				dup = true
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

// mirrorLegacy keeps the JWKS ConfigMap that sidecars of earlier versions
// read (KeepLegacyRecords) equal to what st publishes, so that they keep
// verifying tokens, and see rotations, while workloads are rolled onto new
// sidecars. When st publishes nothing (a refused issuer), it deletes them:
// they must not verify what this version does not serve. Other legacy
// ConfigMaps this SigningKey controls are deleted.
func (r *Reconciler) mirrorLegacy(ctx context.Context, sk *gatehousev1.SigningKey, st gatehousev1.SigningKeyStatus, legacy []corev1.ConfigMap) error {
	if st.JWKS == "" || st.Issuer == "" {
		return r.deleteLegacy(ctx, legacy)
	}
	name := keyring.JWKSConfigMapName(sk)
	var observed *corev1.ConfigMap
	var others []corev1.ConfigMap
	for i := range legacy {
		if legacy[i].Name == name {
			observed = &legacy[i]
		} else {
			others = append(others, legacy[i])
		}
	}
	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: sk.Namespace, Labels: legacyJWKSLabels(sk)},
		Data:       map[string]string{gatehousev1.JWKSDataKey: st.JWKS, gatehousev1.JWKSIssuerKey: st.Issuer},
	}
	_, wrote, err := owned.Writer{Client: r.Client, Scheme: r.Scheme}.ConfigMapConfirmed(ctx, r.APIReader, sk, observed, want)
	switch {
	case owned.IsNotControlled(err):
		log.FromContext(ctx).Info("not mirroring the legacy jwks: a configmap of that name exists that this signingkey does not control", "configMap", name)
	case err != nil:
		return fmt.Errorf("writing legacy jwks configmap: %w", err)
	case wrote:
		log.FromContext(ctx).V(1).Info("mirrored the status jwks into the legacy configmap", "configMap", name)
	}
	return r.deleteLegacy(ctx, others)
}
