package xds

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
)

// watcher plays the delta server's part for one watch of typeCache: it
// keeps the subscription and takes the version map of every response.
type watcher struct {
	t   *testing.T
	c   *typeCache
	sub stream.Subscription
	out chan cache.DeltaResponse
}

func newClient(t *testing.T, c *typeCache, names []string, initial map[string]string) *watcher {
	t.Helper()
	cl := &watcher{t: t, c: c, sub: stream.NewDeltaSubscription(names, nil, initial, true), out: make(chan cache.DeltaResponse, 1)}
	cl.arm(&discovery.DeltaDiscoveryRequest{TypeUrl: c.typeURL, ResourceNamesSubscribe: names, InitialResourceVersions: initial})
	return cl
}

func (cl *watcher) arm(req *discovery.DeltaDiscoveryRequest) {
	cl.t.Helper()
	if _, err := cl.c.CreateDeltaWatch(req, &cl.sub, cl.out); err != nil {
		cl.t.Fatal(err)
	}
}

// ack re-arms the watch as an ACK (or a subscription change) does.
func (cl *watcher) ack(subscribe ...string) {
	cl.t.Helper()
	cl.sub.UpdateResourceSubscriptions(subscribe, nil)
	cl.arm(&discovery.DeltaDiscoveryRequest{TypeUrl: cl.c.typeURL, ResponseNonce: "1", ResourceNamesSubscribe: subscribe})
}

// take returns the names sent and removed by the pending response, or
// nils when there is none.
func (cl *watcher) take() (sent, removed []string) {
	cl.t.Helper()
	select {
	case r := <-cl.out:
		d, _ := r.GetDeltaDiscoveryResponse()
		for _, res := range d.GetResources() {
			sent = append(sent, res.GetName())
		}
		cl.sub.SetReturnedResources(r.GetNextVersionMap())
		slices.Sort(sent)
		return sent, d.GetRemovedResources()
	default:
		return nil, nil
	}
}

func put(t *testing.T, c *typeCache, subject string, names ...string) {
	t.Helper()
	m := map[string]types.Resource{}
	for _, n := range names {
		m[n] = &xdsv1alpha1.APIKeyEntry{Name: n, Subject: subject}
	}
	if err := c.UpdateResources(m, nil); err != nil {
		t.Fatal(err)
	}
}

func want(t *testing.T, what string, got, wanted []string) {
	t.Helper()
	if !slices.Equal(got, wanted) {
		t.Fatalf("%s = %v, want %v", what, got, wanted)
	}
}

