package apikeys

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/owned"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

// TestIntegrationAFullScenarioReportsHandEditsAndLeaksNoKey runs the
// controller in a manager, as the operator does, through issuance, hand
// edits and deletions of the delivery Secret (reported, never trusted), a
// manual rotation, revocation and expiry; then greps everything the operator logged
// and every Event for every plaintext key it delivered.
func TestIntegrationAFullScenarioReportsHandEditsAndLeaksNoKey(t *testing.T) {
	f := newFixture(t)
	startManager(t, f.env, f.ns, &Reconciler{Clock: f.clk}, f.log.logger(), 2)
	const name, secretName = "scenario", "scenario-key"
	f.create(t, name, rotating(48*time.Hour, 24*time.Hour))

	var plaintexts []string
	// waitForKey waits until the delivery Secret and the status agree on a
	// current key other than notID, and returns it.
	waitForKey := func(notID string) apikeyformat.Key {
		t.Helper()
		var key apikeyformat.Key
		framework.Eventually(t, "the delivered key", 30*time.Second, func() (bool, string) {
			sec := &corev1.Secret{}
			if err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: secretName}, sec); err != nil {
				return false, err.Error()
			}
			k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey]))
			if err != nil {
				return false, "delivery secret holds no key"
			}
			ak, rec := f.record(t, name)
			if len(rec.Keys) == 0 {
				return false, "status lists no key"
			}
			if k.ID() == notID || rec.Keys[0].KeyID != k.ID() || rec.Keys[0].SHA256 != k.Hash() || ak.Status.KeyID != k.ID() ||
				string(sec.Data[gatehousev1.DeliveryKeyIDDataKey]) != k.ID() || sec.Annotations[AnnotationIssuedAt] == "" {
				return false, fmt.Sprintf("secret key %s, record %+v, status key %s", k.ID(), rec.Keys, ak.Status.KeyID)
			}
			key = k
			return true, ""
		})
		plaintexts = append(plaintexts, key.Plaintext())
		return key
	}
	waitForRecord := func(what string, ok func(*gatehousev1.APIKey, *apikeyformat.Record) bool) {
		t.Helper()
		framework.Eventually(t, what, 30*time.Second, func() (bool, string) {
			ak, rec := f.record(t, name)
			return ok(ak, rec), fmt.Sprintf("%s: %+v", what, ak.Status)
		})
	}
	k1 := waitForKey("")

	// A hand-edited delivery Secret is reported, not trusted: the key in
	// status stays valid, the planted one is refused.
	planted, _ := apikeyformat.Generate(rand.Reader)
	sec, _ := f.delivered(t, secretName)
	sec.Data[gatehousev1.DeliveryKeyDataKey] = []byte(planted.Plaintext())
	if err := f.env.Client.Update(f.ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitForRecord("report of an edited delivery Secret", func(ak *gatehousev1.APIKey, _ *apikeyformat.Record) bool {
		s, r := condStatus(ak, gatehousev1.ConditionDelivered)
		return s == metav1.ConditionFalse && r == gatehousev1.ReasonDeliverySecretChanged
	})
	if _, rec := f.record(t, name); rec.Check(k1, f.clk.Now()) != apikeyformat.Accepted || rec.Check(planted, f.clk.Now()) == apikeyformat.Accepted {
		t.Fatal("an edited delivery Secret changed which key is accepted")
	}

	// A manual rotation.
	f.clk.Step(time.Minute)
	f.update(t, name, func(ak *gatehousev1.APIKey) {
		ak.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: f.clk.Now().Format(time.RFC3339)}
	})
	k2 := waitForKey(k1.ID())

	// A hand-deleted delivery Secret is reported; a rotation delivers a new
	// key, and the old ones stay valid for their grace period.
	f.clk.Step(time.Minute)
	sec, _ = f.delivered(t, secretName)
	if err := f.env.Client.Delete(f.ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitForRecord("report of a deleted delivery Secret", func(ak *gatehousev1.APIKey, rec *apikeyformat.Record) bool {
		s, _ := condStatus(ak, gatehousev1.ConditionDelivered)
		return s == metav1.ConditionFalse && rec.Check(k2, f.clk.Now()) == apikeyformat.Accepted
	})
	f.update(t, name, func(ak *gatehousev1.APIKey) {
		ak.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: f.clk.Now().Format(time.RFC3339)}
	})
	k3 := waitForKey(k2.ID())
	_, rec := f.record(t, name)
	for _, k := range []apikeyformat.Key{k1, k2, k3} {
		if got := rec.Check(k, f.clk.Now()); got != apikeyformat.Accepted {
			t.Fatalf("key %s: %s, want all three keys valid within their grace", k.ID(), got)
		}
	}

	// Revocation, then expiry.
	f.update(t, name, func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true })
	waitForRecord("revocation", func(ak *gatehousev1.APIKey, _ *apikeyformat.Record) bool {
		return ak.Status.State == gatehousev1.APIKeyRevoked
	})
	f.update(t, name, func(ak *gatehousev1.APIKey) {
		ak.Spec.Disabled = false
		ak.Spec.ExpiresAt = &metav1.Time{Time: f.clk.Now()}
	})
	waitForRecord("expiry", func(ak *gatehousev1.APIKey, _ *apikeyformat.Record) bool {
		return ak.Status.State == gatehousev1.APIKeyExpired
	})

	for _, reason := range []string{gatehousev1.ReasonIssued, gatehousev1.ReasonRotated, gatehousev1.ReasonDeliverySecretChanged, gatehousev1.ReasonDisabled, gatehousev1.ReasonExpired} {
		f.waitForEvent(t, reason)
	}

	logs := f.log.String() + globalLog.String()
	evs := strings.Join(f.events(t), "\n")
	if !strings.Contains(logs, k3.ID()) || !strings.Contains(evs, k3.ID()) {
		t.Fatalf("the logs and Events should name key %s; the scan would prove nothing.\nlogs:\n%s\nevents:\n%s", k3.ID(), logs, evs)
	}
	var others bytes.Buffer
	for _, list := range []client.ObjectList{&corev1.ConfigMapList{}, &gatehousev1.APIKeyList{}} {
		if err := f.env.Client.List(f.ctx, list, client.InNamespace(f.ns)); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&others, "%+v", list)
	}
	for _, p := range plaintexts {
		for where, text := range map[string]string{"logs": logs, "events": evs, "records and APIKeys": others.String()} {
			if leaks(text, p) {
				t.Errorf("a plaintext key appears in the %s", where)
			}
		}
	}
	if len(plaintexts) != 3 {
		t.Fatalf("the scenario saw %d keys, want 3", len(plaintexts))
	}
}

