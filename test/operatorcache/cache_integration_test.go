// Package operatorcache measures what the operator's cache holds in a
// cluster full of other people's Secrets. It is a package of its own so
// that its operator is the only one in the test binary (controller names
// are process-wide).
package operatorcache_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	operatorapp "gatehouse.dev/gatehouse/operator/app"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// unrelatedSecrets is how many 10 KiB Secrets the cache test creates;
// GATEHOUSE_UNRELATED_SECRETS=10000 measures the figure (slow).
func unrelatedSecrets(t *testing.T) int {
	n := 300
	if v := os.Getenv("GATEHOUSE_UNRELATED_SECRETS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("GATEHOUSE_UNRELATED_SECRETS=%q: %v", v, err)
		}
	}
	return n
}

// createUnrelatedSecrets creates n Secrets of 10 KiB that Gatehouse has
// nothing to do with, a few at a time.
func createUnrelatedSecrets(t *testing.T, c client.Client, ns string, n int) {
	t.Helper()
	payload := []byte(strings.Repeat("x", 10<<10))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := c.Create(ctx, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("unrelated-%05d", i)},
					Data:       map[string][]byte{"blob": payload},
				})
				cancel()
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("creating unrelated secrets: %v", err)
	default:
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestIntegrationTheOperatorCachesOnlyTheSecretsAndConfigMapsItWrote
// guards #11: the operator cached every Secret and ConfigMap of the
// cluster, so its memory grew with other people's data.
func TestIntegrationTheOperatorCachesOnlyTheSecretsAndConfigMapsItWrote(t *testing.T) {
	env, ns := testenv.Start(t)
	n := unrelatedSecrets(t)
	start := time.Now()
	createUnrelatedSecrets(t, env.Client, ns, n)
	t.Logf("created %d unrelated 10 KiB Secrets in %v", n, time.Since(start).Round(time.Millisecond))

	signer := testfixture.NewSigner(t, jwa.ES256)
	userJWKS := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "partner-jwks"},
		Data:       map[string]string{"jwks.json": testfixture.JWKS(t, signer)},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, userJWKS); err != nil {
		t.Fatal(err)
	}

	before := heapInUse()
	o := operatorapp.Options{MetricsAddr: "0", ProbeAddr: "0", DiscoveryAddr: "0", APIKeyWorkers: 2, Logger: testr.New(t)}
	o.Webhook.BindAddress = "0"
	mgr, err := operatorapp.New(ctx, env.Config, o)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("operator: %v", err)
		}
	})
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("the operator's cache did not sync")
	}

	// What the operator writes is cached: an APIKey's delivery Secret.
	if err := env.Client.Create(ctx, &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "billing"},
		Spec:       gatehousev1.APIKeySpec{Subject: "service:billing", SecretName: "billing-key"},
	}); err != nil {
		t.Fatal(err)
	}
	// A user's ConfigMap named by an AuthPolicy is read uncached.
	policy := testfixture.Policy(ns, "partner", time.Time{}, []gatehousev1.TrustedIssuer{{
		Name: "partner", Issuer: "https://partner.example.com",
		JWKS: &gatehousev1.StaticJWKS{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: userJWKS.Name}, Key: "jwks.json",
		}},
	}}, gatehousev1.Rule{Match: gatehousev1.RuleMatch{Paths: []string{"/*"}}})
	policy.CreationTimestamp = metav1.Time{}
	if err := env.Client.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}

	cached := func() (secrets, configMaps []string) {
		sl, cl := &corev1.SecretList{}, &corev1.ConfigMapList{}
		if err := mgr.GetCache().List(ctx, sl, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if err := mgr.GetCache().List(ctx, cl, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, s := range sl.Items {
			secrets = append(secrets, s.Name)
		}
		for _, c := range cl.Items {
			configMaps = append(configMaps, c.Name)
		}
		return secrets, configMaps
	}
	framework.Eventually(t, "the delivery Secret in the cache and the AuthPolicy accepted", 30*time.Second, func() (bool, string) {
		secrets, _ := cached()
		p := &gatehousev1.AuthPolicy{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "partner"}, p); err != nil {
			return false, err.Error()
		}
		ready := apimeta.FindStatusCondition(p.Status.Conditions, gatehousev1.ConditionReady)
		ok := slices.Contains(secrets, "billing-key") && ready != nil && ready.Status == metav1.ConditionTrue
		return ok, fmt.Sprintf("%d cached secrets (billing-key among them: %v), policy Ready %+v", len(secrets), slices.Contains(secrets, "billing-key"), ready)
	})
	after := heapInUse()
	t.Logf("heap after the operator started beside %d unrelated 10 KiB Secrets: %+d KiB (before %d KiB, after %d KiB)",
		n, (int64(after)-int64(before))>>10, before>>10, after>>10)

	secrets, configMaps := cached()
	unrelated := 0
	for _, name := range secrets {
		if strings.HasPrefix(name, "unrelated-") {
			unrelated++
		}
	}
	if unrelated > 0 {
		t.Errorf("the cache holds %d of the %d unrelated Secrets", unrelated, n)
	}
	for _, name := range configMaps {
		if name == userJWKS.Name || name == "kube-root-ca.crt" {
			t.Errorf("the cache holds ConfigMap %s, which the operator did not write", name)
		}
	}
	all := &corev1.SecretList{}
	if err := mgr.GetCache().List(ctx, all); err != nil {
		t.Fatal(err)
	}
	unlabelled := 0
	for _, s := range all.Items {
		if s.Labels[gatehousev1.LabelManagedBy] != gatehousev1.ManagedByValue {
			unlabelled++
		}
	}
	if unlabelled > 0 {
		t.Errorf("the cache holds %d Secrets without the managed-by label", unlabelled)
	}
}
