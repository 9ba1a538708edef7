package signingkeys

import (
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
)

func testPolicy() Policy {
	return Policy{Algorithm: jwa.ES256, Every: 2 * time.Hour, Overlap: 30 * time.Minute, Propagation: 5 * time.Minute, Revoked: map[string]bool{}}
}

// countingGen generates real keys and counts calls.
type countingGen struct{ n int }

func (g *countingGen) gen(alg jwa.SignatureAlgorithm, bits int) (jwk.Key, error) {
	g.n++
	return keyring.Generate(alg, bits, rand.Reader)
}

// operator simulates the controller: Decide, publish the JWKS, report the
// publication back and decide again, as controllers/signingkeys does.
type operator struct {
	t      *testing.T
	ks     *keyring.KeySet
	policy Policy
	jwks   []byte
	gen    *countingGen
	next   time.Time
	events []Change
}

func (o *operator) reconcile(now time.Time) {
	o.t.Helper()
	published := map[string]bool{}
	for kid := range keyring.PublishedKeys(o.jwks) {
		published[kid] = true
	}
	for pass := 0; ; pass++ {
		if pass > 2 {
			o.t.Fatalf("%s: no fixed point after 3 passes", now)
		}
		plan, err := Decide(o.ks, o.policy, published, now, o.gen.gen)
		if err != nil {
			o.t.Fatalf("%s: decide: %v", now, err)
		}
		o.ks, o.next = plan.KeySet, plan.NextTransition
		o.events = append(o.events, plan.Changes...)
		doc, err := o.ks.JWKS(now)
		if err != nil {
			o.t.Fatal(err)
		}
		if string(doc) == string(o.jwks) {
			return
		}
		o.jwks = doc
		for kid := range keyring.PublishedKeys(doc) {
			published[kid] = true
		}
	}
}

// assertInvariants checks, at now: exactly one key can sign, it is in the
// JWKS, and no revoked key is published.
func (o *operator) assertInvariants(now time.Time) {
	o.t.Helper()
	active := 0
	for i := range o.ks.Keys {
		if o.ks.Keys[i].Phase(now) == gatehousev1.KeyPhaseActive {
			active++
		}
	}
	if active != 1 {
		o.t.Fatalf("%s: %d active keys: %s", now, active, describe(o.ks, now))
	}
	a, err := o.ks.ActiveSigningKey(now)
	if err != nil {
		o.t.Fatalf("%s: %v", now, err)
	}
	pub := keyring.PublishedKeys(o.jwks)
	if pub[a.KeyID()] == nil {
		o.t.Fatalf("%s: active key %s is not in the JWKS", now, a.KeyID())
	}
	for kid := range o.policy.Revoked {
		if pub[kid] != nil {
			o.t.Fatalf("%s: revoked key %s is published", now, kid)
		}
	}
	assertPublicOnly(o.t, o.jwks)
}

func describe(ks *keyring.KeySet, now time.Time) string {
	var b strings.Builder
	for _, k := range ks.Keys {
		fmt.Fprintf(&b, "\n  %s %s created=%s published=%s activates=%s retires=%s remove=%s", k.ID[:8], k.Phase(now), k.CreatedAt.Format("15:04"), k.PublishedAt.Format("15:04"), k.ActivatesAt.Format("15:04"), k.RetiresAt.Format("15:04"), k.RemoveAt.Format("15:04"))
	}
	return b.String()
}