// leaks reports whether text holds any recognisable piece of key: its
// secret part, hex encoded, or any 12 characters of the secret part in a row
// (client-go's hex dumps of protobuf bodies show 16 bytes a line).
func leaks(text, key string) bool {
	secretPart := key[len(apikeyformat.Prefix)+17 : len(apikeyformat.Prefix)+17+52]
	if strings.Contains(text, hex.EncodeToString([]byte(secretPart))[:24]) {
		return true
	}
	for i := 0; i+12 <= len(secretPart); i++ {
		if strings.Contains(text, secretPart[i:i+12]) {
			return true
		}
	}
	return false
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// scaleWorkers is the controller's concurrency in the scale test, as the
// operator's --apikey-workers default.
const scaleWorkers = 8

// TestIntegrationManyAPIKeysBecomeReady creates many APIKeys at once and
// measures how long until all are Ready with the controller running in a
// manager. It runs 500 keys by default; set GATEHOUSE_SCALE_KEYS=5000 for
// the full load test.
func TestIntegrationManyAPIKeysBecomeReady(t *testing.T) {
	n := 500
	if v := os.Getenv("GATEHOUSE_SCALE_KEYS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("GATEHOUSE_SCALE_KEYS=%q is not a positive number", v)
		}
	}
	env, ns := testenv.Start(t)
	quiet := funcr.New(func(string, string) {}, funcr.Options{})
	startManager(t, env, ns, &Reconciler{}, quiet, scaleWorkers)

	cfg := *env.Config
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.NewWithWatch(&cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n/50+60)*time.Second)
	defer cancel()

	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			return c.Create(gctx, &gatehousev1.APIKey{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("k%05d", i), Namespace: ns},
				Spec:       gatehousev1.APIKeySpec{Subject: fmt.Sprintf("service:%d", i), SecretName: fmt.Sprintf("k%05d-key", i)},
			})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("creating apikeys: %v", err)
	}
	created := time.Since(start)

	// Count Ready APIKeys from a list, then from a watch; the API server may
	// close a busy watch, so start over from a fresh list when it does.
	ready := map[string]bool{}
	note := func(ak *gatehousev1.APIKey) {
		if s, _ := condStatus(ak, gatehousev1.ConditionReady); s == metav1.ConditionTrue {
			ready[ak.Name] = true
		}
	}
	for len(ready) < n {
		list := &gatehousev1.APIKeyList{}
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			t.Fatalf("listing apikeys with %d of %d Ready after %v: %v", len(ready), n, time.Since(start), err)
		}
		for i := range list.Items {
			note(&list.Items[i])
		}
		if len(ready) == n {
			break
		}
		w, err := c.Watch(ctx, &gatehousev1.APIKeyList{}, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			t.Fatalf("watching apikeys: %v", err)
		}
		for open := true; open && len(ready) < n; {
			select {
			case <-ctx.Done():
				w.Stop()
				t.Fatalf("only %d of %d APIKeys Ready after %v", len(ready), n, time.Since(start))
			case ev, ok := <-w.ResultChan():
				open = ok
				if ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
					note(ev.Object.(*gatehousev1.APIKey))
				}
			}
		}
		w.Stop()
	}
	elapsed := time.Since(start)
	t.Logf("%d APIKeys: created in %v, all Ready %v after the first create (%.0f keys/s)", n, created.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())

	// Where the time went: reconciles by result, and their mean duration
	// (controller-runtime's metrics; other tests of this package add a few).
	if mfs, err := ctrlmetrics.Registry.Gather(); err == nil {
		var summary []string
		for _, mf := range mfs {
			switch mf.GetName() {
			case "controller_runtime_reconcile_total":
				for _, m := range mf.GetMetric() {
					if labelValue(m, "controller") == "apikey" && m.GetCounter().GetValue() > 0 {
						summary = append(summary, fmt.Sprintf("%s=%.0f", labelValue(m, "result"), m.GetCounter().GetValue()))
					}
				}
			case "controller_runtime_reconcile_time_seconds":
				for _, m := range mf.GetMetric() {
					if h := m.GetHistogram(); labelValue(m, "controller") == "apikey" && h.GetSampleCount() > 0 {
						summary = append(summary, fmt.Sprintf("mean reconcile %.1fms", 1000*h.GetSampleSum()/float64(h.GetSampleCount())))
					}
				}
			}
		}
		t.Logf("reconciles: %s", strings.Join(summary, ", "))
	}

	// Every one lists its hash in status.
	list := &gatehousev1.APIKeyList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if len(list.Items[i].Status.Keys) != 1 {
			t.Fatalf("APIKey %s lists %d keys in status", list.Items[i].Name, len(list.Items[i].Status.Keys))
		}
	}
}

