package xds

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"gatehouse.dev/gatehouse/test/testenv"
)

// TestIntegrationOnePodsTokenHoldsABoundedNumberOfStreams plays a tenant
// holding one pod's projected token (a token of its ServiceAccount bound
// to a real Pod object, for the xDS audience) on a real API server: it
// opens many streams, each on its own connection. The operator holds
// DefaultMaxStreamsPerPod of them at any time (each newer one ends the
// oldest); another pod of the same ServiceAccount keeps its stream; a
// token of the ServiceAccount bound to no pod is refused.
func TestIntegrationOnePodsTokenHoldsABoundedNumberOfStreams(t *testing.T) {
	const streams = 20
	env, ns := testenv.Start(t)
	createKey(t, env, ns, "k1", "service:k1")
	srv, addr := startXDSServer(t, env)
	pod := env.Pod(t, ns, "attacker", "sidecar")
	token := env.PodToken(t, pod, DefaultAudience)

	t.Run("the API server's review names the pod the token is bound to", func(t *testing.T) {
		tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{DefaultAudience}}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := env.Client.Create(ctx, tr); err != nil {
			t.Fatal(err)
		}
		extra := tr.Status.User.Extra
		keys := make([]string, 0, len(extra))
		for k := range extra {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		t.Logf("status.user.extra keys: %v", keys) // names and UIDs, no token
		id, err := identityOf(tr, DefaultAudience)
		if err != nil || id.PodName != pod.Name || id.PodUID != string(pod.UID) || id.Namespace != ns {
			t.Fatalf("identity %+v, %v; want pod %s/%s (%s)", id, err, ns, pod.Name, pod.UID)
		}
	})

	neighbour := dial(t, addr, env.SidecarToken(t, ns, "sidecar", DefaultAudience), wildcard(nil))
	neighbour.next()

	opened := make([]*deltaClient, 0, streams)
	for range streams {
		c := dial(t, addr, token, wildcard(nil))
		c.next() // the newest stream is always served
		opened = append(opened, c)
	}
	t.Run("the operator holds the bound of the pod's streams, the newest", func(t *testing.T) {
		for i, c := range opened[:streams-DefaultMaxStreamsPerPod] {
			if err := c.streamError(); status.Code(err) != codes.Aborted {
				t.Fatalf("stream %d ended with %v, want Aborted", i, err)
			}
		}
		eventuallyHeld(t, srv, string(pod.UID), DefaultMaxStreamsPerPod)
		for _, c := range opened[streams-DefaultMaxStreamsPerPod:] {
			if err := c.stream.Send(issuerKeySetWildcard()); err != nil {
				t.Fatal(err)
			}
			c.next()
		}
	})

	t.Run("another pod of the same ServiceAccount keeps its stream", func(t *testing.T) {
		if err := neighbour.stream.Send(issuerKeySetWildcard()); err != nil {
			t.Fatal(err)
		}
		neighbour.next()
	})

	t.Run("a token of the ServiceAccount bound to no pod is refused", func(t *testing.T) {
		m := NewReviewMetrics(ctrlmetrics.Registry) // the counters Setup registered
		before := testutil.ToFloat64(m.reviews.WithLabelValues("not_pod_bound"))
		unbound := env.ServiceAccountToken(t, ns, "sidecar", DefaultAudience)
		if err := dial(t, addr, unbound, wildcard(nil)).streamError(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("stream ended with %v, want Unauthenticated", err)
		}
		if got := testutil.ToFloat64(m.reviews.WithLabelValues("not_pod_bound")) - before; got != 1 {
			t.Fatalf("%v reviews counted not_pod_bound, want 1", got)
		}
	})
}
