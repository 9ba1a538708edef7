package keyring

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// ActiveFor reads the SigningKey namespace/name and its private Secret
// through r (the operator's cache) and returns the key that signs at now,
// with the SigningKey (for its issuer). It is what the token endpoint signs
// with. A Secret that the SigningKey does not control, or of another type,
// is refused, so a look-alike Secret can never supply a signing key.
func ActiveFor(ctx context.Context, r client.Reader, namespace, name string, now time.Time) (Active, *gatehousev1.SigningKey, error) {
	sk := &gatehousev1.SigningKey{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, sk); err != nil {
		return Active{}, nil, fmt.Errorf("reading signingkey: %w", err)
	}
	if sk.DeletionTimestamp != nil {
		return Active{}, nil, errors.New("signingkey is being deleted")
	}
	sec := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: SecretName(name)}, sec); err != nil {
		return Active{}, nil, fmt.Errorf("reading signing key secret: %w", err)
	}
	if !metav1.IsControlledBy(sec, sk) {
		return Active{}, nil, errors.New("signing key secret is not controlled by the signingkey")
	}
	ks, err := LoadKeySet(sec)
	if err != nil {
		return Active{}, nil, err
	}
	a, err := ks.ActiveKey(now)
	if err != nil {
		return Active{}, nil, err
	}
	return a, sk, nil
}