// TestIntegrationDeletingTheObjectThatBlocksANameResolvesTheConflict checks
// that freeing the name issues the key without any change to the APIKey,
// although the operator's cache never shows the Secret that held it.
func TestIntegrationDeletingTheObjectThatBlocksANameResolvesTheConflict(t *testing.T) {
	cases := []struct {
		name       string
		blocker    func(ns string) client.Object
		wantReason string
	}{
		{"A foreign Secret under the delivery name blocks until it is deleted.", func(ns string) client.Object {
			return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "blocked-key", Namespace: ns}, StringData: map[string]string{"a": "b"}}
		}, gatehousev1.ReasonSecretConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			// The operator's cache holds only its own Secrets: the blocker's
			// deletion is found by the re-check of the taken name.
			startManager(t, f.env, f.ns, &Reconciler{Clock: f.clk, ConflictRecheck: 2 * time.Second}, f.log.logger(), 1)
			blocker := tc.blocker(f.ns)
			if err := f.env.Client.Create(f.ctx, blocker); err != nil {
				t.Fatal(err)
			}
			f.create(t, "blocked")
			waitForReady := func(want metav1.ConditionStatus, reason string) {
				t.Helper()
				framework.Eventually(t, "Ready="+string(want)+" "+reason, 30*time.Second, func() (bool, string) {
					s, r := condStatus(f.apiKey(t, "blocked"), gatehousev1.ConditionReady)
					return s == want && r == reason, fmt.Sprintf("Ready=%s/%s", s, r)
				})
			}
			waitForReady(metav1.ConditionFalse, tc.wantReason)
			if err := f.env.Client.Delete(f.ctx, blocker); err != nil {
				t.Fatal(err)
			}
			waitForReady(metav1.ConditionTrue, gatehousev1.ReasonIssued)
			f.delivered(t, "blocked-key")
			f.record(t, "blocked")
		})
	}
}

