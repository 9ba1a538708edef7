package tokenendpoint

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"gatehouse.dev/gatehouse/internal/keyring"
)

// SigningKeySigner is the SignerFunc of an operator without an issuer
// prefix; see SigningKeySignerFor.
func SigningKeySigner(ctx context.Context, r client.Reader, namespace, name string, now time.Time) (*Signer, error) {
	return SigningKeySignerFor("")(ctx, r, namespace, name, now)
}

// SigningKeySignerFor is the SignerFunc of the operator: the Active key of
// the SigningKey's private Secret (keyring.ActiveFor), never a Next,
// Retired or revoked one, and only when the SigningKey owns its issuer
// within prefix and its status (written by the operator alone) publishes
// that key. The issuer is the one the status publishes. MaxLifetime is the
// longest lifetime a token signed by it may have and still verify until it
// expires.
func SigningKeySignerFor(prefix keyring.IssuerPrefix) SignerFunc {
	return func(ctx context.Context, r client.Reader, namespace, name string, now time.Time) (*Signer, error) {
		active, sk, err := keyring.ActiveFor(ctx, r, prefix, namespace, name, now)
		if err != nil {
			return nil, err
		}
		if active.MaxTokenLifetime <= 0 {
			return nil, fmt.Errorf("the active key of signingkey %s/%s leaves no time for a token to verify", namespace, name)
		}
		return &Signer{Key: active.Key, Issuer: sk.Status.Issuer, MaxLifetime: active.MaxTokenLifetime}, nil
	}
}
