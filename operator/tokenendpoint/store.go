package tokenendpoint

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// IndexKeyID is the cache field index from a key ID to the APIKeys whose
// status lists it, so that a token request finds its APIKey in O(1) among
// every APIKey of the cluster.
const IndexKeyID = "gatehouse.apikey.keyID"

// SignerFunc finds the active signing key of a SigningKey; see
// Store.ActiveSigner.
type SignerFunc func(ctx context.Context, r client.Reader, namespace, name string, now time.Time) (*Signer, error)

// KubeStore reads APIKeys and signing keys from the operator's cache. It
// never reads a ConfigMap for an API key: only APIKeys (spec by their
// author, status by the operator) are trusted.
type KubeStore struct {
	Reader client.Reader
	Signer SignerFunc
}

// RegisterIndex adds IndexKeyID to the manager's cache.
func RegisterIndex(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &gatehousev1.APIKey{}, IndexKeyID, keyIDsOf)
}

func keyIDsOf(obj client.Object) []string {
	ak, ok := obj.(*gatehousev1.APIKey)
	if !ok {
		return nil
	}
	rec := apikeyformat.RecordOf(ak)
	ids := make([]string, 0, len(rec.Keys))
	for _, k := range rec.Keys {
		ids = append(ids, k.KeyID)
	}
	return ids
}

// RecordForKey implements Store. Among the APIKeys listing the key's ID, in
// any namespace, only those whose status holds the key's hash count, so an
// APIKey elsewhere that merely lists the same (public) key ID changes
// nothing. Should two namespaces both hold the hash (someone copied it into
// a spec.hash of their own), the key belongs to the APIKey that recorded it
// first: a copy is always recorded after its original. Within one
// namespace, two APIKeys holding the key refuse it, as the sidecar does.
func (s *KubeStore) RecordForKey(ctx context.Context, key apikeyformat.Key) (*apikeyformat.Record, error) {
	list := &gatehousev1.APIKeyList{}
	if err := s.Reader.List(ctx, list, client.MatchingFields{IndexKeyID: key.ID()}); err != nil {
		return nil, fmt.Errorf("listing api keys: %w", err)
	}
	type candidate struct {
		rec      *apikeyformat.Record
		recorded time.Time
	}
	var found []candidate
	for i := range list.Items {
		ak := &list.Items[i]
		rec := apikeyformat.RecordOf(ak)
		for _, k := range rec.Keys {
			if k.KeyID == key.ID() && apikeyformat.HashMatches(key, k.SHA256) {
				c := candidate{rec: rec}
				if k.IssuedAt != nil {
					c.recorded = *k.IssuedAt
				}
				found = append(found, c)
				break
			}
		}
	}
	if len(found) == 0 {
		return nil, ErrNotFound
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].recorded.Before(found[j].recorded) })
	first := found[0]
	for _, c := range found[1:] {
		if c.rec.Namespace == first.rec.Namespace {
			return nil, fmt.Errorf("%d api keys of namespace %s hold key ID %s", len(found), first.rec.Namespace, key.ID())
		}
	}
	return first.rec, nil
}

// ActiveSigner implements Store.
func (s *KubeStore) ActiveSigner(ctx context.Context, namespace, name string, now time.Time) (*Signer, error) {
	if s.Signer == nil {
		return nil, errors.New("no signing key source configured")
	}
	return s.Signer(ctx, s.Reader, namespace, name, now)
}
