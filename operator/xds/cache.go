package xds

import (
	"context"
	"slices"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Namespaces holds one typeCache per resource type per namespace, and
// routes every delta watch to the caches of one namespace: the one the
// server wrote into the request's node from the stream's authenticated
// identity (see callbacks). Resource versions are hashes of the content,
// so a client that reconnects, to this replica or another, with its
// initial_resource_versions gets only what changed.
//
// It serves delta watches only; state-of-the-world and fetch requests are
// refused.
type Namespaces struct {
	mu   sync.Mutex
	byNS map[string]map[string]*typeCache
}

var _ cache.Cache = (*Namespaces)(nil)

// NewNamespaces returns an empty set of caches.
func NewNamespaces() *Namespaces {
	return &Namespaces{byNS: map[string]map[string]*typeCache{}}
}

// Cache returns the cache of typeURL in namespace ns, creating it (empty)
// on first use. It returns nil for a type the server does not serve.
func (n *Namespaces) Cache(ns, typeURL string) *typeCache {
	if !slices.Contains(Types, typeURL) {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	caches := n.byNS[ns]
	if caches == nil {
		caches = make(map[string]*typeCache, len(Types))
		for _, t := range Types {
			caches[t] = newTypeCache(t)
		}
		n.byNS[ns] = caches
	}
	return caches[typeURL]
}

// Update puts resources into the cache of typeURL in ns and removes the
// names in toDelete. Clients are sent only the resources whose content
// changed.
func (n *Namespaces) Update(ns, typeURL string, toUpdate map[string]types.Resource, toDelete []string) error {
	c := n.Cache(ns, typeURL)
	if c == nil {
		return status.Errorf(codes.Internal, "unknown type %s", typeURL)
	}
	if len(toUpdate) == 0 && len(toDelete) == 0 {
		return nil
	}
	return c.UpdateResources(toUpdate, toDelete)
}

// CreateDeltaWatch implements cache.ConfigWatcher for the namespace the
// server recorded in the request's node; without one it refuses.
func (n *Namespaces) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, value chan cache.DeltaResponse) (func(), error) {
	ns := req.GetNode().GetCluster()
	if ns == "" {
		return nil, status.Error(codes.Unauthenticated, "stream has no namespace")
	}
	c := n.Cache(ns, req.GetTypeUrl())
	if c == nil {
		return nil, status.Errorf(codes.InvalidArgument, "unknown type %q", req.GetTypeUrl())
	}
	return c.CreateDeltaWatch(req, sub, value)
}

// errDeltaOnly refuses state-of-the-world and fetch requests.
var errDeltaOnly = status.Error(codes.Unimplemented, "gatehouse serves delta xDS only")

// CreateWatch implements cache.ConfigWatcher: state of the world is not
// served.
func (n *Namespaces) CreateWatch(*cache.Request, cache.Subscription, chan cache.Response) (func(), error) {
	return nil, errDeltaOnly
}

// Fetch implements cache.ConfigFetcher: not served.
func (n *Namespaces) Fetch(context.Context, *cache.Request) (cache.Response, error) {
	return nil, errDeltaOnly
}
