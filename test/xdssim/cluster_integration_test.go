package xdssim_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/controllers/apikeys"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// keyName is the name of APIKey i of ns: names and subjects carry the
// namespace, so that a resource of another namespace is recognisable.
func keyName(ns string, i int) string { return fmt.Sprintf("%s-k-%04d", ns, i) }

// belongsTo says a resource belongs to ns by its name and, for an API key
// entry, its subject.
func belongsTo(ns string) func(string, string, proto.Message) bool {
	return func(_, name string, msg proto.Message) bool {
		if e, ok := msg.(*xdsv1alpha1.APIKeyEntry); ok && !strings.HasPrefix(e.GetSubject(), "service:"+ns+"-") {
			return false
		}
		return strings.HasPrefix(name, ns+"-")
	}
}

// startAPIKeyController runs the operator's APIKey controller on
// namespaces, with workers reconcilers and the operator's default client
// rate (cmd/gatehouse: --kube-api-qps 100, --kube-api-burst 200; the test
// client's default of 20 made reconciling 2,300 keys take 80 s).
func startAPIKeyController(t *testing.T, env *testenv.Env, workers int, namespaces ...string) {
	t.Helper()
	skip := true
	byNS := map[string]cache.Config{}
	for _, ns := range namespaces {
		byNS[ns] = cache.Config{}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 100, 200
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: env.Scheme, Logger: testr.NewWithOptions(t, testr.Options{Verbosity: -1}).WithName("operator"),
		Metrics: metricsserver.Options{BindAddress: "0"}, Cache: cache.Options{DefaultNamespaces: byNS},
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&apikeys.Reconciler{}).SetupWithManager(t.Context(), mgr, workers); err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)
}

// createNamespaceState creates the AuthPolicy of ns (orders:read on
// /orders/*) and k APIKeys with that scope, from a few goroutines.
func createNamespaceState(t *testing.T, env *testenv.Env, ns string, k int) {
	t.Helper()
	pol := testfixture.Policy(ns, ns+"-policy", time.Time{}, nil,
		gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}})
	pol.CreationTimestamp = metav1.Time{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	const writers = 16
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < k; i += writers {
				name := keyName(ns, i)
				ak := &gatehousev1.APIKey{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec:       gatehousev1.APIKeySpec{Subject: "service:" + name, Scopes: []string{"orders:read"}, SecretName: name + "-key"},
				}
				if err := env.Client.Create(ctx, ak); err != nil {
					errs <- fmt.Errorf("creating APIKey %s: %w", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// waitReconciled waits until the operator has issued a key to every
// APIKey of ns.
func waitReconciled(t *testing.T, env *testenv.Env, ns string, k int) {
	t.Helper()
	framework.Eventually(t, "the operator to issue every key of "+ns, 3*time.Minute, func() (bool, string) {
		var list gatehousev1.APIKeyList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		issued := 0
		for i := range list.Items {
			if list.Items[i].Status.KeyID != "" {
				issued++
			}
		}
		return issued == k, fmt.Sprintf("%d of %d issued", issued, k)
	})
}

// deliveredKey is the plaintext key the operator delivered for APIKey
// name of ns.
func deliveredKey(t *testing.T, env *testenv.Env, ns, name string) apikeyformat.Key {
	t.Helper()
	sec := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name + "-key"}, sec); err != nil {
		t.Fatal(err)
	}
	k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey]))
	if err != nil {
		t.Fatalf("the delivery Secret of %s holds no key: %v", name, err)
	}
	return k
}

// replica is one operator replica's xDS server, with a manager and an
// informer cache of its own, on a fixed loopback address.
type replica struct {
	t    *testing.T
	env  *testenv.Env
	tls  *tls.Config
	addr string
	stop func()
}

func startReplica(t *testing.T, env *testenv.Env, serverTLS *tls.Config, addr string) *replica {
	t.Helper()
	r := &replica{t: t, env: env, tls: serverTLS, addr: addr}
	r.start()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *replica) start() {
	t := r.t
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	mgr, err := ctrl.NewManager(r.env.Config, ctrl.Options{
		Scheme: r.env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Logger: testr.NewWithOptions(t, testr.Options{Verbosity: -1}),
	})
	if err != nil {
		t.Fatal(err)
	}
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 0}).WithName("xds-" + r.addr)
	if _, err := xds.Setup(context.Background(), mgr, xds.Options{Listener: ln, TLS: r.tls, Log: log}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("replica %s: %v", r.addr, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("replica %s did not stop within 30s", r.addr)
			}
		})
	}
}

// restart stops the replica and starts a new one on the same address.
func (r *replica) restart() {
	r.stop()
	r.start()
}
