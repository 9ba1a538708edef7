package xds

import (
	"context"
	"slices"
	"strconv"
	"strings"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// respond sends w what its client lacks, if anything (or an empty
// response when always is set), and reports whether it sent. Besides the
// names changed since w's map, it considers extra: the names w's request
// (un)subscribed, whose standing changed. It must be called with c.mu
// held. It fails for a compact map behind the log: what its client holds
// is no longer known, and the client must reconnect with its versions.
//
// A wildcard watch's client holds, after any response, exactly the
// cache's resources at that sequence, so the map handed back for it is
// compact: the sequence alone (see compactMap), not a name and a version
// per resource for every stream.
func (c *typeCache) respond(w *watch, always bool, extra []string) (bool, error) {
	known := w.sub.ReturnedResources()
	st := c.stateOf(known)
	if st.compact && st.seq < c.floor {
		return false, errBehind
	}
	if st.compact && !w.sub.IsWildcard() {
		c.materialize(known, st.seq)
		st.compact = false
	}
	var names []string
	var changed map[string]bool
	// update: whether known is kept, updated as responses go out; a
	// wildcard watch that sends is handed a compact map instead.
	update := !st.compact
	switch {
	case st.compact:
		names, changed = c.changedSinceHeld(st.seq)
		for name := range known {
			if name != seqKey {
				names = append(names, name)
			}
		}
		names = dedup(append(names, extra...))
	case st.ours && st.seq >= c.floor && !slices.Contains(extra, explicitWildcard):
		names = dedup(append(c.changedSince(st.seq), extra...))
	case w.sub.IsWildcard():
		// A map from elsewhere, read only: if nothing is sent, it is
		// exactly what the client holds; if something is, the watch is
		// handed a compact map.
		names = c.allNames(w.sub, known)
		update = false
	default:
		known = c.fresh(w.sub, known)
		names = c.allNames(w.sub, known)
	}
	held := c.heldBy(known, st.compact, changed, unsubscribed(w, extra))
	var kept map[string]string
	if update {
		kept = known
	}
	send, removed := c.diff(w.sub, names, held, kept)
	if len(send) == 0 && len(removed) == 0 && !always {
		// Nothing is sent: the client is current to c.seq, and the watch
		// stays open with its map updated in place.
		known[seqKey] = c.marker(c.seq, st.compact)
		w.seq = c.seq
		return false, nil
	}
	next := known
	if w.sub.IsWildcard() {
		next = c.compactMap()
	} else {
		known[seqKey] = c.marker(c.seq, false)
	}
	w.out <- &deltaResponse{
		req:  w.req,
		resp: &discovery.DeltaDiscoveryResponse{TypeUrl: c.typeURL, Resources: send, RemovedResources: removed, SystemVersionInfo: strconv.FormatUint(c.seq, 10)},
		next: next,
	}
	return true, nil
}

// diff returns the resources of names the client lacks and the names it
// holds that it should not, given what it holds (held); kept, unless nil,
// is updated to what it holds once they are sent.
func (c *typeCache) diff(sub cache.Subscription, names []string, held func(string) (string, bool), kept map[string]string) ([]*discovery.Resource, []string) {
	// Sized for every name: a new client is sent most of them, and the
	// slice only lives until the response is sent.
	send := make([]*discovery.Resource, 0, len(names))
	var removed []string
	for _, name := range names {
		version, had := held(name)
		e, ok := c.resources[name]
		switch {
		case ok && c.wants(sub, name):
			if had && version == e.version {
				continue
			}
			send = append(send, e.wire)
			if kept != nil {
				kept[e.wire.GetName()] = e.version
			}
		case had:
			removed = append(removed, name)
			if kept != nil {
				delete(kept, name)
			}
		}
	}
	return send, removed
}

// errBehind ends a stream whose client fell behind the change log while
// it held a compact map (it did not ACK for more changes than the log
// keeps): its client reconnects with the versions it holds.
var errBehind = status.Error(codes.Aborted, "the stream fell behind the server's changes; reconnect with the versions held")

// explicitWildcard is the name that subscribes to every resource.
const explicitWildcard = "*"

// mapState is what a version map's seqKey says.
type mapState struct {
	seq     uint64
	ours    bool // this cache built the map
	compact bool // the client holds every resource as of seq, but for the names the map lists
}

// compactMark ends the seqKey of a compact map.
const compactMark = ":*"

// marker is the seqKey entry of a map current to seq.
func (c *typeCache) marker(seq uint64, compact bool) string {
	m := c.nonce + ":" + strconv.FormatUint(seq, 10)
	if compact {
		m += compactMark
	}
	return m
}

// compactMap is the version map of a wildcard client that holds every
// resource as of now.
func (c *typeCache) compactMap() map[string]string {
	return map[string]string{seqKey: c.marker(c.seq, true)}
}

// stateOf reads the seqKey of a version map: only maps this cache built
// carry its nonce (which never leaves the process), so a map a client
// sent is never taken for one.
func (c *typeCache) stateOf(known map[string]string) mapState {
	nonce, rest, ok := strings.Cut(known[seqKey], ":")
	if !ok || nonce != c.nonce {
		return mapState{}
	}
	seq, compact := strings.CutSuffix(rest, compactMark)
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return mapState{}
	}
	return mapState{seq: n, ours: true, compact: compact}
}

