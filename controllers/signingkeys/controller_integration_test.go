package signingkeys

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/keyring"
)

// TestIntegrationRotationsNeverFailAToken walks a SigningKey through four
// scheduled rotations and one requested rotation on the real API server,
// reconciling exactly when the controller asks to be requeued. At every step
// it checks that exactly one key is active and in the JWKS ConfigMap, and
// it signs tokens with the active key from the Secret (with the lifetime
// the token endpoint would allow) that must verify, until they expire,
// against the ConfigMap content a verifier re-reading it only once per
// propagation interval would hold.
func TestIntegrationRotationsNeverFailAToken(t *testing.T) {
	h := newHarness(t)
	const (
		every       = time.Hour
		overlap     = 10 * time.Minute
		propagation = 5 * time.Minute
	)
	h.create("walk", gatehousev1.SigningKeySpec{Issuer: "https://issuer.example.com", Rotation: rotation(every, overlap, propagation)})

	type snapshot struct {
		at   time.Time
		jwks []byte
	}
	type token struct {
		at  time.Time
		raw []byte
		exp time.Time
	}
	var history []snapshot
	var tokens []token
	jwksAt := func(at time.Time) []byte {
		var doc []byte
		for _, s := range history {
			if !s.at.After(at) {
				doc = s.jwks
			}
		}
		return doc
	}
	mint := func(at time.Time) {
		a, err := h.keySet("walk").ActiveKey(at)
		if err != nil {
			t.Fatalf("%s: %v", at, err)
		}
		if a.MaxTokenLifetime != overlap {
			t.Fatalf("%s: token endpoint would allow %s, want the overlap %s", at, a.MaxTokenLifetime, overlap)
		}
		tokens = append(tokens, token{at: at, raw: sign(t, a.Key, at, a.MaxTokenLifetime), exp: at.Add(a.MaxTokenLifetime)})
	}

	requestAt := t0.Add(2*time.Hour + 17*time.Minute)
	requested := false
	activeKeys := map[string]bool{}
	end := t0.Add(5 * time.Hour)
	for step := 0; h.clock.Now().Before(end); step++ {
		if step > 60 {
			t.Fatal("too many reconciles for five hours of rotation")
		}
		now := h.clock.Now()
		requeue := h.reconcile("walk")
		sk := h.get("walk")
		doc := h.jwks("walk")
		history = append(history, snapshot{at: now, jwks: doc})

		// Exactly one active key, the same in status and Secret, published.
		active := 0
		for _, k := range sk.Status.Keys {
			if k.Phase == gatehousev1.KeyPhaseActive {
				active++
			}
		}
		signer, err := h.keySet("walk").ActiveSigningKey(now)
		if err != nil || active != 1 || sk.Status.ActiveKeyID != signer.KeyID() || !hasKid(doc, signer.KeyID()) {
			t.Fatalf("%s: %d active keys in status, status active %q, secret active %v (%v), published %v", now, active, sk.Status.ActiveKeyID, signer, err, err == nil && hasKid(doc, signer.KeyID()))
		}
		if !conditions.IsTrue(sk.Status.Conditions, gatehousev1.ConditionReady) {
			t.Fatalf("%s: not Ready: %+v", now, sk.Status.Conditions)
		}
		assertPublicOnly(t, doc)
		activeKeys[signer.KeyID()] = true

		// Idempotent: a second reconcile at the same instant writes nothing.
		rvs := []string{sk.ResourceVersion, h.secret("walk").ResourceVersion}
		if again := h.reconcile("walk"); again != requeue {
			t.Fatalf("%s: requeue %s then %s", now, requeue, again)
		}
		if after := []string{h.get("walk").ResourceVersion, h.secret("walk").ResourceVersion}; strings.Join(after, ",") != strings.Join(rvs, ",") {
			t.Fatalf("%s: an idle reconcile wrote: %v -> %v", now, rvs, after)
		}

		// Tokens at this instant and just before the next transition.
		mint(now)
		if requeue <= 0 {
			t.Fatalf("%s: no requeue: the controller would never act again", now)
		}
		nextAt := now.Add(requeue)
		if !requested && nextAt.After(requestAt) {
			// A user asks for a rotation between two transitions.
			h.clock.SetTime(requestAt)
			sk := h.get("walk")
			sk.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: requestAt.Format(time.RFC3339)}
			if err := h.env.Client.Update(h.ctx(), sk); err != nil {
				t.Fatal(err)
			}
			requested = true
			continue
		}
		if requeue > time.Second {
			// Nothing changes until the transition, so the key that signs
			// one second before it is known now.
			mint(nextAt.Add(-time.Second))
		}
		h.clock.SetTime(nextAt)
	}
	if len(activeKeys) < 6 {
		t.Fatalf("%d keys signed in five hours with hourly rotation plus one requested: %v", len(activeKeys), activeKeys)
	}
	evs := h.drainEvents()
	for _, want := range []string{"Normal KeyActivated", "Normal KeyRetired", "Normal KeyRemoved", "Normal KeyCreated", "Normal RotationRequested"} {
		if !hasEvent(evs, want, "") {
			t.Errorf("no %q Event among %d", want, len(evs))
		}
	}

	checked := 0
	for _, tok := range tokens {
		docs := map[string]time.Time{}
		for phase := time.Duration(0); phase < propagation; phase += time.Minute {
			for v := tok.at; v.Before(tok.exp) && !v.After(h.clock.Now()); v = v.Add(30 * time.Second) {
				// The verifier re-reads at t0+phase+k*propagation.
				read := v.Add(-((v.Sub(t0.Add(phase))%propagation + propagation) % propagation))
				if read.Before(t0) {
					continue
				}
				docs[string(jwksAt(read))] = read
			}
		}
		for doc, read := range docs {
			checked++
			if err := verify([]byte(doc), tok.raw, tok.at); err != nil {
				t.Fatalf("token signed at %s fails with the JWKS read at %s: %v", tok.at, read, err)
			}
		}
	}
	t.Logf("%d reconciles, %d keys, %d tokens, %d (token, JWKS) checks", len(history), len(activeKeys), len(tokens), checked)
}