// TestDecideWalksSeveralRotationsWithoutEverFailingAToken runs the operator
// minute by minute over two days of rotations (plus one requested rotation)
// and checks that every token signed by the active key at any minute, with
// the lifetime the token endpoint allows, verifies until it expires for a
// verifier that re-reads the JWKS only once per propagation interval.
func TestDecideWalksSeveralRotationsWithoutEverFailingAToken(t *testing.T) {
	p := testPolicy()
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	clock := clocktesting.NewFakePassiveClock(t0)
	end := t0.Add(48 * time.Hour)
	requestAt := t0.Add(7*time.Hour + 13*time.Minute)

	// jwksAt[m] is the JWKS content at minute m (after that minute's reconcile).
	var jwksAt [][]byte
	type token struct {
		minute int
		raw    []byte
		exp    time.Time
	}
	var tokens []token
	activations := map[string]bool{}
	for m := 0; !clock.Now().After(end); m++ {
		now := clock.Now()
		if now.Equal(requestAt) {
			op.policy.RotationRequest = requestAt.Format(time.RFC3339)
		}
		op.reconcile(now)
		op.assertInvariants(now)
		if !op.next.IsZero() && !op.next.After(now) {
			t.Fatalf("%s: next transition %s is not in the future", now, op.next)
		}
		// Requeue exactness: nothing changes before the next transition.
		if !op.next.IsZero() && op.next.Sub(now) > time.Second {
			before := op.next.Add(-time.Second)
			plan, err := Decide(op.ks, op.policy, PublishedKeysSet(op.jwks), before, op.gen.gen)
			if err != nil || plan.Changed {
				t.Fatalf("%s: state changes at %s, before the announced transition %s", now, before, op.next)
			}
		}
		jwksAt = append(jwksAt, op.jwks)
		a, _ := op.ks.ActiveKey(now)
		activations[a.Key.KeyID()] = true
		if a.MaxTokenLifetime != p.Overlap {
			t.Fatalf("%s: max token lifetime %s, want the overlap %s", now, a.MaxTokenLifetime, p.Overlap)
		}
		tokens = append(tokens, token{minute: m, raw: sign(t, a.Key, now, a.MaxTokenLifetime), exp: now.Add(a.MaxTokenLifetime)})
		clock.SetTime(now.Add(time.Minute))
	}
	if len(activations) < 25 {
		t.Fatalf("only %d keys signed in 48h with a 2h rotation and one requested rotation", len(activations))
	}
	prop := int(p.Propagation / time.Minute)
	// Verification depends on the JWKS content only (the token is checked
	// within its lifetime), so each token is verified once per distinct
	// document a verifier can hold while the token lives.
	checked := 0
	for _, tok := range tokens {
		docs := map[string]int{}
		for phase := 0; phase < prop; phase++ {
			for v := tok.minute; v < len(jwksAt) && t0.Add(time.Duration(v)*time.Minute).Before(tok.exp); v++ {
				read := v - ((v-phase)%prop+prop)%prop
				if read < 0 {
					continue // the verifier had not started yet
				}
				if _, ok := docs[string(jwksAt[read])]; !ok {
					docs[string(jwksAt[read])] = read
				}
			}
		}
		for doc, read := range docs {
			checked++
			if err := verify([]byte(doc), tok.raw, t0.Add(time.Duration(tok.minute)*time.Minute)); err != nil {
				t.Fatalf("token signed at minute %d fails with the JWKS read at minute %d: %v", tok.minute, read, err)
			}
		}
	}
	t.Logf("%d tokens, %d (token, JWKS) verifications, %d keys", len(tokens), checked, len(activations))
	if op.gen.n != len(activations) {
		t.Fatalf("generated %d keys for %d activations: keys were wasted", op.gen.n, len(activations))
	}
}

// PublishedKeysSet is PublishedKeys as a set of kids.
func PublishedKeysSet(doc []byte) map[string]bool {
	out := map[string]bool{}
	for kid := range keyring.PublishedKeys(doc) {
		out[kid] = true
	}
	return out
}

