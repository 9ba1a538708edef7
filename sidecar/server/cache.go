package server

import (
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

// defaultResponseCacheSize bounds the shared allow answers: enough for the
// identities active at once at a busy sidecar, small enough (about 1 KiB
// each) not to matter.
const defaultResponseCacheSize = 4096

// allowKey is everything an allow answer is made of. It holds no
// credential: only what the answer itself carries.
type allowKey struct {
	reason                                  authz.Reason
	policy, rule, credentialHeader          string
	hasIdentity                             bool
	credential                              authz.CredentialKind
	subject, scopes, keyID, issuer, tokenID string
}

// responseCache maps allow keys to their answers. When it is full, half
// of it is dropped (Go's map order picks which): simple, bounded, and
// cheap for the usual case of a working set that fits.
type responseCache struct {
	mu  sync.RWMutex
	m   map[allowKey]*authv3.CheckResponse
	max int
}

func newResponseCache(size int) *responseCache {
	return &responseCache{m: make(map[allowKey]*authv3.CheckResponse), max: size}
}

func (c *responseCache) get(k *allowKey) *authv3.CheckResponse {
	c.mu.RLock()
	r := c.m[*k]
	c.mu.RUnlock()
	return r
}

func (c *responseCache) put(k *allowKey, r *authv3.CheckResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		n := len(c.m) / 2
		for old := range c.m {
			if n == 0 {
				break
			}
			delete(c.m, old)
			n--
		}
	}
	c.m[*k] = r
}
