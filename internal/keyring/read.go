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
// through r (the operator's cache, with IssuerIndex) and returns the key
// that signs at now, with the SigningKey (for its issuer). It is what the
// token endpoint signs with. It refuses, failing closed:
//   - a SigningKey that does not own its issuer (an older SigningKey claims
//     it, or it is outside the namespace's issuer prefix);
//   - a SigningKey whose status publishes nothing for its spec.issuer;
//   - a Secret that the SigningKey does not control, or of another type;
//   - an active key whose public key the status does not publish: only the
//     operator writes the status, so a key someone wrote into the Secret
//     is never signed with.
func ActiveFor(ctx context.Context, r client.Reader, prefix IssuerPrefix, namespace, name string, now time.Time) (Active, *gatehousev1.SigningKey, error) {
	sk := &gatehousev1.SigningKey{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, sk); err != nil {
		return Active{}, nil, fmt.Errorf("reading signingkey: %w", err)
	}
	if sk.DeletionTimestamp != nil {
		return Active{}, nil, errors.New("signingkey is being deleted")
	}
	if err := prefix.Allows(namespace, sk.Spec.Issuer); err != nil {
		return Active{}, nil, fmt.Errorf("signingkey issuer is outside the namespace's prefix: %w", err)
	}
	claimants, err := Claimants(ctx, r, sk.Spec.Issuer)
	if err != nil {
		return Active{}, nil, err
	}
	if !Owns(sk, claimants, prefix) {
		return Active{}, nil, errors.New("another signingkey owns the issuer")
	}
	jwks, _, ok := Served(sk)
	if !ok {
		return Active{}, nil, errors.New("signingkey status publishes no jwks for its issuer")
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
	if !publishes(jwks, a.Key) {
		return Active{}, nil, errors.New("the active key in the secret is not published in the signingkey status")
	}
	return a, sk, nil
}

// publishes reports whether the JWKS document holds priv's public key
// under its thumbprint.
func publishes(jwks []byte, priv interface{ KeyID() string }) bool {
	_, ok := PublishedKeys(jwks)[priv.KeyID()]
	return ok
}
