package signingkeys

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
)

// TestIntegrationAFailedStatusWriteNeverActivatesAnUnpublishedKey
// simulates a crash (or a failing API call) between the Secret write and the
// status write when the next key is generated: the Secret holds the new
// key, but it must never sign or be published, however long the outage:
// the next reconcile discards it (the status never published it) and
// publishes a fresh next key, which signs one propagation later.
func TestIntegrationAFailedStatusWriteNeverActivatesAnUnpublishedKey(t *testing.T) {
	h := newHarness(t)
	wc, err := client.NewWithWatch(h.env.Config, client.Options{Scheme: h.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var failStatus atomic.Bool
	h.rec.Client = interceptor.NewClient(wc, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if sub == "status" && failStatus.Load() {
				return errors.New("injected status write failure")
			}
			return c.Status().Update(ctx, obj, opts...)
		},
	})
	const propagation = 5 * time.Minute
	h.create("crash", gatehousev1.SigningKeySpec{Issuer: sharedIssuer, Rotation: rotation(time.Hour, 10*time.Minute, propagation)})
	genAt := t0.Add(h.reconcile("crash"))
	first, _ := h.keySet("crash").ActiveSigningKey(t0)

	failStatus.Store(true)
	h.clock.SetTime(genAt)
	if _, err := h.reconcileOnce("crash"); err == nil {
		t.Fatal("the reconcile hid the failed status write")
	}
	ks := h.keySet("crash")
	if len(ks.Keys) != 2 || !ks.Keys[1].ActivatesAt.IsZero() || !ks.Keys[0].RetiresAt.IsZero() {
		t.Fatalf("after the failed publication the Secret schedules the unpublished key: %+v", ks.Keys)
	}
	unpublished := ks.Keys[1].ID
	if hasKid(h.jwks("crash"), unpublished) {
		t.Fatal("the injected failure did not stop the publication")
	}
	// Long after the planned rotation the old key still signs, so no token
	// carries a kid verifiers do not know.
	late := genAt.Add(time.Hour)
	if k, err := ks.ActiveSigningKey(late); err != nil || k.KeyID() != first.KeyID() {
		t.Fatalf("an hour into the outage the signer is %v (%v), want the published %s", k, err, first.KeyID())
	}

	failStatus.Store(false)
	h.clock.SetTime(late)
	requeue := h.reconcile("crash")
	ks = h.keySet("crash")
	if ks.Key(unpublished) != nil || hasKid(h.jwks("crash"), unpublished) {
		t.Fatal("the key the status never published was kept")
	}
	var next *keyring.Key
	for i := range ks.Keys {
		if ks.Keys[i].ID != first.KeyID() {
			next = &ks.Keys[i]
		}
	}
	if next == nil || !hasKid(h.jwks("crash"), next.ID) || !next.PublishedAt.Equal(late) || !next.ActivatesAt.Equal(late.Add(propagation)) || requeue != propagation {
		t.Fatalf("after recovery: next %+v, requeue %s; want a published next key activating one propagation after publication", next, requeue)
	}
}

// TestIntegrationAHandEditedSecretIsReportedAndRepaired breaks the private
// Secret in several ways. Each time the keys that no longer load are lost:
// a new key signs at once, the lost active key stays published (retired)
// from the ConfigMap so its tokens still verify, and a KeyLost Warning says
// so.
func TestIntegrationAHandEditedSecretIsReportedAndRepaired(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name string
		edit func(sec *corev1.Secret)
	}{
		{"A key-set document that is not JSON loses every key.", func(sec *corev1.Secret) {
			sec.Data[keyring.SecretDataKey] = []byte("{garbage")
		}},
		{"An active key entry whose JWK was swapped for another key is refused.", func(sec *corev1.Secret) {
			other, err := keyring.Generate("ES256", 0, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			doc := string(sec.Data[keyring.SecretDataKey])
			i := strings.Index(doc, `"jwk":`)
			b, _ := other.(interface{ MarshalJSON() ([]byte, error) }).MarshalJSON()
			end := i + len(`"jwk":`) + matchingBrace(doc[i+len(`"jwk":`):])
			sec.Data[keyring.SecretDataKey] = []byte(doc[:i] + `"jwk":` + string(b) + doc[end:])
		}},
		{"A Secret whose key-set document was removed loses every key.", func(sec *corev1.Secret) {
			delete(sec.Data, keyring.SecretDataKey)
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := "edited-" + string(rune('a'+i))
			h.clock.SetTime(t0)
			h.create(name, gatehousev1.SigningKeySpec{Issuer: "https://issuer.example.com", Rotation: rotation(time.Hour, 10*time.Minute, 5*time.Minute)})
			h.reconcile(name)
			old, err := h.keySet(name).ActiveSigningKey(t0)
			if err != nil {
				t.Fatal(err)
			}
			now := t0.Add(7 * time.Minute)
			h.clock.SetTime(now)
			tok := sign(t, old, now, 10*time.Minute)
			sec := h.secret(name)
			tc.edit(sec)
			if err := h.env.Client.Update(h.ctx(), sec); err != nil {
				t.Fatal(err)
			}
			h.drainEvents()
			h.reconcile(name)

			ks := h.keySet(name)
			if len(ks.Invalid) != 0 {
				t.Fatalf("the repaired Secret still has unusable entries %v", ks.Invalid)
			}
			signer, err := ks.ActiveSigningKey(now)
			if err != nil || signer.KeyID() == old.KeyID() {
				t.Fatalf("no new signer: %v %v", signer, err)
			}
			if k := ks.Key(old.KeyID()); k == nil || !k.Lost || k.Phase(now) != gatehousev1.KeyPhaseRetired {
				t.Fatalf("the lost key is not kept published as retired: %+v", k)
			}
			if err := verify(h.jwks(name), tok, now.Add(9*time.Minute)); err != nil {
				t.Fatalf("a token signed before the edit fails: %v", err)
			}
			if evs := h.drainEvents(); !hasEvent(evs, "Warning KeyLost", old.KeyID()) {
				t.Fatalf("no KeyLost Warning naming %s: %v", old.KeyID(), evs)
			}
		})
	}
}

// matchingBrace returns the length of the JSON object at the start of s.
func matchingBrace(s string) int {
	depth := 0
	for i, c := range s {
		switch c {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(s)
}
