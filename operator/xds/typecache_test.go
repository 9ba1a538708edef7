package xds

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
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
// held is what its client holds, applied from the responses.
type watcher struct {
	t    *testing.T
	c    *typeCache
	sub  stream.Subscription
	out  chan cache.DeltaResponse
	held map[string]string
}

func newClient(t *testing.T, c *typeCache, names []string, initial map[string]string) *watcher {
	t.Helper()
	cl := connect(c, names, initial)
	cl.t = t
	cl.arm(&discovery.DeltaDiscoveryRequest{TypeUrl: c.typeURL, ResourceNamesSubscribe: names, InitialResourceVersions: initial})
	return cl
}

// connect is a new stream's watcher whose client holds initial, not yet
// armed.
func connect(c *typeCache, names []string, initial map[string]string) *watcher {
	held := map[string]string{}
	for k, v := range initial {
		held[k] = v
	}
	return &watcher{c: c, sub: stream.NewDeltaSubscription(names, nil, initial, true), out: make(chan cache.DeltaResponse, 1), held: held}
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
			cl.held[res.GetName()] = res.GetVersion()
		}
		for _, name := range d.GetRemovedResources() {
			delete(cl.held, name)
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
	held := first.held
	put(t, c, "s2", "b")
	if err := c.UpdateResources(nil, []string{"c"}); err != nil {
		t.Fatal(err)
	}
	held[seqKey] = first.sub.ReturnedResources()[seqKey] + "0" // a client cannot pass for the cache
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

// TestTypeCacheOutlivesItsLog: a client that does not ACK for more
// changes than the log keeps is diffed in full against its full version
// map (a named subscription), or, holding a compact one (the wildcard),
// has its stream ended, and reconnects with the versions it holds.
func TestTypeCacheOutlivesItsLog(t *testing.T) {
	c := newTypeCache(APIKeyEntryType)
	put(t, c, "s", "a", "b")
	named := newClient(t, c, []string{"a", "b"}, nil)
	named.take()
	wild := newClient(t, c, nil, nil)
	wild.take()
	for i := range 200 {
		put(t, c, fmt.Sprint(i), "b")
	}
	if c.floor == 0 {
		t.Fatal("the log was never cut")
	}
	named.ack()
	sent, _ := named.take()
	want(t, "after the log was cut", sent, []string{"b"})

	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: c.typeURL, ResponseNonce: "1"}
	if _, err := c.CreateDeltaWatch(ack, &wild.sub, wild.out); !errors.Is(err, errBehind) {
		t.Fatalf("a wildcard client behind the log was re-armed with %v, want errBehind", err)
	}
	again := newClient(t, c, nil, wild.held)
	sent, _ = again.take()
	want(t, "reconnected after the log was cut", sent, []string{"b"})
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
	for k, v := range first.held {
		held[strings.Clone(k)] = strings.Clone(v) // as decoded from a request
	}
	put(t, c, "s2", "b")
	again := newClient(t, c, []string{"a", "b", "c"}, held) // a named subscription keeps a full map
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
		if unsafe.StringData(name) != unsafe.StringData(e.wire.GetName()) {
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

// TestTypeCacheClientsEndHoldingWhatTheyWant runs seeded random sequences
// of changes, removals (names come back), contents changed back,
// ACKs held back until the log is cut, reconnections with the versions
// held, new subscriptions and wildcard clients turning to names, for
// wildcard and named clients. Whenever a
// client's watch is open, what it holds (applied from the responses) is
// what the cache holds of what it wants, and no response removes a name
// its client does not hold.
func TestTypeCacheClientsEndHoldingWhatTheyWant(t *testing.T) {
	pool := []string{"a", "b", "c", "d", "e", "f"}
	for seed := range int64(200) {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		c := newTypeCache(APIKeyEntryType)
		type client struct {
			w     *watcher
			names []string // nil: the wildcard
			idle  bool     // took a response, not ACKed yet
			lag   int      // steps to stay idle
		}
		var clients []*client
		for i := range 4 {
			var names []string
			if i%2 == 1 {
				names = []string{pool[rng.IntN(len(pool))]}
			}
			w := connect(c, names, nil)
			w.t = t
			w.arm(&discovery.DeltaDiscoveryRequest{TypeUrl: c.typeURL, ResourceNamesSubscribe: names})
			clients = append(clients, &client{w: w, names: names})
		}
		for step := range 300 {
			switch rng.IntN(3) {
			case 0:
				put(t, c, fmt.Sprint(rng.IntN(3)), pool[rng.IntN(len(pool))], pool[rng.IntN(len(pool))])
			case 1:
				if err := c.UpdateResources(nil, []string{pool[rng.IntN(len(pool))]}); err != nil {
					t.Fatal(err)
				}
			}
			for _, cl := range clients {
				takeChecked(t, cl.w, seed, step)
				if len(cl.w.out) == 0 && !cl.idle && !c.isOpen(cl.w) {
					cl.idle = true
					if rng.IntN(10) == 0 {
						cl.lag = rng.IntN(200)
					}
				}
				if !cl.idle {
					continue
				}
				if cl.lag > 0 {
					cl.lag--
					continue
				}
				cl.idle = false
				var subscribe, unsubscribe []string
				switch {
				case cl.names != nil && rng.IntN(5) == 0:
					subscribe = []string{pool[rng.IntN(len(pool))]}
					cl.names = append(cl.names, subscribe...)
				case cl.names == nil && rng.IntN(30) == 0: // leaves the wildcard
					subscribe, unsubscribe = []string{pool[rng.IntN(len(pool))]}, []string{"*"}
					cl.names = subscribe
				}
				reconnect := rng.IntN(20) == 0
				if !reconnect {
					cl.w.sub.UpdateResourceSubscriptions(subscribe, unsubscribe)
					_, err := c.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{TypeUrl: c.typeURL, ResponseNonce: "1", ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe}, &cl.w.sub, cl.w.out)
					reconnect = errors.Is(err, errBehind)
					if err != nil && !reconnect {
						t.Fatal(err)
					}
				}
				if reconnect {
					w := connect(c, cl.names, cl.w.held)
					w.t = t
					w.arm(&discovery.DeltaDiscoveryRequest{TypeUrl: c.typeURL, ResourceNamesSubscribe: cl.names, InitialResourceVersions: maps.Clone(cl.w.held)})
					cl.w = w
				}
			}
			for i, cl := range clients {
				if len(cl.w.out) == 0 && c.isOpen(cl.w) {
					if got, wanted := cl.w.held, c.wanted(cl.names); !maps.Equal(got, wanted) {
						t.Fatalf("seed %d step %d: client %d (names %v) holds %v, the cache has %v", seed, step, i, cl.names, got, wanted)
					}
				}
			}
		}
	}
}

// takeChecked takes w's pending response, if any, and fails if it removes
// a name w's client does not hold.
func takeChecked(t *testing.T, w *watcher, seed int64, step int) {
	t.Helper()
	select {
	case r := <-w.out:
		w.out <- r
	default:
		return
	}
	before := maps.Clone(w.held)
	_, removed := w.take()
	for _, name := range removed {
		if _, ok := before[name]; !ok {
			t.Fatalf("seed %d step %d: removed %s, which the client does not hold (%v)", seed, step, name, before)
		}
	}
}

// isOpen reports whether w's watch is open in c.
func (c *typeCache) isOpen(w *watcher) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for open := range c.watches {
		if open.out == w.out {
			return true
		}
	}
	return false
}

// wanted is what c holds of names (nil: every name), by version.
func (c *typeCache) wanted(names []string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for name, e := range c.resources {
		if names == nil || slices.Contains(names, name) {
			out[name] = e.version
		}
	}
	return out
}
