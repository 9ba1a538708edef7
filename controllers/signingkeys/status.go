package signingkeys

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
)

// Status is the part of SigningKeyStatus derived from the key set.
type Status struct {
	ActiveKeyID      string
	NextRotationTime *metav1.Time
	LastRotationTime *metav1.Time
	// Keys, newest first.
	Keys []gatehousev1.SigningKeyStatusKey
}

// StatusAt describes ks at now. Times have whole seconds, as the API
// stores them, so that an unchanged key set gives an equal status.
func StatusAt(ks *keyring.KeySet, now time.Time) Status {
	var st Status
	for i := len(ks.Keys) - 1; i >= 0; i-- {
		k := &ks.Keys[i]
		phase := k.Phase(now)
		if phase == keyring.PhaseRemoved {
			continue
		}
		st.Keys = append(st.Keys, gatehousev1.SigningKeyStatusKey{
			KeyID: k.ID, Phase: phase,
			CreatedAt: mt(k.CreatedAt), ActivatesAt: mt(k.ActivatesAt), RetiresAt: mt(k.RetiresAt), RemoveAt: mt(k.RemoveAt),
		})
	}
	// Newest first by creation; kid breaks ties so the order is stable.
	slices.SortStableFunc(st.Keys, func(a, b gatehousev1.SigningKeyStatusKey) int {
		if c := timeOf(b.CreatedAt).Compare(timeOf(a.CreatedAt)); c != 0 {
			return c
		}
		if a.KeyID < b.KeyID {
			return -1
		}
		return 1
	})
	if ai := ks.ActiveIndex(now); ai >= 0 {
		a := &ks.Keys[ai]
		st.ActiveKeyID = a.ID
		st.LastRotationTime = mt(a.ActivatesAt)
		st.NextRotationTime = mt(a.RetiresAt)
	}
	return st
}

// StatusWithNextRotation is StatusAt with NextRotationTime filled in from
// the policy when the successor is not yet scheduled: the time the next
// key is planned to sign.
func StatusWithNextRotation(ks *keyring.KeySet, p Policy, now time.Time) Status {
	st := StatusAt(ks, now)
	if ai := ks.ActiveIndex(now); ai >= 0 && st.NextRotationTime == nil {
		a := &ks.Keys[ai]
		target := a.ActivatesAt.Add(p.Every)
		if !ks.RotationRequestedAt.IsZero() {
			target = minTime(target, ks.RotationRequestedAt.Add(p.Propagation))
		}
		st.NextRotationTime = mt(maxTime(target, now.Add(p.Propagation)))
	}
	return st
}

func mt(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	m := metav1.NewTime(t.UTC()).Rfc3339Copy()
	return &m
}

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

// PhaseChanges lists the phase changes between two status key lists, for
// Events: a key that appeared, changed phase or disappeared.
func PhaseChanges(before, after []gatehousev1.SigningKeyStatusKey) []Change {
	old := map[string]gatehousev1.KeyPhase{}
	for _, k := range before {
		old[k.KeyID] = k.Phase
	}
	var out []Change
	seen := map[string]bool{}
	// Oldest first reads best in `kubectl describe`.
	for i := len(after) - 1; i >= 0; i-- {
		k := after[i]
		seen[k.KeyID] = true
		was, existed := old[k.KeyID]
		if existed && was == k.Phase {
			continue
		}
		c := Change{Type: corev1.EventTypeNormal, KeyID: k.KeyID}
		switch k.Phase {
		case gatehousev1.KeyPhaseNext:
			c.Reason, c.Message = ReasonKeyCreated, "keyring.Key "+k.KeyID+" is published as the next key."
		case gatehousev1.KeyPhaseActive:
			c.Reason, c.Message = ReasonKeyActivated, "keyring.Key "+k.KeyID+" is now the active signing key."
		case gatehousev1.KeyPhaseRetired:
			c.Reason, c.Message = ReasonKeyRetired, "keyring.Key "+k.KeyID+" no longer signs; it stays published until "+timeOf(k.RemoveAt).UTC().Format(time.RFC3339)+" so its tokens still verify."
		case gatehousev1.KeyPhaseRevoked:
			c.Type, c.Reason, c.Message = corev1.EventTypeWarning, gatehousev1.ReasonKeyRevoked, "keyring.Key "+k.KeyID+" is revoked: tokens signed by it now fail verification."
		default:
			continue
		}
		out = append(out, c)
	}
	for _, k := range before {
		if !seen[k.KeyID] && k.Phase != gatehousev1.KeyPhaseRevoked {
			out = append(out, Change{Type: corev1.EventTypeNormal, Reason: ReasonKeyRemoved, KeyID: k.KeyID, Message: "keyring.Key " + k.KeyID + " left the JWKS."})
		}
	}
	return out
}
