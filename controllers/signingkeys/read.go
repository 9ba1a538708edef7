package signingkeys

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/internal/owned"
)

// observation is what a reconcile reads; decide takes nothing else.
type observation struct {
	sk *gatehousev1.SigningKey

	secret        *corev1.Secret
	secretForeign bool
	keySet        *keyring.KeySet
	// docBroken: the Secret exists but its document is unusable.
	docBroken bool

	// claimants are the SigningKeys naming sk's issuer, sk included.
	claimants []gatehousev1.SigningKey
	// legacy are the JWKS ConfigMaps sk controls, written by versions
	// that published the JWKS there; they are deleted once the status
	// publishes it.
	legacy []corev1.ConfigMap
}

// read observes sk's world through the cache, and once more straight from
// the API server when the cached view looks like lost or foreign keys: the
// cache may lag behind our own last writes, and keys are never declared
// lost or tampered with on the strength of a stale view.
func (r *Reconciler) read(ctx context.Context, sk *gatehousev1.SigningKey) (observation, error) {
	obs, err := r.observe(ctx, r.Client, sk)
	if err != nil || r.APIReader == nil || !suspicious(obs) {
		return obs, err
	}
	fresh := &gatehousev1.SigningKey{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: sk.Namespace, Name: sk.Name}, fresh); err != nil {
		return obs, client.IgnoreNotFound(err)
	}
	return r.observe(ctx, r.APIReader, fresh)
}

// suspicious reports whether the view looks like lost or untrusted keys: a
// missing or unreadable Secret, keys the status reports that the Secret
// lacks, or keys in the Secret the status never published.
func suspicious(obs observation) bool {
	sk := obs.sk
	if obs.docBroken || (obs.keySet != nil && len(obs.keySet.Invalid) > 0) {
		return true
	}
	if obs.secret == nil {
		// The cache holds only objects with the operator's label: a
		// user's Secret of that name in the way is seen only by an
		// uncached read.
		return true
	}
	trusted := trustedKeyIDs(sk)
	inSecret := map[string]bool{}
	for _, k := range obs.keySet.Keys {
		inSecret[k.ID] = true
		if !trusted[k.ID] {
			return true
		}
	}
	for _, k := range sk.Status.Keys {
		if !inSecret[k.KeyID] && k.Phase != gatehousev1.KeyPhaseRevoked {
			return true
		}
	}
	return false
}

// observe reads the Secret, the issuer's claimants and the legacy JWKS
// ConfigMaps through reader.
func (r *Reconciler) observe(ctx context.Context, reader client.Reader, sk *gatehousev1.SigningKey) (observation, error) {
	obs := observation{sk: sk}
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
	// Claimants come from the cache's issuer index, whichever reader
	// confirmed the rest.
	claimants, err := keyring.Claimants(ctx, r.Client, sk.Spec.Issuer)
	if err != nil {
		return obs, err
	}
	obs.claimants = claimants
	list := &corev1.ConfigMapList{}
	if err := reader.List(ctx, list, client.InNamespace(sk.Namespace), client.MatchingLabels(legacyJWKSLabels(sk))); err != nil {
		return obs, fmt.Errorf("listing legacy jwks configmaps: %w", err)
	}
	for _, cm := range list.Items {
		if metav1.IsControlledBy(&cm, sk) {
			obs.legacy = append(obs.legacy, cm)
		}
	}
	return obs, nil
}

// legacyJWKSLabels are the labels of the JWKS ConfigMaps earlier versions
// wrote.
func legacyJWKSLabels(sk *gatehousev1.SigningKey) map[string]string {
	return owned.Labels(sk, map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordJWKS})
}

// trustedKeyIDs are the kids the operator itself published: listed in the
// status (written by the operator alone) or in its JWKS.
func trustedKeyIDs(sk *gatehousev1.SigningKey) map[string]bool {
	out := map[string]bool{}
	for _, k := range sk.Status.Keys {
		out[k.KeyID] = true
	}
	for kid := range keyring.PublishedKeys([]byte(sk.Status.JWKS)) {
		out[kid] = true
	}
	return out
}
