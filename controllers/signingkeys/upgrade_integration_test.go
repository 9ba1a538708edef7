package signingkeys

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/operator/discovery"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

// TestIntegrationAClusterOfThePreviousVersionConvergesWithoutDenyingAToken
// builds by hand what the previous version left: a private Secret, a
// status listing the key (but no status.jwks) and a JWKS ConfigMap the
// SigningKey controls. The new operator keeps the same active key (no
// emergency rotation), publishes it in the status before it deletes the
// ConfigMap, and a token signed before the upgrade verifies against what
// is served at every point.
func TestIntegrationAClusterOfThePreviousVersionConvergesWithoutDenyingAToken(t *testing.T) {
	env, ns := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host := ns + ".example.com"
	issuer := "https://" + host + "/auth"
	sk := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tokens"}, Spec: gatehousev1.SigningKeySpec{Issuer: issuer}}
	if err := env.Client.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	activated := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	priv, err := keyring.Generate(jwa.ES256, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := keyring.PublicKey(priv)
	ks := &keyring.KeySet{Keys: []keyring.Key{{ID: priv.KeyID(), Algorithm: jwa.ES256, Private: priv, Public: pub, CreatedAt: activated, PublishedAt: activated, ActivatesAt: activated, Overlap: time.Hour}}}
	doc, _ := ks.Marshal()
	jwks, _ := ks.JWKS(time.Now())
	yes := true
	owner := []metav1.OwnerReference{{APIVersion: gatehousev1.GroupVersion.String(), Kind: "SigningKey", Name: sk.Name, UID: sk.UID, Controller: &yes, BlockOwnerDeletion: &yes}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyring.SecretName(sk.Name), Labels: map[string]string{gatehousev1.LabelOwnerName: sk.Name, gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue}, OwnerReferences: owner},
		Type: keyring.SecretType, Data: map[string][]byte{keyring.SecretDataKey: doc}}
	legacy := forgedJWKS(ns, "tokens-jwks", sk.Name, issuer, string(jwks))
	legacy.OwnerReferences = owner
	for _, o := range []client.Object{sec, legacy} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	at := metav1.NewTime(activated)
	sk.Status = gatehousev1.SigningKeyStatus{ActiveKeyID: priv.KeyID(), SecretName: sec.Name, Keys: []gatehousev1.SigningKeyStatusKey{
		{KeyID: priv.KeyID(), Phase: gatehousev1.KeyPhaseActive, CreatedAt: &at, ActivatesAt: &at}}}
	if err := env.Client.Status().Update(ctx, sk); err != nil {
		t.Fatal(err)
	}
	token := sign(t, priv, time.Now(), 15*time.Minute)

	base := startManager(t, env, ns)
	framework.Eventually(t, "the status to publish the old key and the legacy ConfigMap to go", eventuallyTimeout, func() (bool, string) {
		got := getSK(ctx, t, env.Client, ns, "tokens")
		cmErr := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: legacy.Name}, &corev1.ConfigMap{})
		status, body, _ := fetch(t, base+"/auth"+discovery.JWKSPath, host, "")
		if status == 200 {
			if err := verify([]byte(body), token, time.Now()); err != nil {
				t.Fatalf("a token of the previous version fails against the served JWKS: %v", err)
			}
		}
		if got.Status.ActiveKeyID != "" && got.Status.ActiveKeyID != priv.KeyID() {
			t.Fatalf("the upgrade rotated the active key: %s, was %s", got.Status.ActiveKeyID, priv.KeyID())
		}
		return status == 200 && hasKid([]byte(got.Status.JWKS), priv.KeyID()) && apierrors.IsNotFound(cmErr),
			fmt.Sprintf("served %d, status jwks %s, legacy configmap %v", status, got.Status.JWKS, cmErr)
	})
	if err := verify([]byte(getSK(ctx, t, env.Client, ns, "tokens").Status.JWKS), token, time.Now()); err != nil {
		t.Fatalf("a token of the previous version fails against the status JWKS: %v", err)
	}
	if a, _, err := keyring.ActiveFor(ctx, env.Client, "", ns, "tokens", time.Now()); err != nil || a.Key.KeyID() != priv.KeyID() {
		t.Fatalf("the token endpoint signs with %v (%v), want the key of the previous version", a.Key, err)
	}
	evs := &eventsv1.EventList{}
	if err := env.Client.List(ctx, evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Type == corev1.EventTypeWarning {
			t.Fatalf("the upgrade raised a Warning: %s %s", e.Reason, e.Note)
		}
	}
}