// heldBy returns what the client of known holds of a name: its version
// ("" when unknown, so that it is sent again) and whether it holds it. A
// compact map lists only the names go-control-plane marked (unsubscribed
// while wildcard, version ""); of the others, a name changed since the
// map's sequence is held at an unknown version if it existed then, and a
// name unchanged at the cache's version. A name the request unsubscribed
// and the map does not list is not held (go-control-plane deletes it from
// a full map, so that it is sent again while the wildcard still wants it).
func (c *typeCache) heldBy(known map[string]string, compact bool, changed, unsub map[string]bool) func(string) (string, bool) {
	return func(name string) (string, bool) {
		if v, ok := known[name]; ok {
			return v, true
		}
		if !compact || unsub[name] {
			return "", false
		}
		if existed, ok := changed[name]; ok {
			return "", existed
		}
		e, ok := c.resources[name]
		return e.version, ok
	}
}

// unsubscribed returns the names w's request unsubscribed, when extra
// (the names it (un)subscribed) is being considered.
func unsubscribed(w *watch, extra []string) map[string]bool {
	if len(extra) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, name := range w.req.GetResourceNamesUnsubscribe() {
		out[name] = true
	}
	return out
}

// materialize turns a compact map, current to seq, into a full one in
// place, for a watch that left the wildcard.
func (c *typeCache) materialize(known map[string]string, seq uint64) {
	_, changed := c.changedSinceHeld(seq)
	for name, e := range c.resources {
		if _, listed := known[name]; !listed {
			if _, ok := changed[name]; !ok {
				known[e.wire.GetName()] = e.version
			}
		}
	}
	for name, existed := range changed {
		if _, listed := known[name]; !listed && existed {
			known[name] = ""
		}
	}
	known[seqKey] = c.marker(seq, false)
}

// changedSinceHeld returns the names changed after seq, each once, and
// for each whether it existed at seq.
func (c *typeCache) changedSinceHeld(seq uint64) ([]string, map[string]bool) {
	var names []string
	existed := map[string]bool{}
	for i := len(c.log) - 1; i >= 0 && c.log[i].seq > seq; i-- {
		ch := c.log[i]
		if _, dup := existed[ch.name]; !dup {
			names = append(names, ch.name)
		}
		existed[ch.name] = ch.existed // the oldest change after seq says last
	}
	return names, existed
}

// dedup removes repeated names, keeping the first.
func dedup(names []string) []string {
	seen := make(map[string]bool, len(names))
	out := names[:0]
	for _, name := range names {
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

// changedSince returns the names changed after seq, each once.
func (c *typeCache) changedSince(seq uint64) []string {
	var names []string
	dup := map[string]bool{}
	for i := len(c.log) - 1; i >= 0 && c.log[i].seq > seq; i-- {
		if name := c.log[i].name; !dup[name] {
			dup[name] = true
			names = append(names, name)
		}
	}
	return names
}

// fresh copies a version map that came from elsewhere, once, so that the
// cache may update it in place from then on. The copy holds the cache's
// own strings wherever the client's are equal to them (a reconnecting
// client sends a name and a version for every resource it holds; the
// strings decoded from its request are not kept). It is sized for what
// the watch may hold: every resource for a wildcard watch, the names it
// subscribed to and holds otherwise.
func (c *typeCache) fresh(sub cache.Subscription, known map[string]string) map[string]string {
	size := len(known)
	if sub.IsWildcard() {
		size = max(size, len(c.resources))
	} else {
		size += len(sub.SubscribedResources())
	}
	out := make(map[string]string, size+1)
	for name, v := range known {
		if name == seqKey {
			continue
		}
		if e, ok := c.resources[name]; ok {
			name = e.wire.GetName()
			if v == e.version {
				v = e.version
			}
		}
		out[name] = v
	}
	return out
}

// allNames returns every name the watch may hear of: the resources it
// wants and the names its client holds.
func (c *typeCache) allNames(sub cache.Subscription, known map[string]string) []string {
	names := make([]string, 0, len(c.resources)+len(known))
	for name := range c.resources {
		if c.wants(sub, name) {
			names = append(names, name)
		}
	}
	for name := range known {
		if name == seqKey {
			continue
		}
		if _, ok := c.resources[name]; !ok || !c.wants(sub, name) {
			names = append(names, name)
		}
	}
	return names
}

func (c *typeCache) wants(sub cache.Subscription, name string) bool {
	if sub.IsWildcard() {
		return true
	}
	_, ok := sub.SubscribedResources()[name]
	return ok
}

// deltaResponse is a response built by typeCache; the server sets its
// nonce, so each watch gets its own message (the resources are shared).
type deltaResponse struct {
	req  *cache.DeltaRequest
	resp *discovery.DeltaDiscoveryResponse
	next map[string]string
}

var _ cache.DeltaResponse = (*deltaResponse)(nil)

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discovery.DeltaDiscoveryResponse, error) {
	return r.resp, nil
}
func (r *deltaResponse) GetDeltaRequest() *discovery.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                 { return r.resp.GetSystemVersionInfo(), nil }
func (r *deltaResponse) GetResponseVersion() string                        { return r.resp.GetSystemVersionInfo() }
func (r *deltaResponse) GetNextVersionMap() map[string]string              { return r.next }
func (r *deltaResponse) GetContext() context.Context                       { return context.Background() }

// GetReturnedResources returns the names and versions the response
// sends. go-control-plane's delta server (v0.14) never asks for them (it
// keeps GetNextVersionMap), so the map is built only when asked: built
// for every response, the first one's held every resource again.
func (r *deltaResponse) GetReturnedResources() map[string]string {
	out := make(map[string]string, len(r.resp.GetResources()))
	for _, res := range r.resp.GetResources() {
		out[res.GetName()] = res.GetVersion()
	}
	return out
}
