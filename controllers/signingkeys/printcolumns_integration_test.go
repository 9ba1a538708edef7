package signingkeys

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// TestIntegrationGetShowsTheNextRotationTime asks the API server for the
// table kubectl get prints. The next rotation lies in the future, which a
// type=date column would print as <invalid>: the column shows the time.
func TestIntegrationGetShowsTheNextRotationTime(t *testing.T) {
	h := newHarness(t)
	h.clock.SetTime(time.Now().UTC().Truncate(time.Second))
	h.create("table", gatehousev1.SigningKeySpec{Issuer: "https://issuer.example.com", Rotation: rotation(time.Hour, 10*time.Minute, 5*time.Minute)})
	h.reconcile("table")
	next := h.get("table").Status.NextRotationTime
	if next == nil || !next.After(time.Now()) {
		t.Fatalf("nextRotationTime = %v, want a time in the future", next)
	}

	cs, err := kubernetes.NewForConfig(h.env.Config)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.Discovery().RESTClient().Get().
		AbsPath("/apis", gatehousev1.GroupVersion.Group, gatehousev1.GroupVersion.Version, "namespaces", h.ns, "signingkeys", "table").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		DoRaw(h.ctx())
	if err != nil {
		t.Fatalf("getting the table: %v", err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatalf("decoding the table: %v", err)
	}
	col := slices.IndexFunc(table.ColumnDefinitions, func(c metav1.TableColumnDefinition) bool { return c.Name == "Next Rotation" })
	if col < 0 || len(table.Rows) != 1 {
		t.Fatalf("want one row with a Next Rotation column, got %+v", table)
	}
	if got, want := table.Rows[0].Cells[col], next.UTC().Format(time.RFC3339); got != want {
		t.Fatalf("Next Rotation shows %v, want %q", got, want)
	}
}