func TestTypeCacheSendsWhatChanged(t *testing.T) {
	c := newTypeCache(APIKeyEntryType)
	put(t, c, "s", "a", "b", "c")
	cl := newClient(t, c, nil, nil)
	sent, _ := cl.take()
	want(t, "first response", sent, []string{"a", "b", "c"})
	cl.ack()
	put(t, c, "s2", "b")
	sent, _ = cl.take()
	want(t, "after one change", sent, []string{"b"})

	// Changes while the watch is not open reach it when it is re-armed.
	put(t, c, "s3", "c")
	if err := c.UpdateResources(nil, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	cl.ack()
	sent, removed := cl.take()
	want(t, "sent on re-arm", sent, []string{"c"})
	want(t, "removed on re-arm", removed, []string{"a"})

	// An update with the same content sends nothing.
	cl.ack()
	put(t, c, "s3", "c")
	if sent, removed := cl.take(); sent != nil || removed != nil {
		t.Fatalf("unchanged content sent %v, removed %v", sent, removed)
	}
}

func TestTypeCacheReconnectGetsTheDiffOnly(t *testing.T) {
	c := newTypeCache(APIKeyEntryType)
	put(t, c, "s", "a", "b", "c")
	first := newClient(t, c, []string{"*"}, nil)
	first.take()
	held := map[string]string{}
	for k, v := range first.sub.ReturnedResources() {
		held[k] = v
	}
	put(t, c, "s2", "b")
	if err := c.UpdateResources(nil, []string{"c"}); err != nil {
		t.Fatal(err)
	}
	held[seqKey] = held[seqKey] + "0" // a client cannot pass for the cache
	again := newClient(t, c, []string{"*"}, held)
	sent, removed := again.take()
	want(t, "sent on reconnect", sent, []string{"b"})
	want(t, "removed on reconnect", removed, []string{"c"})
}

func TestTypeCacheNamedSubscriptions(t *testing.T) {
	c := newTypeCache(APIKeyEntryType)
	put(t, c, "s", "a", "b")
	cl := newClient(t, c, []string{"a"}, nil)
	sent, _ := cl.take()
	want(t, "first response", sent, []string{"a"})
	cl.ack()
	put(t, c, "s2", "b")
	if sent, _ := cl.take(); sent != nil {
		t.Fatalf("a change to an unsubscribed name sent %v", sent)
	}
	cl.ack("b")
	sent, _ = cl.take()
	want(t, "after subscribing to b", sent, []string{"b"})
}

func TestTypeCacheOutlivesItsLog(t *testing.T) {
	c := newTypeCache(APIKeyEntryType)
	put(t, c, "s", "a", "b")
	cl := newClient(t, c, nil, nil)
	cl.take()
	for i := range 200 {
		put(t, c, fmt.Sprint(i), "b")
	}
	if c.floor == 0 {
		t.Fatal("the log was never cut")
	}
	cl.ack()
	sent, _ := cl.take()
	want(t, "after the log was cut", sent, []string{"b"})
}

// TestTypeCacheAReconnectingClientsMapHoldsTheCachesStrings: a client
// reconnects with a name and a version for every resource it holds; the
// version map the server keeps for its stream must hold the cache's own
// strings, not the ones decoded from the request (a copy of every name
// and version per stream). The response still sends only what changed.
func TestTypeCacheAReconnectingClientsMapHoldsTheCachesStrings(t *testing.T) {
	c := newTypeCache(APIKeyEntryType)
	put(t, c, "s", "a", "b", "c")
	first := newClient(t, c, []string{"*"}, nil)
	first.take()
	held := map[string]string{}
	for k, v := range first.sub.ReturnedResources() {
		if k != seqKey {
			held[strings.Clone(k)] = strings.Clone(v) // as decoded from a request
		}
	}
	put(t, c, "s2", "b")
	again := newClient(t, c, []string{"*"}, held)
	sent, _ := again.take()
	want(t, "sent on reconnect", sent, []string{"b"})
	kept := again.sub.ReturnedResources()
	if len(kept) != 4 { // a, b, c and seqKey
		t.Fatalf("the stream's map holds %d entries, want 4: %v", len(kept), kept)
	}
	for name, v := range kept {
		if name == seqKey {
			continue
		}
		e := c.resources[name]
		if v != e.version {
			t.Errorf("%s: the stream's map holds version %q, the cache %q", name, v, e.version)
		}
		if unsafe.StringData(name) != unsafe.StringData(e.wire.Name) {
			t.Errorf("%s: the stream's map holds a copy of the name", name)
		}
		if unsafe.StringData(v) != unsafe.StringData(e.version) {
			t.Errorf("%s: the stream's map holds a copy of the version", name)
		}
	}
}

// TestTypeCacheResponsesReturnWhatTheySend: GetReturnedResources (which
// go-control-plane's delta server does not use, and the cache builds only
// when asked) lists the names and versions a response sends.
func TestTypeCacheResponsesReturnWhatTheySend(t *testing.T) {
	c := newTypeCache(APIKeyEntryType)
	put(t, c, "s", "a", "b")
	cl := newClient(t, c, nil, nil)
	cl.take()
	cl.ack()
	put(t, c, "s2", "b")
	r := <-cl.out
	got := r.GetReturnedResources()
	if len(got) != 1 || got["b"] != c.resources["b"].version {
		t.Fatalf("returned %v, want only b at %s", got, c.resources["b"].version)
	}
}
