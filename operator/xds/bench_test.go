package xds

import (
	"fmt"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
)

// BenchmarkOneKeyChangeFanOut measures what the cache does for one
// APIKey change in a namespace of keys entries watched by watches
// sidecars (wildcard delta watches that hold every version): compute the
// one changed resource for each watch and hand it over. The gRPC send is
// not included; re-arming the watches after each response (what every
// client's ACK costs) is timed apart and reported as rearm-ns/op.
func BenchmarkOneKeyChangeFanOut(b *testing.B) {
	for _, size := range []struct{ keys, watches int }{{1000, 100}, {10000, 100}, {10000, 1000}} {
		b.Run(fmt.Sprintf("keys=%d/watches=%d", size.keys, size.watches), func(b *testing.B) {
			n := NewNamespaces()
			entries := make(map[string]types.Resource, size.keys)
			for i := range size.keys {
				ak := apiKey(fmt.Sprintf("key-%d", i), i)
				entries[ak.Name] = APIKeyEntry(ak)
			}
			if err := n.Update("shop", APIKeyEntryType, entries, nil); err != nil {
				b.Fatal(err)
			}
			// Each watch starts from a first response holding every
			// version, as a connected sidecar does.
			subs := make([]stream.Subscription, size.watches)
			out := make(chan cache.DeltaResponse, size.watches)
			req := &discovery.DeltaDiscoveryRequest{Node: &core.Node{Cluster: "shop"}, TypeUrl: APIKeyEntryType, ResourceNamesSubscribe: []string{"*"}}
			for i := range subs {
				subs[i] = stream.NewDeltaSubscription([]string{"*"}, nil, nil, true)
				if _, err := n.CreateDeltaWatch(req, &subs[i], out); err != nil {
					b.Fatal(err)
				}
				subs[i].SetReturnedResources((<-out).GetNextVersionMap())
			}
			// An ACK carries the nonce of the response it acknowledges;
			// without one a wildcard watch would be answered at once.
			ack := &discovery.DeltaDiscoveryRequest{Node: req.GetNode(), TypeUrl: APIKeyEntryType, ResponseNonce: "1"}
			ak := apiKey("key-7", 7)
			var rearm time.Duration
			b.ResetTimer()
			for i := range b.N {
				// Re-arming the watches (what each client's ACK does) is
				// timed apart: ReportMetric below.
				b.StopTimer()
				start := time.Now()
				for j := range subs {
					if _, err := n.CreateDeltaWatch(ack, &subs[j], out); err != nil {
						b.Fatal(err)
					}
				}
				rearm += time.Since(start)
				b.StartTimer()
				ak.Spec.Subject = fmt.Sprintf("service:%d", i)
				if err := n.Update("shop", APIKeyEntryType, map[string]types.Resource{"key-7": APIKeyEntry(ak)}, nil); err != nil {
					b.Fatal(err)
				}
				for j := range subs {
					r := <-out
					if d, _ := r.GetDeltaDiscoveryResponse(); len(d.GetResources()) != 1 {
						b.Fatalf("response holds %d resources, want 1", len(d.GetResources()))
					}
					subs[j].SetReturnedResources(r.GetNextVersionMap())
				}
			}
			b.ReportMetric(float64(rearm.Nanoseconds())/float64(b.N), "rearm-ns/op")
		})
	}
}