func TestDecideSchedulesEachPhaseAtTheRightTime(t *testing.T) {
	p := testPolicy()
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	op.reconcile(t0)
	first := op.ks.Keys[0]
	if first.ActivatesAt != t0 || op.next != t0.Add(p.Every-p.Propagation) {
		t.Fatalf("first key activates at %s (want %s), next transition %s (want %s)", first.ActivatesAt, t0, op.next, t0.Add(p.Every-p.Propagation))
	}
	genAt := op.next
	op.reconcile(genAt)
	if len(op.ks.Keys) != 2 {
		t.Fatalf("no next key at %s: %s", genAt, describe(op.ks, genAt))
	}
	second := op.ks.Keys[1]
	if second.PublishedAt != genAt || second.ActivatesAt != t0.Add(p.Every) || op.ks.Keys[0].RetiresAt != second.ActivatesAt ||
		op.ks.Keys[0].RemoveAt != second.ActivatesAt.Add(p.Overlap) || op.next != second.ActivatesAt {
		t.Fatalf("wrong schedule: %s; next transition %s", describe(op.ks, genAt), op.next)
	}
	if second.Phase(genAt) != gatehousev1.KeyPhaseNext || keyring.PublishedKeys(op.jwks)[second.ID] == nil {
		t.Fatal("the next key is not published as Next")
	}
	op.reconcile(second.ActivatesAt)
	if op.ks.Keys[0].Phase(second.ActivatesAt) != gatehousev1.KeyPhaseRetired || op.next != second.ActivatesAt.Add(p.Overlap) {
		t.Fatalf("after the hand-over: %s; next %s", describe(op.ks, second.ActivatesAt), op.next)
	}
	removeAt := op.next
	op.reconcile(removeAt)
	if op.ks.Key(first.ID) != nil || keyring.PublishedKeys(op.jwks)[first.ID] != nil {
		t.Fatalf("retired key not removed at %s", removeAt)
	}
}

func TestDecideDelaysActivationUntilTheNextKeyIsPublished(t *testing.T) {
	p := testPolicy()
	g := &countingGen{}
	plan, _ := Decide(&keyring.KeySet{}, p, nil, t0, g.gen)
	genAt := t0.Add(p.Every - p.Propagation)
	// The ConfigMap write fails for an hour: the next key stays
	// unscheduled and the active key keeps signing.
	plan, _ = Decide(plan.KeySet, p, nil, genAt, g.gen)
	for m := time.Duration(0); m <= time.Hour; m += time.Minute {
		plan, _ = Decide(plan.KeySet, p, nil, genAt.Add(m), g.gen)
		if n := plan.KeySet.Keys[1]; !n.ActivatesAt.IsZero() || plan.KeySet.Keys[0].Phase(genAt.Add(m)) != gatehousev1.KeyPhaseActive {
			t.Fatalf("an unpublished key was scheduled: %s", describe(plan.KeySet, genAt.Add(m)))
		}
	}
	late := genAt.Add(time.Hour)
	pub := map[string]bool{plan.KeySet.Keys[1].ID: true}
	plan, _ = Decide(plan.KeySet, p, pub, late, g.gen)
	if got := plan.KeySet.Keys[1].ActivatesAt; got != late.Add(p.Propagation) {
		t.Fatalf("late-published key activates at %s, want one propagation after publication %s", got, late.Add(p.Propagation))
	}
	if g.n != 2 {
		t.Fatalf("generated %d keys, want 2", g.n)
	}
}

