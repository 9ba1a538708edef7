package tokenendpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// IndexKeyID is the cache field index from a key ID to the record
// ConfigMaps listing it, so that a token request finds its record in O(1)
// among every record of the cluster.
const IndexKeyID = "gatehouse.apikey.keyID"

// SignerFunc finds the active signing key of a SigningKey; see
// Store.ActiveSigner.
type SignerFunc func(ctx context.Context, r client.Reader, namespace, name string, now time.Time) (*Signer, error)

// KubeStore reads records and signing keys from the operator's cache.
type KubeStore struct {
	Reader client.Reader
	Signer SignerFunc
}

// RegisterIndex adds IndexKeyID to the manager's cache.
func RegisterIndex(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &corev1.ConfigMap{}, IndexKeyID, keyIDsOf)
}

func keyIDsOf(obj client.Object) []string {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || cm.Labels[gatehousev1.LabelRecord] != gatehousev1.RecordAPIKey {
		return nil
	}
	rec, err := apikeyformat.UnmarshalRecord([]byte(cm.Data[gatehousev1.RecordDataKey]))
	if err != nil {
		return nil
	}
	ids := make([]string, 0, len(rec.Keys))
	for _, k := range rec.Keys {
		ids = append(ids, k.KeyID)
	}
	return ids
}

// RecordByKeyID implements Store. The record's namespace is where its
// ConfigMap lives, whatever the JSON claims, so that a record can only
// name SigningKeys of its own namespace.
func (s *KubeStore) RecordByKeyID(ctx context.Context, keyID string) (*apikeyformat.Record, error) {
	list := &corev1.ConfigMapList{}
	if err := s.Reader.List(ctx, list,
		client.MatchingFields{IndexKeyID: keyID},
		client.MatchingLabels{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey},
	); err != nil {
		return nil, fmt.Errorf("listing api key records: %w", err)
	}
	switch len(list.Items) {
	case 0:
		return nil, ErrNotFound
	case 1:
	default:
		// Two records claiming one key ID: refuse rather than guess.
		return nil, fmt.Errorf("%d api key records list key ID %s", len(list.Items), keyID)
	}
	cm := &list.Items[0]
	rec, err := apikeyformat.UnmarshalRecord([]byte(cm.Data[gatehousev1.RecordDataKey]))
	if err != nil {
		return nil, fmt.Errorf("record %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	rec.Namespace = cm.Namespace
	return rec, nil
}

// ActiveSigner implements Store.
func (s *KubeStore) ActiveSigner(ctx context.Context, namespace, name string, now time.Time) (*Signer, error) {
	if s.Signer == nil {
		return nil, errors.New("no signing key source configured")
	}
	return s.Signer(ctx, s.Reader, namespace, name, now)
}
