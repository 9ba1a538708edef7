package testenv

import (
	"context"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// EditAPIKey reads the APIKey ns/name with the test's admin identity,
// applies edit to it and writes the difference back as a merge patch (of
// the spec and metadata; status is the operator's).
func (e *Env) EditAPIKey(t testing.TB, ns, name string, edit func(*gatehousev1.APIKey)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ak := &gatehousev1.APIKey{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ak); err != nil {
		t.Fatal(err)
	}
	base := ak.DeepCopy()
	edit(ak)
	if err := e.Client.Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

// DisableAPIKey sets spec.disabled on the APIKey ns/name.
func (e *Env) DisableAPIKey(t testing.TB, ns, name string) {
	t.Helper()
	e.EditAPIKey(t, ns, name, func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true })
}
