package apikeyformat

import (
	"slices"
	"time"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// DefaultTokenLifetime is the lifetime cap of exchanged tokens when
// spec.tokenExchange.maxLifetime is unset.
const DefaultTokenLifetime = 15 * time.Minute

// RecordOf compiles what a validator may trust of an APIKey into a Record:
// the one rule the sidecar and the token endpoint share.
//
//   - Hashes, their validity windows and the state come from status, which
//     only the operator may write (status subresource).
//   - Subject, scopes, expiry, disabled, rate limit and token exchange come
//     from spec, which the APIKey's author wrote.
//   - spec.disabled and an APIKey being deleted revoke the key here, without
//     waiting for the operator to update status; spec.expiresAt is enforced
//     by Record.Check.
//   - For a key given by spec.hash, only the key status lists with exactly
//     that ID and hash counts: a status that lags a changed spec.hash does
//     not keep the old key alive.
//
// It never reads a ConfigMap or a Secret. The result shares no memory with
// ak that a caller could modify through it, except the scopes slice.
func RecordOf(ak *gatehousev1.APIKey) *Record {
	spec, st := &ak.Spec, &ak.Status
	rec := &Record{
		Version:   RecordVersion,
		Name:      ak.Name,
		Namespace: ak.Namespace,
		Subject:   spec.Subject,
		Scopes:    spec.Scopes,
		State:     State(st.State),
		Keys:      make([]RecordKey, 0, len(st.Keys)),
	}
	if spec.Disabled || ak.DeletionTimestamp != nil {
		rec.State = StateRevoked
	}
	if spec.ExpiresAt != nil {
		t := spec.ExpiresAt.UTC()
		rec.ExpiresAt = &t
	}
	for _, k := range st.Keys {
		if spec.Hash != nil && (k.KeyID != spec.Hash.KeyID || k.SHA256 != spec.Hash.SHA256) {
			continue
		}
		rk := RecordKey{KeyID: k.KeyID, SHA256: k.SHA256}
		if k.NotAfter != nil {
			t := k.NotAfter.UTC()
			rk.NotAfter = &t
		}
		if k.IssuedAt != nil {
			t := k.IssuedAt.UTC()
			rk.IssuedAt = &t
		}
		rec.Keys = append(rec.Keys, rk)
	}
	if rl := spec.RateLimit; rl != nil {
		burst := rl.RequestsPerSecond
		if rl.Burst != nil {
			burst = *rl.Burst
		}
		rec.RateLimit = &RecordRateLimit{RequestsPerSecond: rl.RequestsPerSecond, Burst: burst}
	}
	if te := spec.TokenExchange; te != nil {
		lifetime := DefaultTokenLifetime
		if te.MaxLifetime != nil {
			lifetime = te.MaxLifetime.Duration
		}
		rec.TokenExchange = &RecordTokenExchange{
			SigningKeyName:     te.SigningKeyName,
			Audiences:          slices.Clone(te.Audiences),
			MaxLifetimeSeconds: int64(lifetime / time.Second),
		}
	}
	return rec
}
