package apikeys

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/owned"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) {
	// Components that log before (or without) the manager's logger use the
	// global one: capture it too, so that the log scan covers them.
	log.SetLogger(globalLog.logger())
	os.Exit(testenv.Main(m))
}

// globalLog holds what was logged through controller-runtime's global
// logger.
var globalLog = &logBuffer{}

// fixture drives the reconciler by hand against the real API server, with a
// fake clock: each test decides when time passes and when to reconcile.
type fixture struct {
	env *testenv.Env
	ns  string
	clk *clocktesting.FakeClock
	r   *Reconciler
	ctx context.Context
	log *logBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env, ns := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &fixture{env: env, ns: ns, clk: clocktesting.NewFakeClock(t0), log: &logBuffer{}}
	f.ctx = log.IntoContext(ctx, f.log.logger())
	f.r = &Reconciler{Client: env.Client, APIReader: env.Client, Scheme: env.Scheme, Recorder: newRecorder(t, env), Clock: f.clk}
	return f
}

// newRecorder sends Events to the API server, as the manager's does.
func newRecorder(t *testing.T, env *testenv.Env) events.EventRecorder {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Shutdown(); cancel() })
	return b.NewRecorder(env.Scheme, ControllerName)
}

func (f *fixture) create(t *testing.T, name string, mutate ...func(*gatehousev1.APIKey)) *gatehousev1.APIKey {
	t.Helper()
	ak := &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
		Spec:       gatehousev1.APIKeySpec{Subject: "service:" + name, Scopes: []string{"orders:read"}, SecretName: name + "-key"},
	}
	for _, m := range mutate {
		m(ak)
	}
	if err := f.env.Client.Create(f.ctx, ak); err != nil {
		t.Fatalf("creating apikey: %v", err)
	}
	return ak
}

func (f *fixture) reconcile(t *testing.T, name string) ctrl.Result {
	t.Helper()
	res, err := f.r.Reconcile(f.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: f.ns, Name: name}})
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return res
}

func (f *fixture) apiKey(t *testing.T, name string) *gatehousev1.APIKey {
	t.Helper()
	ak := &gatehousev1.APIKey{}
	if err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: name}, ak); err != nil {
		t.Fatalf("reading apikey: %v", err)
	}
	return ak
}

// update applies mutate to the APIKey as the user would, again on a fresh
// read when the controller's status write got in between.
func (f *fixture) update(t *testing.T, name string, mutate func(*gatehousev1.APIKey)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ak := f.apiKey(t, name)
		mutate(ak)
		return f.env.Client.Update(f.ctx, ak)
	}); err != nil {
		t.Fatalf("updating apikey: %v", err)
	}
}

// delivered returns the delivery Secret and the key it holds.
func (f *fixture) delivered(t *testing.T, secretName string) (*corev1.Secret, apikeyformat.Key) {
	t.Helper()
	// Status is written before the Secret, so a test that waited for
	// status may look a moment early: wait for the Secret too.
	sec := &corev1.Secret{}
	var k apikeyformat.Key
	framework.Eventually(t, "delivery Secret "+secretName+" to hold a key", 30*time.Second, func() (bool, string) {
		if err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: secretName}, sec); err != nil {
			return false, "reading delivery secret: " + err.Error()
		}
		var err error
		if k, err = apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey])); err != nil {
			return false, "the delivery secret holds no well-formed key: " + err.Error()
		}
		return true, ""
	})
	return sec, k
}

// record reads the APIKey and compiles what validators trust of it.
func (f *fixture) record(t *testing.T, apiKeyName string) (*gatehousev1.APIKey, *apikeyformat.Record) {
	t.Helper()
	ak := f.apiKey(t, apiKeyName)
	return ak, apikeyformat.RecordOf(ak)
}

// events lists the Events of the namespace, through both Event APIs.
func (f *fixture) events(t *testing.T) []string {
	t.Helper()
	var out []string
	ev := &eventsv1.EventList{}
	if err := f.env.Client.List(f.ctx, ev, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range ev.Items {
		out = append(out, e.Reason+": "+e.Note)
	}
	core := &corev1.EventList{}
	if err := f.env.Client.List(f.ctx, core, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range core.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

// waitForEvent waits until an Event with reason has been recorded (the
// recorder writes asynchronously).
func (f *fixture) waitForEvent(t *testing.T, reason string) {
	t.Helper()
	framework.Eventually(t, "a "+reason+" event", 20*time.Second, func() (bool, string) {
		evs := f.events(t)
		for _, e := range evs {
			if strings.HasPrefix(e, reason+": ") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("events: %q", evs)
	})
}

// dump serialises every Secret, ConfigMap, Event and APIKey of the
// namespace, for scanning.
func (f *fixture) dump(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, list := range []client.ObjectList{&corev1.SecretList{}, &corev1.ConfigMapList{}, &eventsv1.EventList{}, &corev1.EventList{}, &gatehousev1.APIKeyList{}} {
		if err := f.env.Client.List(f.ctx, list, client.InNamespace(f.ns)); err != nil {
			t.Fatal(err)
		}
		doc, err := json.Marshal(list)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(doc)
	}
	return buf.Bytes()
}

func condStatus(ak *gatehousev1.APIKey, typ string) (metav1.ConditionStatus, string) {
	for _, c := range ak.Status.Conditions {
		if c.Type == typ {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

// logBuffer captures everything logged through its logger.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// logger logs at every verbosity the operator allows, through SafeLogger
// as the operator does.
func (b *logBuffer) logger() logr.Logger {
	return SafeLogger(funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.buf.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{Verbosity: 10}))
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startManager runs the controller in a manager watching only ns, the way
// the operator runs it, and stops it when the test ends.
func startManager(t testing.TB, env *testenv.Env, ns string, r *Reconciler, logger logr.Logger, workers int) {
	t.Helper()
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 2000, 4000
	skip := true
	// The operator's cache: Secrets and ConfigMaps by the managed-by label.
	cacheOpts := owned.CacheOptions()
	cacheOpts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	mgr, err := ctrl.NewManager(&cfg, ctrl.Options{
		Scheme:     env.Scheme,
		Logger:     logger,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cacheOpts,
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		t.Fatalf("creating manager: %v", err)
	}
	if err := r.SetupWithManager(t.Context(), mgr, workers); err != nil {
		t.Fatalf("setting up controller: %v", err)
	}
	framework.StartManager(t, mgr)
}
