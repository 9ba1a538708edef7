package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/keyring"
	operatorapp "gatehouse.dev/gatehouse/operator/app"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/stack"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

func TestMain(m *testing.M) {
	// Informers of the sidecar's source log through controller-runtime's
	// global logger; the operator's go to each test's own.
	ctrl.SetLogger(logr.Discard())
	os.Exit(testenv.Main(m))
}

// fixture is one namespace with the operator and a sidecar running.
type fixture struct {
	env   *testenv.Env
	ns    string
	stack *stack.Stack
	logs  *stack.LogBuffer
}

func startStack(t *testing.T) *fixture {
	t.Helper()
	env, ns := testenv.Start(t)
	return startStackOn(t, env, ns)
}

// startStackOn starts the operator and a sidecar on a namespace that may
// already hold state.
func startStackOn(t *testing.T, env *testenv.Env, ns string, opts ...func(*operatorapp.Options)) *fixture {
	t.Helper()
	f := &fixture{env: env, ns: ns, logs: &stack.LogBuffer{}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{
		OperatorConfig: env.Config,
		SidecarConfig:  env.ServiceAccountConfig(t, ns, "sidecar", testenv.SidecarRules),
		Namespace:      ns,
		PodLabels:      map[string]string{"app": "orders"},
		OperatorLog:    f.logs.Logger("operator"),
		SidecarLog:     f.logs.Logger("sidecar"),
		// Several tests of this package start a stack each.
		Operator: func(o *operatorapp.Options) {
			o.SkipControllerNameValidation = true
			for _, opt := range opts {
				opt(o)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the stack: %v", err)
		}
	})
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	f.stack = s
	return f
}

func (f *fixture) create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := f.env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// deliveredKey waits for the operator to deliver the APIKey's plaintext.
func (f *fixture) deliveredKey(t *testing.T, secretName string) string {
	t.Helper()
	var key string
	framework.Eventually(t, "the operator to deliver the key", 30*time.Second, func() (bool, string) {
		sec := &corev1.Secret{}
		if err := f.env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: secretName}, sec); err != nil {
			return false, err.Error()
		}
		key = string(sec.Data[gatehousev1.DeliveryKeyDataKey])
		_, err := apikeyformat.Parse(key)
		return err == nil, "no parsable key in the delivery Secret"
	})
	return key
}

func (f *fixture) signingKeyStatus(t *testing.T, name string) gatehousev1.SigningKeyStatus {
	t.Helper()
	sk := &gatehousev1.SigningKey{}
	if err := f.env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: name}, sk); err != nil {
		t.Fatal(err)
	}
	return sk.Status
}

