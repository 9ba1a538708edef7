package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// The namespaces: the sidecars' own, and another whose state no sidecar
// may receive.
const (
	simNS   = "sim"
	otherNS = "other"
	scope   = "orders:read"
)

// keyName is the i-th APIKey of namespace ns. Names and subjects carry the
// namespace, so that a sidecar can tell a foreign resource (belongs).
func keyName(ns string, i int) string { return fmt.Sprintf("%s-k-%06d", ns, i) }

func subjectOf(name string) string { return "service:" + name }

func policyName(ns string) string { return ns + "-policy" }

// createState creates in ns an AuthPolicy allowing scope on /orders/* for
// every pod, and keys APIKeys with that scope, workers at a time.
func createState(ctx context.Context, c client.Client, ns string, keys, workers int) error {
	pol := testfixture.Policy(ns, policyName(ns), time.Time{}, nil,
		gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{scope}})
	pol.CreationTimestamp = metav1.Time{}
	if err := c.Create(ctx, pol); err != nil {
		return fmt.Errorf("creating the AuthPolicy in %s: %w", ns, err)
	}
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < keys; i = int(next.Add(1) - 1) {
				name := keyName(ns, i)
				ak := &gatehousev1.APIKey{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec:       gatehousev1.APIKeySpec{Subject: subjectOf(name), Scopes: []string{scope}, SecretName: name + "-key"},
				}
				if err := c.Create(ctx, ak); err != nil {
					errs <- fmt.Errorf("creating APIKey %s/%s: %w", ns, name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// waitReconciled waits until the operator has reconciled every APIKey:
// its metrics first (cheap to poll), then one paginated LIST checking that
// every APIKey has a key in its status.
func waitReconciled(ctx context.Context, op *operatorProcess, c client.Client, total int, logf func(string, ...any)) error {
	last := time.Now()
	for {
		success, queued, err := op.reconciled(ctx)
		if err == nil && success >= float64(total) && queued == 0 {
			missing, err := unissued(ctx, c)
			if err != nil {
				return err
			}
			if len(missing) == 0 {
				return nil
			}
			logf("  %d APIKeys without a key yet, e.g. %s", len(missing), missing[0])
		}
		if time.Since(last) > 15*time.Second {
			logf("  reconciled %.0f of %d, %0.f queued", success, total, queued)
			last = time.Now()
		}
		if err := op.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the operator to reconcile %d APIKeys: %w", total, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// unissued lists every APIKey, 5,000 a page, and returns the names of
// those without a key ID in their status.
func unissued(ctx context.Context, c client.Client) ([]string, error) {
	var missing []string
	list := &gatehousev1.APIKeyList{}
	for cont := ""; ; cont = list.Continue {
		if err := c.List(ctx, list, client.Limit(5000), client.Continue(cont)); err != nil {
			return nil, fmt.Errorf("listing APIKeys: %w", err)
		}
		for i := range list.Items {
			if list.Items[i].Status.KeyID == "" {
				missing = append(missing, list.Items[i].Namespace+"/"+list.Items[i].Name)
			}
		}
		if list.Continue == "" {
			return missing, nil
		}
	}
}

// disableKey sets spec.disabled on the APIKey name of the sidecars'
// namespace (a merge patch of the spec, as a user would write it).
func disableKey(ctx context.Context, c client.Client, name string) error {
	ns := simNS
	ak := &gatehousev1.APIKey{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ak); err != nil {
		return err
	}
	base := ak.DeepCopy()
	ak.Spec.Disabled = true
	if err := c.Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("disabling APIKey %s/%s: %w", ns, name, err)
	}
	return nil
}