func TestDecideHandlesRevocationsInOneStep(t *testing.T) {
	p := testPolicy()
	setup := func(t *testing.T, at time.Time) *operator {
		op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
		op.policy.Revoked = map[string]bool{}
		for m := t0; !m.After(at); m = m.Add(time.Minute) {
			op.reconcile(m)
		}
		return op
	}
	cases := []struct {
		name string
		// at is when the kid is revoked; phase picks which key.
		at    time.Duration
		phase gatehousev1.KeyPhase
		// wantPromoted: the published next key takes over.
		wantPromoted bool
	}{
		{"Revoking the active key with no next key generates a replacement that signs at once.", time.Hour, gatehousev1.KeyPhaseActive, false},
		{"Revoking the active key while a next key is published promotes the next key at once.", p.Every - time.Minute, gatehousev1.KeyPhaseActive, true},
		{"Revoking the next key withdraws it and unschedules the hand-over.", p.Every - time.Minute, gatehousev1.KeyPhaseNext, false},
		{"Revoking a retired key withdraws it before its overlap ends.", p.Every + time.Minute, gatehousev1.KeyPhaseRetired, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(tc.at)
			op := setup(t, now)
			var victim, next string
			for _, k := range op.ks.Keys {
				if k.Phase(now) == tc.phase {
					victim = k.ID
				}
				if k.Phase(now) == gatehousev1.KeyPhaseNext {
					next = k.ID
				}
			}
			if victim == "" {
				t.Fatalf("no %s key at %s: %s", tc.phase, now, describe(op.ks, now))
			}
			op.policy.Revoked[victim] = true
			genBefore := op.gen.n
			op.reconcile(now)
			op.assertInvariants(now)
			if k := op.ks.Key(victim); k == nil || k.Phase(now) != gatehousev1.KeyPhaseRevoked || k.Private != nil {
				t.Fatalf("revoked key kept its material or phase: %s", describe(op.ks, now))
			}
			a, _ := op.ks.ActiveSigningKey(now)
			if tc.phase == gatehousev1.KeyPhaseActive {
				if tc.wantPromoted && (a.KeyID() != next || op.gen.n != genBefore) {
					t.Fatalf("active is %s, want the published next key %s without generating", a.KeyID(), next)
				}
				if !tc.wantPromoted && op.gen.n != genBefore+1 {
					t.Fatalf("generated %d keys, want one replacement", op.gen.n-genBefore)
				}
			}
			if tc.phase == gatehousev1.KeyPhaseNext {
				if a.KeyID() == victim {
					t.Fatal("the revoked next key signs")
				}
				// Later it must still rotate, to a fresh key.
				later := now.Add(2 * p.Propagation)
				op.reconcile(later)
				op.assertInvariants(later)
				if act, _ := op.ks.ActiveSigningKey(later); act.KeyID() == victim || act.KeyID() == a.KeyID() {
					t.Fatalf("after revoking the next key the rotation did not happen with a new key: %s", describe(op.ks, later))
				}
			}
			revokedEvent := false
			for _, c := range op.events {
				if c.Reason == gatehousev1.ReasonKeyRevoked && c.KeyID == victim && strings.Contains(c.Message, "now fail") {
					revokedEvent = true
				}
			}
			if !revokedEvent {
				t.Fatalf("no KeyRevoked change saying tokens now fail: %+v", op.events)
			}
			// The tombstone goes after one overlap.
			gone := now.Add(p.Overlap)
			op.reconcile(gone)
			if op.ks.Key(victim) != nil {
				t.Fatalf("tombstone of %s still there at %s", victim, gone)
			}
		})
	}
}

func TestDecideRotatesOncePerRotationRequestValue(t *testing.T) {
	p := testPolicy()
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	op.reconcile(t0)
	now := t0.Add(10 * time.Minute)
	op.policy.RotationRequest = now.Format(time.RFC3339)
	op.reconcile(now)
	if op.gen.n != 2 || op.next != now.Add(p.Propagation) {
		t.Fatalf("request did not start a rotation: %d keys generated, next %s", op.gen.n, op.next)
	}
	for m := now; !m.After(now.Add(time.Hour)); m = m.Add(time.Minute) {
		op.reconcile(m)
	}
	if op.gen.n != 2 {
		t.Fatalf("the same request value rotated %d times", op.gen.n-1)
	}
	if a, _ := op.ks.ActiveSigningKey(now.Add(time.Hour)); a.KeyID() != op.ks.Keys[len(op.ks.Keys)-1].ID {
		t.Fatal("the requested key is not active")
	}
	// A malformed value is reported once and changes nothing.
	op.policy.RotationRequest = "yesterday"
	op.reconcile(now.Add(61 * time.Minute))
	op.reconcile(now.Add(62 * time.Minute))
	bad := 0
	for _, c := range op.events {
		if c.Reason == ReasonBadRotateRequest {
			bad++
		}
	}
	if bad != 1 || op.gen.n != 2 {
		t.Fatalf("malformed request: %d warnings, %d keys", bad, op.gen.n)
	}
	// A value older than the active key's activation is already satisfied.
	op.policy.RotationRequest = t0.Format(time.RFC3339)
	op.reconcile(now.Add(63 * time.Minute))
	if op.gen.n != 2 {
		t.Fatal("an old request value rotated again")
	}
}