func (f *fixture) token(t *testing.T, key, scope string) stack.TokenResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := stack.GetToken(ctx, f.stack.DiscoveryURL, key, scope, "")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func (f *fixture) check(t *testing.T, headers map[string]string) stack.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := stack.CheckGRPC(ctx, f.stack.Sidecar.GRPC, stack.Request{Method: "GET", Host: "orders.example.com", Path: "/orders/7", Headers: headers})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// publishedKeys fetches the issuer's JWKS from the operator the way an
// external verifier does: discovery document first, then its jwks_uri.
func (f *fixture) publishedKeys(t *testing.T, issuer string) jwk.Set {
	t.Helper()
	get := func(path string) []byte {
		var body []byte
		// The operator's cache may not hold the JWKS ConfigMap yet (503).
		framework.Eventually(t, "GET "+path, 10*time.Second, func() (bool, string) {
			req, err := http.NewRequest(http.MethodGet, f.stack.DiscoveryURL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "auth.example.com"
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			body, _ = io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK, fmt.Sprint(resp.StatusCode, " ", string(body))
		})
		return body
	}
	prefix := strings.TrimPrefix(issuer, "https://auth.example.com")
	var doc struct {
		Issuer        string `json:"issuer"`
		JWKSURI       string `json:"jwks_uri"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(get(prefix+"/.well-known/openid-configuration"), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Issuer != issuer || doc.TokenEndpoint != issuer+"/oauth2/token" {
		t.Fatalf("discovery document %+v does not advertise the token endpoint of %s", doc, issuer)
	}
	set, err := jwk.Parse(get(strings.TrimPrefix(doc.JWKSURI, "https://auth.example.com")))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestIntegrationAnExchangedTokenIsAllowedUntilItsAPIKeyIsDisabled is issue
// 6's scenario on the real API server, end to end over real HTTP and gRPC:
// APIKey and SigningKey → token from the endpoint → verified with jwx
// against the published JWKS → allowed by the sidecar with the APIKey's
// subject; rotation never signs with a Next or Retired key; disabling the
// APIKey denies the same unexpired token and refuses new ones; and neither
// the logs nor the Events hold the key or a token.
func TestIntegrationAnExchangedTokenIsAllowedUntilItsAPIKeyIsDisabled(t *testing.T) {
	f := startStack(t)
	issuer := "https://auth.example.com/" + f.ns
	f.create(t,
		&gatehousev1.SigningKey{
			ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: f.ns},
			Spec: gatehousev1.SigningKeySpec{Algorithm: gatehousev1.ES256, Issuer: issuer, Rotation: &gatehousev1.SigningKeyRotation{
				Every: &metav1.Duration{Duration: time.Hour}, Overlap: &metav1.Duration{Duration: 10 * time.Minute},
				Propagation: &metav1.Duration{Duration: 4 * time.Second},
			}},
		},
		&gatehousev1.APIKey{
			ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: f.ns},
			Spec: gatehousev1.APIKeySpec{
				Subject: "service:billing", Scopes: []string{"orders:read", "orders:write"}, SecretName: "billing-key",
				TokenExchange: &gatehousev1.TokenExchange{SigningKeyName: "platform", Audiences: []string{"orders"}, MaxLifetime: &metav1.Duration{Duration: 15 * time.Minute}},
			},
		},
		testfixture.Policy(f.ns, "orders", time.Time{}, []gatehousev1.TrustedIssuer{
			{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}, Audiences: []string{"orders"}},
		}, gatehousev1.Rule{Name: "read", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}}),
	)
	key := f.deliveredKey(t, "billing-key")
	var tokens []string

	// 1. A token, verified as an outside verifier would.
	var tr stack.TokenResponse
	framework.Eventually(t, "the endpoint to issue a token", 30*time.Second, func() (bool, string) {
		tr = f.token(t, key, "orders:read")
		return tr.Status == http.StatusOK, tr.String()
	})
	tokens = append(tokens, tr.AccessToken)
	if tr.Scope != "orders:read" || tr.ExpiresIn <= 0 || tr.ExpiresIn > 15*60 {
		t.Fatalf("token response %s: want scope orders:read and at most 15 minutes", tr)
	}
	set := f.publishedKeys(t, issuer)
	tok, err := jwt.Parse([]byte(tr.AccessToken), jwt.WithKeySet(set, jws.WithRequireKid(true)), jwt.WithIssuer(issuer),
		jwt.WithAudience("orders"), jwt.WithSubject("service:billing"), jwt.WithAcceptableSkew(5*time.Second))
	if err != nil {
		t.Fatalf("the token does not verify against the published JWKS: %v", err)
	}
	msg, err := jws.Parse([]byte(tr.AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Type() != "at+jwt" || hdr.KeyID() != f.signingKeyStatus(t, "platform").ActiveKeyID {
		t.Fatalf("typ %q kid %q, want at+jwt signed by the active key %q", hdr.Type(), hdr.KeyID(), f.signingKeyStatus(t, "platform").ActiveKeyID)
	}
	parsedKey, _ := apikeyformat.Parse(key)
	if got, _ := tok.Get(gatehousev1.ClaimAPIKeyID); got != parsedKey.ID() {
		t.Fatalf("%s claim %v, want the API key's ID", gatehousev1.ClaimAPIKeyID, got)
	}

	// 2. The sidecar allows it with the APIKey's subject (once it has the
	// JWKS and the record).
	bearer := map[string]string{"authorization": "Bearer " + tr.AccessToken}
	framework.Eventually(t, "the sidecar to allow the token", 30*time.Second, func() (bool, string) {
		v := f.check(t, bearer)
		return v.Allowed && v.Subject == "service:billing", v.String()
	})
	if v := f.check(t, map[string]string{"authorization": "Bearer " + f.token(t, key, "orders:write").AccessToken}); v.Allowed || v.Status != http.StatusForbidden {
		t.Fatalf("a token down-scoped to orders:write was %s on a rule requiring orders:read; want 403", v)
	}
	if over := f.token(t, key, "orders:read admin"); over.Status != http.StatusBadRequest || over.Error != "invalid_scope" {
		t.Fatalf("asking for more than granted: %s, want 400 invalid_scope", over)
	}

	// 3. Rotation: while the next key is published ahead (Next) the old
	// one signs; after it activates, the new one signs and the old one
	// (Retired) never does.
	// A request counts only if later than the active key's activation,
	// and RFC 3339 has whole seconds: wait for one to pass.
	sk := &gatehousev1.SigningKey{}
	framework.Eventually(t, "the active key's activation to be a second in the past", 30*time.Second, func() (bool, string) {
		if err := f.env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: "platform"}, sk); err != nil {
			return false, err.Error()
		}
		for _, k := range sk.Status.Keys {
			if k.Phase == gatehousev1.KeyPhaseActive && k.ActivatesAt != nil {
				return time.Since(k.ActivatesAt.Time) > 1100*time.Millisecond, k.ActivatesAt.String()
			}
		}
		return false, "no active key in status"
	})
	first := sk.Status.ActiveKeyID
	sk.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: time.Now().UTC().Format(time.RFC3339)}
	if err := f.env.Client.Update(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	type signed struct {
		kid string
		iat time.Time
	}
	var during []signed
	signedBy := func() string {
		tr := f.token(t, key, "")
		if tr.Status != http.StatusOK {
			t.Fatalf("token during rotation: %s", tr)
		}
		tokens = append(tokens, tr.AccessToken)
		m, err := jws.Parse([]byte(tr.AccessToken))
		if err != nil {
			t.Fatal(err)
		}
		tk, err := jwt.Parse([]byte(tr.AccessToken), jwt.WithVerify(false), jwt.WithValidate(false))
		if err != nil {
			t.Fatal(err)
		}
		kid := m.Signatures()[0].ProtectedHeaders().KeyID()
		during = append(during, signed{kid: kid, iat: tk.IssuedAt()})
		return kid
	}
	framework.Eventually(t, "the rotation to finish", 60*time.Second, func() (bool, string) {
		st := f.signingKeyStatus(t, "platform")
		kid := signedBy()
		return st.ActiveKeyID != first && phaseOf(st, first) == gatehousev1.KeyPhaseRetired && kid == st.ActiveKeyID, fmt.Sprintf("active %s, signed by %s", st.ActiveKeyID, kid)
	})
	// Judge every token by the operator's own key schedule (the private
	// Secret; the status may lag it by a reconcile). iat has whole
	// seconds: the key must have been Active at some instant of that
	// second.
	sec := &corev1.Secret{}
	if err := f.env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: keyring.SecretName("platform")}, sec); err != nil {
		t.Fatal(err)
	}
	ks, err := keyring.LoadKeySet(sec)
	if err != nil {
		t.Fatal(err)
	}
	kids := map[string]int{}
	for _, s := range during {
		k := ks.Key(s.kid)
		if k == nil {
			t.Fatalf("a token was signed by key %s, which the operator does not hold", s.kid)
		}
		if k.Phase(s.iat) != gatehousev1.KeyPhaseActive && k.Phase(s.iat.Add(999*time.Millisecond)) != gatehousev1.KeyPhaseActive {
			t.Fatalf("a token issued at %s was signed by key %s in phase %s", s.iat, s.kid, k.Phase(s.iat))
		}
		kids[s.kid]++
	}
	if len(kids) != 2 {
		t.Fatalf("tokens during the rotation were signed by %v; want the old and the new key", kids)
	}
	t.Logf("%d tokens during the rotation, by key: %v", len(during), kids)
	// The first token, signed by the now Retired key, still verifies.
	if v := f.check(t, bearer); !v.Allowed {
		t.Fatalf("the first token after the rotation: %s", v)
	}

	// 4. Disable the APIKey: the same unexpired token is denied, and the
	// endpoint refuses new ones.
	ak := &gatehousev1.APIKey{}
	if err := f.env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: "billing"}, ak); err != nil {
		t.Fatal(err)
	}
	ak.Spec.Disabled = true
	t0 := time.Now()
	if err := f.env.Client.Update(context.Background(), ak); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "the sidecar to deny the token of the disabled key", 10*time.Second, func() (bool, string) {
		v := f.check(t, bearer)
		return !v.Allowed && v.Status == http.StatusUnauthorized, v.String()
	})
	t.Logf("time from disabling the APIKey to the first deny of its token: %v", time.Since(t0))
	framework.Eventually(t, "the endpoint to refuse the disabled key", 10*time.Second, func() (bool, string) {
		tr := f.token(t, key, "")
		return tr.Status == http.StatusUnauthorized && tr.Error == "invalid_client", tr.String()
	})

	// 5. No key and no token in the logs or the Events.
	f.assertNoSecrets(t, append([]string{key}, tokens...))
}

func phaseOf(st gatehousev1.SigningKeyStatus, kid string) gatehousev1.KeyPhase {
	for _, k := range st.Keys {
		if k.KeyID == kid {
			return k.Phase
		}
	}
	return ""
}

// assertNoSecrets scans the logs and the namespace's Events for each
// secret and for its last 20 characters (a token's signature, a key's
// tail).
func (f *fixture) assertNoSecrets(t *testing.T, secrets []string) {
	t.Helper()
	ctx := context.Background()
	var events strings.Builder
	core := &corev1.EventList{}
	if err := f.env.Client.List(ctx, core, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	modern := &eventsv1.EventList{}
	if err := f.env.Client.List(ctx, modern, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{core, modern} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		events.Write(b)
	}
	logs := f.logs.String()
	if len(core.Items)+len(modern.Items) == 0 || !strings.Contains(logs, "token issued") {
		t.Fatalf("nothing to scan: %d events, logs without an issuance:\n%s", len(core.Items)+len(modern.Items), logs)
	}
	for _, s := range secrets {
		for _, needle := range []string{s, s[len(s)-20:]} {
			if strings.Contains(logs, needle) {
				t.Errorf("the logs contain a key or token (%d chars)", len(needle))
			}
			if strings.Contains(events.String(), needle) {
				t.Errorf("the Events contain a key or token (%d chars)", len(needle))
			}
		}
	}
	t.Logf("scanned %d bytes of logs and %d Events for %d secrets", len(logs), len(core.Items)+len(modern.Items), len(secrets))
}
