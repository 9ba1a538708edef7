package webhook

import (
	"slices"
	"testing"
)

func TestDNSNamesIncludeExtraServices(t *testing.T) {
	o := Options{Namespace: "gatehouse", ServiceName: "gatehouse-webhook", ClusterDomain: "cluster.local", ExtraServiceNames: []string{"gatehouse-xds"}}
	got := o.dnsNames()
	for _, want := range []string{"gatehouse-webhook.gatehouse.svc", "gatehouse-xds", "gatehouse-xds.gatehouse.svc", "gatehouse-xds.gatehouse.svc.cluster.local"} {
		if !slices.Contains(got, want) {
			t.Errorf("dnsNames = %v, missing %s", got, want)
		}
	}
}