func TestDecideRotatesToANewAlgorithmThroughThePhases(t *testing.T) {
	p := testPolicy()
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	op.reconcile(t0)
	old := op.ks.Keys[0].ID
	op.policy.Algorithm = jwa.EdDSA
	now := t0.Add(time.Minute)
	op.reconcile(now)
	if a, _ := op.ks.ActiveSigningKey(now); a.KeyID() != old {
		t.Fatal("the algorithm change skipped the propagation interval")
	}
	at := now.Add(p.Propagation)
	op.reconcile(at)
	a, _ := op.ks.ActiveSigningKey(at)
	if a.Algorithm() != jwa.EdDSA {
		t.Fatalf("active key algorithm %v after propagation, want EdDSA", a.Algorithm())
	}
}

func TestOverlapShrinkingNeverShortensWhatTokensWereGiven(t *testing.T) {
	p := testPolicy()
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	op.reconcile(t0)
	first := op.ks.Keys[0].ID
	op.policy.Overlap = 5 * time.Minute
	for m := t0; !m.After(t0.Add(p.Every)); m = m.Add(time.Minute) {
		op.reconcile(m)
	}
	k := op.ks.Key(first)
	if k == nil || k.RemoveAt != t0.Add(p.Every).Add(p.Overlap) {
		t.Fatalf("the first key signed tokens for %s but leaves at %v", p.Overlap, k)
	}
	if a, _ := op.ks.ActiveKey(t0.Add(p.Every)); a.MaxTokenLifetime != 5*time.Minute {
		t.Fatalf("the new key allows %s, want the new overlap", a.MaxTokenLifetime)
	}
}

func TestRecoverKeepsPublishedKeysOfALostSecretAndRetiresTheActiveOne(t *testing.T) {
	p := testPolicy()
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	for m := t0; !m.After(t0.Add(p.Every + 10*time.Minute)); m = m.Add(time.Minute) {
		op.reconcile(m)
	}
	now := t0.Add(p.Every + 10*time.Minute)
	status := StatusAt(op.ks, now)
	active, _ := op.ks.ActiveSigningKey(now)
	var retired string
	for _, k := range status.Keys {
		if k.Phase == gatehousev1.KeyPhaseRetired {
			retired = k.KeyID
		}
	}
	token := sign(t, active, now, 20*time.Minute)
	// A key the status never listed, slipped into the ConfigMap by hand.
	intruder := mustKey(t, jwa.ES256)
	published := keyring.PublishedKeys(op.jwks)
	published[intruder.ID] = intruder.Public
	status.Keys = append(status.Keys, gatehousev1.SigningKeyStatusKey{KeyID: "vanished", Phase: gatehousev1.KeyPhaseRetired, RetiresAt: &metav1.Time{Time: now}, RemoveAt: &metav1.Time{Time: now.Add(time.Minute)}})

	recovered, lost, gone := Recover(&keyring.KeySet{}, status.Keys, published, p, now)
	if len(lost) != 2 || len(gone) != 1 || gone[0] != "vanished" || recovered.Key(intruder.ID) != nil {
		t.Fatalf("lost %v gone %v; intruder adopted: %v", lost, gone, recovered.Key(intruder.ID) != nil)
	}
	op.ks = recovered
	op.reconcile(now)
	op.assertInvariants(now)
	a, _ := op.ks.ActiveSigningKey(now)
	if a.KeyID() == active.KeyID() || op.ks.Key(active.KeyID()).Phase(now) != gatehousev1.KeyPhaseRetired || op.ks.Key(retired) == nil {
		t.Fatalf("after recovery: %s", describe(op.ks, now))
	}
	if err := verify(op.jwks, token, now.Add(19*time.Minute)); err != nil {
		t.Fatalf("a token of the lost key no longer verifies: %v", err)
	}
	lostEvents := 0
	for _, c := range op.events {
		if c.Reason == gatehousev1.ReasonKeyLost {
			lostEvents++
		}
	}
	if lostEvents == 0 {
		t.Fatal("no KeyLost change")
	}
	// The recovered keys survive a trip through the Secret.
	data, err := op.ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := keyring.ParseKeySet(data)
	if err != nil || len(back.Invalid) != 0 || len(back.Keys) != len(op.ks.Keys) {
		t.Fatalf("recovered set does not round-trip: %v %v", err, back.Invalid)
	}
}