// TestIntegrationEachAlgorithmSignsAndVerifies checks, per algorithm, that a
// token signed with the private key from the Secret verifies with the JWKS
// from the ConfigMap, and that the ConfigMap holds no private member.
func TestIntegrationEachAlgorithmSignsAndVerifies(t *testing.T) {
	h := newHarness(t)
	bits2048 := int32(2048)
	cases := []struct {
		name string
		alg  gatehousev1.SigningAlgorithm
		bits *int32
		kty  string
	}{
		{"ES256 keys sign tokens that verify with the published JWKS.", gatehousev1.ES256, nil, "EC"},
		{"ES384 keys sign tokens that verify with the published JWKS.", gatehousev1.ES384, nil, "EC"},
		{"RS256 keys of 2048 bits sign tokens that verify with the published JWKS.", gatehousev1.RS256, &bits2048, "RSA"},
		{"PS256 keys sign tokens that verify with the published JWKS.", gatehousev1.PS256, nil, "RSA"},
		{"EdDSA keys sign tokens that verify with the published JWKS.", gatehousev1.EdDSA, nil, "OKP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ToLower(string(tc.alg))
			// Issuers are unique per namespace: with -count > 1 an earlier run's
			// SigningKeys still claim theirs.
			h.create(name, gatehousev1.SigningKeySpec{Issuer: "https://" + name + "." + h.ns + ".example.com", Algorithm: tc.alg, RSAKeySize: tc.bits})
			h.reconcile(name)
			sk := h.get(name)
			sec := h.secret(name)

			if sec.Type != keyring.SecretType || !metav1.IsControlledBy(sec, sk) {
				t.Fatalf("secret type %q, secret controlled %v", sec.Type, metav1.IsControlledBy(sec, sk))
			}
			if _, ok := sec.Labels[gatehousev1.LabelRecord]; ok {
				t.Fatal("the private Secret carries the record label verifiers select on")
			}
			if sk.Status.Issuer != sk.Spec.Issuer || sk.Status.SecretName != sec.Name {
				t.Fatalf("status issuer %q, secret %q", sk.Status.Issuer, sk.Status.SecretName)
			}
			doc := []byte(sk.Status.JWKS)
			assertPublicOnly(t, doc)
			if strings.Contains(sk.Status.JWKS, `"d":`) || !strings.Contains(string(sec.Data[keyring.SecretDataKey]), `"d":`) {
				t.Fatal("private member in the status, or none in the Secret")
			}
			priv, err := h.keySet(name).ActiveSigningKey(t0)
			if err != nil {
				t.Fatal(err)
			}
			if string(priv.KeyType()) != tc.kty || priv.Algorithm().String() != string(tc.alg) {
				t.Fatalf("key type %s alg %s", priv.KeyType(), priv.Algorithm())
			}
			if err := verify(doc, sign(t, priv, t0, time.Minute), t0); err != nil {
				t.Fatalf("token signed with the Secret's key does not verify with the ConfigMap JWKS: %v", err)
			}
		})
	}
}

