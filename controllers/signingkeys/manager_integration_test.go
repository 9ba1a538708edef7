package signingkeys

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/operator/discovery"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

// startManager runs the controller and the discovery server in a real
// manager watching ns, and returns the discovery base URL.
func startManager(t *testing.T, env *testenv.Env, ns string) string {
	t.Helper()
	return startManagerWith(t, env, "", ns)
}

// startManagerWith is startManager with an issuer prefix, watching the
// namespaces given.
func startManagerWith(t *testing.T, env *testenv.Env, prefix keyring.IssuerPrefix, namespaces ...string) string {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: watched(namespaces)},
		// Several tests of this process run a manager each.
		Controller: config.Controller{SkipNameValidation: &skipNameValidation},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Reconciler{IssuerPrefix: prefix}).SetupWithManager(t.Context(), mgr); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(&discovery.Server{Listener: ln, Reader: mgr.GetClient(), Log: mgr.GetLogger(), IssuerPrefix: prefix}); err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)
	return "http://" + ln.Addr().String()
}

func fetch(t *testing.T, url, host, ifNoneMatch string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", ifNoneMatch)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body), res.Header.Get("ETag")
}

var skipNameValidation = true

func watched(namespaces []string) map[string]cache.Config {
	out := map[string]cache.Config{}
	for _, ns := range namespaces {
		out[ns] = cache.Config{}
	}
	return out
}

// TestIntegrationManagerRepairsHandEditsAndServesDiscovery runs the
// controller in a manager with its watches: the discovery server answers
// from the status in the cache, and a deleted Secret is replaced with a
// KeyLost Event while the lost key stays published.
func TestIntegrationManagerRepairsHandEditsAndServesDiscovery(t *testing.T) {
	env, ns := testenv.Start(t)
	base := startManager(t, env, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	sk := &gatehousev1.SigningKey{}
	sk.Namespace, sk.Name = ns, "served"
	sk.Spec.Issuer = "https://" + ns + ".example.com/auth"
	if err := c.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	var original string
	framework.Eventually(t, "Ready and a published JWKS", eventuallyTimeout, func() (bool, string) {
		got := &gatehousev1.SigningKey{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(sk), got); err != nil {
			return false, err.Error()
		}
		original = got.Status.JWKS
		return conditions.IsTrue(got.Status.Conditions, gatehousev1.ConditionReady) && hasKid([]byte(original), got.Status.ActiveKeyID),
			fmt.Sprintf("conditions %+v, jwks %s", got.Status.Conditions, original)
	})

	host := ns + ".example.com"
	// Discovery serves from the manager's cache, which may see the status a
	// moment after the API server answered the test.
	var etag string
	framework.Eventually(t, "discovery to serve the status's JWKS", eventuallyTimeout, func() (bool, string) {
		status, body, tag := fetch(t, base+"/auth"+discovery.JWKSPath, host, "")
		etag = tag
		return status == 200 && body == original && etag != "", fmt.Sprintf("jwks over http: %d %q etag %q, want the status's %q", status, body, etag, original)
	})
	if status, _, _ := fetch(t, base+"/auth"+discovery.JWKSPath, host, etag); status != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag: %d, want 304", status)
	}
	if status, body, _ := fetch(t, base+"/auth"+discovery.ConfigurationPath, host, ""); status != 200 || !strings.Contains(body, `"jwks_uri":"https://`+host+`/auth/.well-known/jwks.json"`) {
		t.Fatalf("discovery over http: %d %s", status, body)
	}

	before := &gatehousev1.SigningKey{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(sk), before); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: keyring.SecretName(sk.Name)}, sec); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, sec); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "a new active key and a KeyLost Event after the Secret was deleted", eventuallyTimeout, func() (bool, string) {
		got := &gatehousev1.SigningKey{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(sk), got); err != nil {
			return false, err.Error()
		}
		evs := &eventsv1.EventList{}
		if err := c.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		lostEvent := false
		for _, e := range evs.Items {
			if e.Reason == gatehousev1.ReasonKeyLost && e.Type == corev1.EventTypeWarning && e.Regarding.Name == sk.Name {
				lostEvent = true
			}
		}
		doc := []byte(got.Status.JWKS)
		ok := got.Status.ActiveKeyID != "" && got.Status.ActiveKeyID != before.Status.ActiveKeyID &&
			hasKid(doc, got.Status.ActiveKeyID) && hasKid(doc, before.Status.ActiveKeyID) && lostEvent
		return ok, fmt.Sprintf("active %q (was %q), KeyLost event %v, jwks %s", got.Status.ActiveKeyID, before.Status.ActiveKeyID, lostEvent, doc)
	})
	status, body, newTag := fetch(t, base+"/auth"+discovery.JWKSPath, host, etag)
	if status != 200 || newTag == etag || body == original {
		t.Fatalf("after the key loss the served JWKS did not change: %d etag %q", status, newTag)
	}
}

// eventuallyTimeout bounds every wait of these tests: a reconcile or two on
// a loaded machine.
const eventuallyTimeout = 20 * time.Second
