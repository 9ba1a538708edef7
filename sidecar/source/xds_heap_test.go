package source

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// BenchmarkHeapOfTheXDSState reports the live heap the xDS source and the
// snapshot hold once 100,000 APIKeyEntries (one key each, 1,000 per
// response, versions as long as the operator's) have been received and
// delivered, as benchmark metrics: MiB and bytes per key. Run with
//
//	go test -run '^$' -bench HeapOfTheXDSState -benchtime 1x ./sidecar/source/
func BenchmarkHeapOfTheXDSState(b *testing.B) {
	const n, perResponse = 100000, 1000
	responses := make([]*discovery.DeltaDiscoveryResponse, 0, n/perResponse)
	for i := 0; i < n; i += perResponse {
		r := &discovery.DeltaDiscoveryResponse{TypeUrl: xdsAPIKeyEntryType}
		for j := i; j < i+perResponse; j++ {
			k, _ := apikeyformat.Generate(rand.Reader)
			e := &xdsv1alpha1.APIKeyEntry{Name: fmt.Sprintf("key-%06d", j), Subject: "service:loadtest", Scopes: []string{"orders:read"},
				State: xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE, Keys: []*xdsv1alpha1.APIKeyHash{{KeyId: k.ID(), Sha256: make([]byte, 32)}}}
			a, _ := anypb.New(e)
			r.Resources = append(r.Resources, &discovery.Resource{Name: e.GetName(), Version: fmt.Sprintf("%064x", j), Resource: a})
		}
		responses = append(responses, r)
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for b.Loop() {
		base := heap()
		st := newXDSState("loadtest")
		builder := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "loadtest"})
		for _, r := range responses {
			st.apply(r)
		}
		st.apply(&discovery.DeltaDiscoveryResponse{TypeUrl: xdsIssuerKeySetType})
		st.apply(&discovery.DeltaDiscoveryResponse{TypeUrl: xdsAuthPolicyType})
		s := deliverXDSState(st, builder)
		live := heap() - base
		b.ReportMetric(float64(live)/(1<<20), "state-MiB")
		b.ReportMetric(float64(live)/n, "bytes/key")
		if s.KeyCount() != n {
			b.Fatalf("%d keys", s.KeyCount())
		}
		runtime.KeepAlive(st)
		runtime.KeepAlive(builder)
		runtime.KeepAlive(s)
	}
}

// deliverXDSState hands the state to the builder as the source does.
func deliverXDSState(st *xdsState, b *snapshot.Builder) *snapshot.Snapshot {
	d, _ := st.delta()
	return b.Apply(d)
}