// TestIntegrationEmergencyRevokeTakesOneReconcile revokes the active key
// while a next key is published and, separately, with none: one reconcile
// later the kid is gone from the JWKS, its tokens fail, another key signs,
// and status and an Event say that tokens of the revoked key now fail.
func TestIntegrationEmergencyRevokeTakesOneReconcile(t *testing.T) {
	h := newHarness(t)
	spec := gatehousev1.SigningKeySpec{Issuer: "https://issuer.example.com", Rotation: rotation(time.Hour, 10*time.Minute, 5*time.Minute)}
	for _, tc := range []struct {
		name     string
		at       time.Duration
		promotes bool
	}{
		{"Revoking the active key with no next key activates a fresh key.", 10 * time.Minute, false},
		{"Revoking the active key while the next key is published activates that key.", 57 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "revoke-" + strings.TrimSuffix(tc.at.String(), "m0s")
			h.clock.SetTime(t0)
			h.create(name, spec)
			for at := t0; ; {
				requeue := h.reconcile(name)
				if at.Add(requeue).After(t0.Add(tc.at)) {
					break
				}
				at = at.Add(requeue)
				h.clock.SetTime(at)
			}
			now := t0.Add(tc.at)
			h.clock.SetTime(now)
			h.reconcile(name)
			victim, err := h.keySet(name).ActiveSigningKey(now)
			if err != nil {
				t.Fatal(err)
			}
			tok := sign(t, victim, now, 5*time.Minute)
			if err := verify(h.jwks(name), tok, now); err != nil {
				t.Fatalf("token does not verify before the revocation: %v", err)
			}
			h.drainEvents()

			sk := h.get(name)
			nextKid := ""
			for _, k := range sk.Status.Keys {
				if k.Phase == gatehousev1.KeyPhaseNext {
					nextKid = k.KeyID
				}
			}
			if tc.promotes == (nextKid == "") {
				t.Fatalf("next key %q at %s does not fit the case", nextKid, now)
			}
			sk.Spec.RevokedKeyIDs = []string{victim.KeyID()}
			if err := h.env.Client.Update(h.ctx(), sk); err != nil {
				t.Fatal(err)
			}
			h.reconcile(name)

			doc := h.jwks(name)
			if hasKid(doc, victim.KeyID()) {
				t.Fatal("the revoked kid is still in the JWKS after one reconcile")
			}
			if err := verify(doc, tok, now); err == nil {
				t.Fatal("a token of the revoked key still verifies")
			}
			ks := h.keySet(name)
			if k := ks.Key(victim.KeyID()); k == nil || k.Private != nil || k.Public != nil {
				t.Fatal("the revoked key's material is still in the Secret")
			}
			signer, err := ks.ActiveSigningKey(now)
			if err != nil || signer.KeyID() == victim.KeyID() || !hasKid(doc, signer.KeyID()) {
				t.Fatalf("no published replacement signs: %v %v", signer, err)
			}
			if err := verify(doc, sign(t, signer, now, time.Minute), now); err != nil {
				t.Fatalf("the replacement's token fails: %v", err)
			}
			if tc.promotes && signer.KeyID() != nextKid {
				t.Fatalf("active key %s, want the already published next key %s", signer.KeyID(), nextKid)
			}
			sk = h.get(name)
			ready := metaCondition(sk.Status.Conditions, gatehousev1.ConditionReady)
			if ready == nil || ready.Reason != gatehousev1.ReasonKeyRevoked || !strings.Contains(ready.Message, "fail verification") {
				t.Fatalf("Ready condition does not report the revocation: %+v", ready)
			}
			phase := gatehousev1.KeyPhase("")
			for _, k := range sk.Status.Keys {
				if k.KeyID == victim.KeyID() {
					phase = k.Phase
				}
			}
			if phase != gatehousev1.KeyPhaseRevoked || sk.Status.ActiveKeyID != signer.KeyID() {
				t.Fatalf("status phase %q, active %q", phase, sk.Status.ActiveKeyID)
			}
			if evs := h.drainEvents(); !hasEvent(evs, "Warning KeyRevoked", "now fail") {
				t.Fatalf("no Warning KeyRevoked Event saying tokens now fail: %v", evs)
			}
		})
	}
}