func TestDecideRepairsASetWithTwoActiveKeys(t *testing.T) {
	p := testPolicy()
	a, b := mustKey(t, jwa.ES256), mustKey(t, jwa.ES256)
	ks := &keyring.KeySet{Keys: []keyring.Key{
		{ID: a.ID, Algorithm: jwa.ES256, Private: a.Private, Public: a.Public, CreatedAt: t0, ActivatesAt: t0, Overlap: p.Overlap},
		{ID: b.ID, Algorithm: jwa.ES256, Private: b.Private, Public: b.Public, CreatedAt: t0, ActivatesAt: t0.Add(time.Minute), Overlap: p.Overlap},
	}}
	now := t0.Add(2 * time.Minute)
	if k, _ := ks.ActiveSigningKey(now); k.KeyID() != b.ID {
		t.Fatal("the most recently activated key must win")
	}
	plan, err := Decide(ks, p, map[string]bool{a.ID: true, b.ID: true}, now, (&countingGen{}).gen)
	if err != nil {
		t.Fatal(err)
	}
	if plan.KeySet.Key(a.ID).Phase(now) != gatehousev1.KeyPhaseRetired || plan.KeySet.Key(b.ID).Phase(now) != gatehousev1.KeyPhaseActive {
		t.Fatalf("not repaired: %s", describe(plan.KeySet, now))
	}
}

