package signingkeys

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// harness drives a Reconciler by hand against the real API server, with a
// fake clock, so each step is one reconcile at a chosen instant.
type harness struct {
	t      *testing.T
	env    *testenv.Env
	ns     string
	clock  *clocktesting.FakeClock
	rec    *Reconciler
	events *events.FakeRecorder
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	env, ns := testenv.Start(t)
	h := &harness{t: t, env: env, ns: ns, clock: clocktesting.NewFakeClock(t0), events: events.NewFakeRecorder(1000)}
	h.rec = &Reconciler{Client: env.Client, APIReader: env.Client, Scheme: env.Scheme, Recorder: h.events, Clock: h.clock, Generator: testGenerator}
	return h
}

// testGenerator counts generated keys.
var (
	genMu    sync.Mutex
	genCount int
)

func testGenerator(alg jwa.SignatureAlgorithm, bits int) (jwk.Key, error) {
	genMu.Lock()
	genCount++
	genMu.Unlock()
	return keyring.Generate(alg, bits, rand.Reader)
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) create(name string, spec gatehousev1.SigningKeySpec) *gatehousev1.SigningKey {
	h.t.Helper()
	if spec.Issuer == sharedIssuer {
		// Issuers belong to one SigningKey: give each its own.
		spec.Issuer = sharedIssuer + "/" + h.ns + "/" + name
	}
	sk := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name}, Spec: spec}
	if err := h.env.Client.Create(h.ctx(), sk); err != nil {
		h.t.Fatalf("creating signingkey: %v", err)
	}
	return sk
}

// sharedIssuer is the issuer most tests name; create makes it unique.
const sharedIssuer = "https://issuer.example.com"

// reconcile runs the reconciles at the fake clock's time that a manager
// would run (one, plus those it hands over to at once) and returns the
// last RequeueAfter.
func (h *harness) reconcile(name string) time.Duration {
	h.t.Helper()
	for range 5 {
		res, err := h.rec.Reconcile(h.ctx(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: h.ns, Name: name}})
		if err != nil {
			h.t.Fatalf("reconcile at %s: %v", h.clock.Now(), err)
		}
		if res.RequeueAfter != handOver {
			return res.RequeueAfter
		}
	}
	h.t.Fatalf("reconcile at %s: still handing over after 5 passes", h.clock.Now())
	return 0
}

// reconcileOnce runs exactly one reconcile.
func (h *harness) reconcileOnce(name string) (ctrl.Result, error) {
	return h.rec.Reconcile(h.ctx(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: h.ns, Name: name}})
}

func (h *harness) get(name string) *gatehousev1.SigningKey {
	h.t.Helper()
	sk := &gatehousev1.SigningKey{}
	if err := h.env.Client.Get(h.ctx(), types.NamespacedName{Namespace: h.ns, Name: name}, sk); err != nil {
		h.t.Fatal(err)
	}
	return sk
}

func (h *harness) secret(name string) *corev1.Secret {
	h.t.Helper()
	sec := &corev1.Secret{}
	if err := h.env.Client.Get(h.ctx(), types.NamespacedName{Namespace: h.ns, Name: keyring.SecretName(name)}, sec); err != nil {
		h.t.Fatal(err)
	}
	return sec
}

func (h *harness) keySet(name string) *keyring.KeySet {
	h.t.Helper()
	ks, err := keyring.LoadKeySet(h.secret(name))
	if err != nil {
		h.t.Fatal(err)
	}
	return ks
}

// jwks is the JWKS the SigningKey's status publishes.
func (h *harness) jwks(name string) []byte {
	h.t.Helper()
	return []byte(h.get(name).Status.JWKS)
}

// drainEvents returns the Events recorded so far as "Type Reason note".
func (h *harness) drainEvents() []string {
	var out []string
	for {
		select {
		case e := <-h.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hasEvent(evs []string, prefix, contains string) bool {
	for _, e := range evs {
		if strings.HasPrefix(e, prefix) && strings.Contains(e, contains) {
			return true
		}
	}
	return false
}

func sign(t *testing.T, priv jwk.Key, iat time.Time, lifetime time.Duration) []byte {
	t.Helper()
	tok, err := jwt.NewBuilder().Issuer("https://issuer.example.com").Subject("svc").IssuedAt(iat).Expiration(iat.Add(lifetime)).Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(priv.Algorithm().(jwa.SignatureAlgorithm), priv))
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// verify checks token against a JWKS document as a verifier does: key by
// kid, algorithm from the key, never from the token header.
func verify(doc, token []byte, at time.Time) error {
	set, err := jwk.Parse(doc)
	if err != nil {
		return fmt.Errorf("parsing jwks: %w", err)
	}
	_, err = jwt.Parse(token, jwt.WithKeySet(set, jws.WithRequireKid(true), jws.WithInferAlgorithmFromKey(false), jws.WithUseDefault(false)),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return at })), jwt.WithValidate(true))
	return err
}

// assertPublicOnly fails when a JWKS key carries a private member or lacks
// kid, alg or use=sig.
func assertPublicOnly(t *testing.T, doc []byte) {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks is not a non-empty key set: %v %s", err, doc)
	}
	for _, k := range set.Keys {
		for _, f := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[f]; ok {
				t.Fatalf("jwks key %v has private member %q", k["kid"], f)
			}
		}
		if k["kid"] == nil || k["alg"] == nil || k["use"] != "sig" {
			t.Fatalf("jwks key lacks kid, alg or use=sig: %v", k)
		}
	}
}

func hasKid(doc []byte, kid string) bool {
	return keyring.PublishedKeys(doc)[kid] != nil
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func rotation(every, overlap, propagation time.Duration) *gatehousev1.SigningKeyRotation {
	return &gatehousev1.SigningKeyRotation{Every: dur(every), Overlap: dur(overlap), Propagation: dur(propagation)}
}

var _ client.Object = &gatehousev1.SigningKey{}
