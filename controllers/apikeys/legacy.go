package apikeys

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/owned"
)

// mirrorLegacy writes ak's status, as the record that sidecars of earlier
// versions read, into its record ConfigMap (KeepLegacyRecords): they keep
// accepting its keys, and a rotation or a revocation reaches them, while
// workloads are rolled onto new sidecars. observed is the ConfigMap that
// status named and this APIKey controls, read live; nil creates it. Nothing
// of this version reads the ConfigMap back, except a migration of an
// APIKey whose status lost its keys, which takes only the key IDs status
// names.
func (r *Reconciler) mirrorLegacy(ctx context.Context, ak *gatehousev1.APIKey, observed *corev1.ConfigMap) error {
	if len(ak.Status.Keys) == 0 {
		return nil // nothing recorded yet: earlier versions wrote no record either
	}
	data, err := apikeyformat.RecordOf(ak).Marshal()
	if err != nil {
		return fmt.Errorf("encoding the legacy record: %w", err)
	}
	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: LegacyRecordName(ak.Name), Namespace: ak.Namespace,
			Labels: owned.Labels(ak, map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey})},
		Data: map[string]string{gatehousev1.RecordDataKey: string(data)},
	}
	if observed != nil && observed.Name != want.Name {
		observed = nil
	}
	_, wrote, err := r.writer().ConfigMapConfirmed(ctx, r.liveReader(), ak, observed, want)
	if owned.IsNotControlled(err) {
		// Not ours: leave it, and say so rather than retry for ever.
		log.FromContext(ctx).Info("not mirroring the legacy record: a configmap of that name exists that this apikey does not control", "configMap", want.Name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing the legacy record: %w", err)
	}
	if wrote {
		log.FromContext(ctx).V(1).Info("mirrored status into the legacy record configmap", "configMap", want.Name)
	}
	return nil
}
