package xds

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// seqKey is the entry of a version map, never a resource name, that holds
// the change sequence the map is current to, as this cache's nonce, ":"
// and the number. Only maps this cache built carry its nonce, so a map a
// client sent (initial_resource_versions) is always diffed in full.
const seqKey = " seq"

// typeCache holds the resources of one type in one namespace and answers
// delta watches with what changed since a watch's version map. Every
// change gets the next sequence number, logged with its name; a watch
// whose map is current to sequence s is sent the names logged after s
// only, so one change costs O(changed names) per watch, not O(resources).
// A map from elsewhere (a new or reconnecting client) is diffed against
// every resource once.
//
// The version map the cache hands out (GetNextVersionMap) to a wildcard
// watch is compact: after a response its client holds exactly the
// cache's resources at that sequence, so the map holds the sequence alone
// (and whatever go-control-plane marks in it), not a name and a version
// per resource for every stream; a change log entry says whether the
// name existed before, so that such a client is sent the removal of what
// it held only. A named watch gets the map it came with, updated in
// place. The server keeps the map as the stream's state and touches it
// only while no watch of the stream is open, and the cache only while one
// is (under mu).
type typeCache struct {
	typeURL string
	nonce   string

	mu        sync.Mutex
	resources map[string]entry
	seq       uint64
	floor     uint64 // the log holds every change after floor
	log       []change
	watches   map[*watch]struct{}
}

type entry struct {
	res     types.Resource
	version string
	wire    *discovery.Resource
}

type change struct {
	seq  uint64
	name string
	// existed tells whether name was held before this change: a wildcard
	// client current to a sequence before it held the name then.
	existed bool
}

type watch struct {
	req *cache.DeltaRequest
	sub cache.Subscription
	out chan cache.DeltaResponse
	seq uint64 // the sequence its client is current to, while it is open
}

func newTypeCache(typeURL string) *typeCache {
	return &typeCache{typeURL: typeURL, nonce: rand.Text(), resources: map[string]entry{}, watches: map[*watch]struct{}{}}
}

// GetResources returns the resources held, by name.
func (c *typeCache) GetResources() map[string]types.Resource {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]types.Resource, len(c.resources))
	for name, e := range c.resources {
		out[name] = e.res
	}
	return out
}

// UpdateResources puts toUpdate and removes toDelete, then answers every
// open watch that the change concerns.
func (c *typeCache) UpdateResources(toUpdate map[string]types.Resource, toDelete []string) error {
	entries := make(map[string]entry, len(toUpdate))
	for name, r := range toUpdate {
		e, err := newEntry(name, r)
		if err != nil {
			return err
		}
		entries[name] = e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, e := range entries {
		old, existed := c.resources[name]
		if existed && old.version == e.version {
			continue
		}
		c.resources[name] = e
		c.logChange(name, existed)
	}
	for _, name := range toDelete {
		if _, ok := c.resources[name]; ok {
			delete(c.resources, name)
			c.logChange(name, true)
		}
	}
	for w := range c.watches {
		// An open watch is never behind the log (see logChange), so
		// respond does not fail here.
		if sent, _ := c.respond(w, false, nil); sent {
			delete(c.watches, w)
		}
	}
	return nil
}

// logChange records a change of name; the log is cut to its newer half
// once it outgrows the resources, and watches older than that are then
// diffed in full, or (when their maps are compact) ended. It is not cut
// past an open watch, which is answered once the change is complete.
func (c *typeCache) logChange(name string, existed bool) {
	c.seq++
	c.log = append(c.log, change{seq: c.seq, name: name, existed: existed})
	if len(c.log) > 2*len(c.resources)+64 {
		half := len(c.log) / 2
		floor := c.log[half-1].seq
		for w := range c.watches {
			if w.seq < floor {
				return
			}
		}
		c.floor = floor
		c.log = append([]change(nil), c.log[half:]...)
	}
}

func newEntry(name string, r types.Resource) (entry, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return entry{}, err
	}
	sum := sha256.Sum256(b)
	version := hex.EncodeToString(sum[:])
	a := &anypb.Any{TypeUrl: "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName()), Value: b}
	return entry{res: r, version: version, wire: &discovery.Resource{Name: name, Version: version, Resource: a}}, nil
}

// CreateDeltaWatch answers at once when the client lacks something (or,
// for a wildcard watch's first request, always), else keeps the watch
// open until a change concerns it.
func (c *typeCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	w := &watch{req: req, sub: sub, out: out}
	c.mu.Lock()
	defer c.mu.Unlock()
	extra := slices.Concat(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	sent, err := c.respond(w, sub.IsWildcard() && req.GetResponseNonce() == "", extra)
	if sent || err != nil {
		return nil, err
	}
	c.watches[w] = struct{}{}
	return func() {
		c.mu.Lock()
		delete(c.watches, w)
		c.mu.Unlock()
	}, nil
}
