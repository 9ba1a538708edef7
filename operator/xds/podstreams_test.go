package xds

import (
	"context"
	"maps"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// startBoundServer serves an empty namespace ns, admitting every stream
// as the pod its token names (anyToken), with the default bound on
// streams per pod, and counting replaced streams on its own registry.
func startBoundServer(t *testing.T, caches *Namespaces, ns string) (*Server, string, *streamMetrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv := &Server{Caches: caches, Reviewer: anyToken{ns: ns}, Metrics: reg, Log: testr.New(t)}
	addr := serve(t, srv)
	return srv, addr, newStreamMetrics(reg)
}

// eventuallyHeld waits until the server holds want streams of the pod
// with UID uid (their handlers still running), failing after 30s.
func eventuallyHeld(t *testing.T, srv *Server, uid string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for got := srv.podBound().held(uid); got != want; got = srv.podBound().held(uid) {
		if time.Now().After(deadline) {
			t.Fatalf("the server holds %d streams of pod %s, want %d", got, uid, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAPodsNewestStreamReplacesItsOldest: one pod may hold
// DefaultMaxStreamsPerPod streams; one more is served and ends the pod's
// oldest (Aborted), so that a sidecar reconnecting while its old
// connection is half-dead is never locked out. Another pod of the same
// ServiceAccount is not affected.
func TestAPodsNewestStreamReplacesItsOldest(t *testing.T) {
	if DefaultMaxStreamsPerPod != 2 {
		t.Fatalf("the test is written for a bound of 2, not %d", DefaultMaxStreamsPerPod)
	}
	const ns = "shop"
	srv, addr, m := startBoundServer(t, NewNamespaces(), ns)
	replaced := func() float64 { return testutil.ToFloat64(m.replacedStreams.WithLabelValues(ns)) }

	// Each stream is answered before the next is opened: streams on
	// separate connections reach the server in no fixed order, and the
	// test needs first to be the oldest.
	first := dial(t, addr, "pod-a", wildcard(nil))
	first.next()
	second := dial(t, addr, "pod-a", wildcard(nil))
	second.next()
	other := dial(t, addr, "pod-b", wildcard(nil))
	other.next()
	if got := replaced(); got != 0 {
		t.Fatalf("%v streams replaced at the bound, want 0", got)
	}

	third := dial(t, addr, "pod-a", wildcard(nil))
	third.next()
	if err := first.streamError(); status.Code(err) != codes.Aborted {
		t.Fatalf("the oldest stream of pod-a ended with %v, want Aborted", err)
	}
	if got := replaced(); got != 1 {
		t.Fatalf("%v streams replaced, want 1", got)
	}
	eventuallyHeld(t, srv, "uid-pod-a", 2)
	eventuallyHeld(t, srv, "uid-pod-b", 1)

	// The streams left are still served: a second type is answered on
	// each, the other pod's included.
	for name, c := range map[string]*deltaClient{"second": second, "third": third, "pod-b": other} {
		if err := c.stream.Send(issuerKeySetWildcard()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c.next()
	}
}

// TestAClosedStreamFreesItsPodsSlot: a stream the client closes no longer
// counts, so the pod's next stream replaces nothing.
func TestAClosedStreamFreesItsPodsSlot(t *testing.T) {
	const ns = "shop"
	srv, addr, m := startBoundServer(t, NewNamespaces(), ns)
	first, second := dial(t, addr, "pod-a", wildcard(nil)), dial(t, addr, "pod-a", wildcard(nil))
	first.next()
	second.next()
	first.close()
	eventuallyHeld(t, srv, "uid-pod-a", 1)

	third := dial(t, addr, "pod-a", wildcard(nil))
	third.next()
	if got := testutil.ToFloat64(m.replacedStreams.WithLabelValues(ns)); got != 0 {
		t.Fatalf("%v streams replaced after one was closed, want 0", got)
	}
	if err := second.stream.Send(issuerKeySetWildcard()); err != nil {
		t.Fatal(err)
	}
	second.next()
	eventuallyHeld(t, srv, "uid-pod-a", 2)
}

// TestAReplacedStreamThatDoesNotReadIsReleased: a client that never
// reads leaves the server's first response (the whole namespace) blocked
// in Send on flow control. Replacing that stream must still end it and
// free what it holds, or a pod could pile up such streams past its bound.
func TestAReplacedStreamThatDoesNotReadIsReleased(t *testing.T) {
	const ns, keys = "big", 2000
	caches := namespaceOfKeys(t, ns, keys)
	srv, addr, _ := startBoundServer(t, caches, ns)
	// stuck subscribes and never reads: its answer (some 600 kB) is ten
	// times its flow-control window.
	stuck := dialNotReading(t, addr, "pod-a", wildcard(nil))
	eventuallyHeld(t, srv, "uid-pod-a", 1)
	held := versionsOf(t, caches, ns)
	for range DefaultMaxStreamsPerPod {
		// Holding every version, they are answered with nothing new.
		dial(t, addr, "pod-a", wildcard(maps.Clone(held))).next()
	}
	eventuallyHeld(t, srv, "uid-pod-a", DefaultMaxStreamsPerPod)
	// Reading now, it gets what was sent before the end, then why.
	var err error
	for err == nil {
		_, err = stuck.Recv()
	}
	if status.Code(err) != codes.Aborted {
		t.Fatalf("the stream that did not read ended with %v, want Aborted", err)
	}
}

// dialNotReading opens a stream for token, sends first and returns the
// stream without reading from it. Its windows are fixed at 64 KiB (no
// BDP-driven growth), so the server's answer soon waits on flow control.
func dialNotReading(t *testing.T, addr, token string, first *discovery.DeltaDiscoveryRequest) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = conn.Close() })
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(first); err != nil {
		t.Fatal(err)
	}
	return st
}

// issuerKeySetWildcard subscribes to every IssuerKeySet.
func issuerKeySetWildcard() *discovery.DeltaDiscoveryRequest {
	return &discovery.DeltaDiscoveryRequest{TypeUrl: IssuerKeySetType, ResourceNamesSubscribe: []string{"*"}}
}

// TestAStreamBoundToNoPodIsRefused: the bound counts streams per pod, so
// an identity that names none (a reviewer other than KubeTokenReviewer
// could return one) is refused, not counted nowhere.
func TestAStreamBoundToNoPodIsRefused(t *testing.T) {
	_, addr, _ := startBoundServer(t, NewNamespaces(), "shop")
	if err := dial(t, addr, unboundToken, wildcard(nil)).streamError(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream ended with %v, want Unauthenticated", err)
	}
}