// TestIntegrationUnderTheManagerNoPlaintextKeyOutlivesItsDeliveryName runs
// the stale-delivery clean-up the way the operator runs it, through the
// manager's cache and its index of Secrets by controlling APIKey: a renamed
// delivery Secret and one left by a switch to a caller-supplied hash are
// deleted, and Secrets the APIKey does not control (one carrying its labels,
// one of another APIKey) are kept.
func TestIntegrationUnderTheManagerNoPlaintextKeyOutlivesItsDeliveryName(t *testing.T) {
	f := newFixture(t)
	startManager(t, f.env, f.ns, &Reconciler{Clock: f.clk}, f.log.logger(), 2)
	f.create(t, "other")
	f.delivered(t, "other-key")
	f.create(t, "mv")
	f.delivered(t, "mv-key")
	// Labelled as the operator labels mv's Secrets, so that a selection by
	// label would find it, but controlled by nothing.
	lookalike := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "mv-lookalike", Namespace: f.ns, Labels: owned.Labels(f.apiKey(t, "mv"), nil)},
		Type:       DeliverySecretType,
	}
	if err := f.env.Client.Create(f.ctx, lookalike); err != nil {
		t.Fatal(err)
	}

	gone := func(name string) {
		t.Helper()
		framework.Eventually(t, "Secret "+name+" to be deleted", 30*time.Second, func() (bool, string) {
			err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: name}, &corev1.Secret{})
			return apierrors.IsNotFound(err), fmt.Sprintf("reading it: %v", err)
		})
	}
	f.update(t, "mv", func(ak *gatehousev1.APIKey) { ak.Spec.SecretName = "mv-key-2" })
	f.delivered(t, "mv-key-2")
	gone("mv-key")

	minted, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.update(t, "mv", func(ak *gatehousev1.APIKey) {
		ak.Spec.SecretName = ""
		ak.Spec.Hash = &gatehousev1.APIKeyHash{KeyID: minted.ID(), SHA256: minted.Hash()}
	})
	gone("mv-key-2")

	for _, name := range []string{"mv-lookalike", "other-key"} {
		if err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: name}, &corev1.Secret{}); err != nil {
			t.Errorf("Secret %s, not controlled by APIKey mv, was touched: %v", name, err)
		}
	}
}