// TestIntegrationLostSecretIsRecovered deletes the private Secret: the
// controller generates a new active key, keeps the lost key published
// (retired) so its tokens verify until the overlap ends, and warns.
func TestIntegrationLostSecretIsRecovered(t *testing.T) {
	h := newHarness(t)
	h.create("lost", gatehousev1.SigningKeySpec{Issuer: "https://issuer.example.com", Rotation: rotation(time.Hour, 10*time.Minute, 5*time.Minute)})
	h.reconcile("lost")
	old, err := h.keySet("lost").ActiveSigningKey(t0)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(20 * time.Minute)
	h.clock.SetTime(now)
	tok := sign(t, old, now, 10*time.Minute)
	h.drainEvents()
	if err := h.env.Client.Delete(h.ctx(), h.secret("lost")); err != nil {
		t.Fatal(err)
	}
	requeue := h.reconcile("lost")

	ks := h.keySet("lost")
	signer, err := ks.ActiveSigningKey(now)
	if err != nil || signer.KeyID() == old.KeyID() {
		t.Fatalf("no new active key: %v %v", signer, err)
	}
	if k := ks.Key(old.KeyID()); k == nil || !k.Lost || k.Phase(now) != gatehousev1.KeyPhaseRetired || k.Private != nil {
		t.Fatalf("the lost key is not kept as retired: %+v", k)
	}
	doc := h.jwks("lost")
	if err := verify(doc, tok, now.Add(9*time.Minute)); err != nil {
		t.Fatalf("a token of the lost key fails before the overlap ends: %v", err)
	}
	if requeue != 10*time.Minute {
		t.Fatalf("requeue %s, want the lost key's removal in 10m", requeue)
	}
	if evs := h.drainEvents(); !hasEvent(evs, "Warning KeyLost", "new key signs") {
		t.Fatalf("no Warning KeyLost Event: %v", evs)
	}
	if ready := metaCondition(h.get("lost").Status.Conditions, gatehousev1.ConditionReady); ready == nil || ready.Reason != gatehousev1.ReasonKeyLost {
		t.Fatalf("Ready does not report the loss: %+v", ready)
	}
	h.clock.SetTime(now.Add(requeue))
	h.reconcile("lost")
	if hasKid(h.jwks("lost"), old.KeyID()) {
		t.Fatal("the lost key is still published after its overlap")
	}
}

// TestIntegrationForeignObjectsAreNotTakenOver checks that a Secret or
// ConfigMap the SigningKey does not control is reported, never overwritten.
func TestIntegrationForeignObjectsAreNotTakenOver(t *testing.T) {
	h := newHarness(t)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: keyring.SecretName("taken")}, StringData: map[string]string{"x": "y"}}
	if err := h.env.Client.Create(h.ctx(), foreign); err != nil {
		t.Fatal(err)
	}
	h.create("taken", gatehousev1.SigningKeySpec{Issuer: "https://issuer.example.com"})
	if requeue := h.reconcile("taken"); requeue != conflictRetry {
		t.Fatalf("requeue %s, want %s", requeue, conflictRetry)
	}
	ready := metaCondition(h.get("taken").Status.Conditions, gatehousev1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != gatehousev1.ReasonSecretConflict {
		t.Fatalf("Ready = %+v, want False/SecretConflict", ready)
	}
	if sec := h.secret("taken"); string(sec.Data["x"]) != "y" || len(sec.Data) != 1 {
		t.Fatal("the foreign Secret was changed")
	}
}

func metaCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}
