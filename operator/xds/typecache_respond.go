package xds

import (
	"context"
	"slices"
	"strconv"
	"strings"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// respond sends w what its client lacks, if anything (or an empty
// response when always is set), and reports whether it sent. Besides the
// names changed since w's map, it considers extra: the names w's request
// (un)subscribed, whose standing changed. It must be called with c.mu
// held.
func (c *typeCache) respond(w *watch, always bool, extra []string) bool {
	known := w.sub.ReturnedResources()
	seen, ours := c.seenBy(known)
	var names []string
	if ours && seen >= c.floor && !slices.Contains(extra, explicitWildcard) {
		names = append(c.changedSince(seen), extra...)
	} else {
		known = c.fresh(w.sub, known)
		names = c.allNames(w.sub, known)
	}
	var send []*discovery.Resource
	if len(known) == 0 {
		send = make([]*discovery.Resource, 0, len(names)) // a new client: most names are sent
	}
	var removed []string
	for _, name := range names {
		version, had := known[name]
		e, ok := c.resources[name]
		switch {
		case ok && c.wants(w.sub, name):
			if had && version == e.version {
				continue
			}
			send = append(send, e.wire)
			known[e.wire.Name] = e.version
		case had:
			removed = append(removed, name)
			delete(known, name)
		}
	}
	known[seqKey] = c.nonce + ":" + strconv.FormatUint(c.seq, 10)
	if len(send) == 0 && len(removed) == 0 && !always {
		return false
	}
	w.out <- &deltaResponse{
		req:  w.req,
		resp: &discovery.DeltaDiscoveryResponse{TypeUrl: c.typeURL, Resources: send, RemovedResources: removed, SystemVersionInfo: strconv.FormatUint(c.seq, 10)},
		next: known,
	}
	return true
}

// explicitWildcard is the name that subscribes to every resource.
const explicitWildcard = "*"

// seenBy reports the sequence a version map is current to, and whether
// this cache built it.
func (c *typeCache) seenBy(known map[string]string) (uint64, bool) {
	nonce, seq, ok := strings.Cut(known[seqKey], ":")
	if !ok || nonce != c.nonce {
		return 0, false
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	return n, err == nil
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
			name = e.wire.Name
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