func TestPolicyForAppliesDefaultsAndRefusesInvalidSpecs(t *testing.T) {
	bits := int32(3072)
	cases := []struct {
		name    string
		spec    gatehousev1.SigningKeySpec
		wantErr string
		want    Policy
	}{
		{"An empty spec gets ES256 and the CRD defaults.", gatehousev1.SigningKeySpec{}, "",
			Policy{Algorithm: jwa.ES256, Every: keyring.DefaultEvery, Overlap: keyring.DefaultOverlap, Propagation: keyring.DefaultPropagation}},
		{"RS256 defaults to 2048 bits.", gatehousev1.SigningKeySpec{Algorithm: gatehousev1.RS256}, "",
			Policy{Algorithm: jwa.RS256, RSABits: 2048, Every: keyring.DefaultEvery, Overlap: keyring.DefaultOverlap, Propagation: keyring.DefaultPropagation}},
		{"PS256 takes the given size.", gatehousev1.SigningKeySpec{Algorithm: gatehousev1.PS256, RSAKeySize: &bits}, "",
			Policy{Algorithm: jwa.PS256, RSABits: 3072, Every: keyring.DefaultEvery, Overlap: keyring.DefaultOverlap, Propagation: keyring.DefaultPropagation}},
		{"An RSA size with an EC algorithm is refused.", gatehousev1.SigningKeySpec{Algorithm: gatehousev1.ES256, RSAKeySize: &bits}, "rsaKeySize", Policy{}},
		{"An overlap as long as the rotation period is refused.", gatehousev1.SigningKeySpec{Rotation: &gatehousev1.SigningKeyRotation{
			Every: &metav1.Duration{Duration: 2 * time.Hour}, Overlap: &metav1.Duration{Duration: 2 * time.Hour}}}, "overlap", Policy{}},
		{"An unknown algorithm is refused.", gatehousev1.SigningKeySpec{Algorithm: "HS256"}, "unsupported", Policy{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PolicyFor(&gatehousev1.SigningKey{Spec: tc.spec})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Algorithm != tc.want.Algorithm || got.RSABits != tc.want.RSABits || got.Every != tc.want.Every || got.Overlap != tc.want.Overlap || got.Propagation != tc.want.Propagation {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPhaseChangesNameEveryTransition(t *testing.T) {
	before := []gatehousev1.SigningKeyStatusKey{{KeyID: "n", Phase: gatehousev1.KeyPhaseNext}, {KeyID: "a", Phase: gatehousev1.KeyPhaseActive}, {KeyID: "r", Phase: gatehousev1.KeyPhaseRetired}}
	after := []gatehousev1.SigningKeyStatusKey{{KeyID: "x", Phase: gatehousev1.KeyPhaseNext}, {KeyID: "n", Phase: gatehousev1.KeyPhaseActive}, {KeyID: "a", Phase: gatehousev1.KeyPhaseRetired}}
	var got []string
	for _, c := range PhaseChanges(before, after) {
		got = append(got, c.Reason+":"+c.KeyID)
	}
	want := "KeyRetired:a KeyActivated:n KeyCreated:x KeyRemoved:r"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if len(PhaseChanges(after, after)) != 0 {
		t.Fatal("changes reported for an unchanged status")
	}
}

func TestStatusNamesTheActiveKeyAndTheNextRotation(t *testing.T) {
	p := testPolicy()
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	op.reconcile(t0)
	st := StatusWithNextRotation(op.ks, p, t0)
	if st.ActiveKeyID != op.ks.Keys[0].ID || !st.LastRotationTime.Time.Equal(t0) || !st.NextRotationTime.Time.Equal(t0.Add(p.Every)) || len(st.Keys) != 1 {
		t.Fatalf("before the next key: %+v", st)
	}
	genAt := t0.Add(p.Every - p.Propagation + 30*time.Second)
	op.reconcile(genAt)
	st = StatusWithNextRotation(op.ks, p, genAt)
	if len(st.Keys) != 2 || st.Keys[0].Phase != gatehousev1.KeyPhaseNext || st.Keys[1].Phase != gatehousev1.KeyPhaseActive {
		t.Fatalf("keys are not newest first with their phases: %+v", st.Keys)
	}
	// Scheduled from the publication, 30s late: whole seconds in status.
	want := genAt.Add(p.Propagation)
	if !st.NextRotationTime.Time.Equal(want) || !st.Keys[0].ActivatesAt.Time.Equal(want) || !st.Keys[1].RetiresAt.Time.Equal(want) {
		t.Fatalf("next rotation %s, next activates %s, active retires %s; want %s", st.NextRotationTime, st.Keys[0].ActivatesAt, st.Keys[1].RetiresAt, want)
	}
}

func TestRotationRequestsCannotGrowTheJWKSWithoutBound(t *testing.T) {
	p := testPolicy()
	p.Propagation = 0
	op := &operator{t: t, ks: &keyring.KeySet{}, policy: p, gen: &countingGen{}}
	now := t0
	op.reconcile(now)
	for i := 1; i <= 3*MaxPublishedKeys; i++ {
		now = now.Add(time.Second)
		op.policy.RotationRequest = now.Format(time.RFC3339)
		op.reconcile(now)
		op.assertInvariants(now)
		if n := len(keyring.PublishedKeys(op.jwks)); n > MaxPublishedKeys {
			t.Fatalf("after %d requests the JWKS holds %d keys, over %d", i, n, MaxPublishedKeys)
		}
	}
	if op.gen.n < MaxPublishedKeys {
		t.Fatalf("only %d keys generated: requests below the bound were not honoured", op.gen.n)
	}
	ignored := false
	for _, c := range op.events {
		ignored = ignored || (c.Reason == ReasonRotationIgnored && strings.Contains(c.Message, "still published"))
	}
	if !ignored {
		t.Fatal("no Warning for the ignored requests")
	}
	// Once the retired keys leave, requests work again.
	later := now.Add(p.Overlap)
	op.reconcile(later)
	before := op.gen.n
	op.policy.RotationRequest = later.Format(time.RFC3339)
	op.reconcile(later)
	if op.gen.n != before+1 {
		t.Fatal("a request after the overlap was not honoured")
	}
}

type testKey struct {
	ID        string
	Algorithm jwa.SignatureAlgorithm
	Private   jwk.Key
	Public    jwk.Key
}

func mustKey(t *testing.T, alg jwa.SignatureAlgorithm) testKey {
	t.Helper()
	priv, err := keyring.Generate(alg, 2048, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keyring.PublicKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{ID: priv.KeyID(), Algorithm: alg, Private: priv, Public: pub}
}
