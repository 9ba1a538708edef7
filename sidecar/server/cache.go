package server

import (
	"encoding/binary"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

// defaultResponseCacheSize bounds the shared allow answers: enough for the
// identities active at once at a busy sidecar, small enough (about 1 KiB
// each) not to matter.
const defaultResponseCacheSize = 4096

// allowKey is everything a shared answer is made of: an allow's (identity,
// policy, rule, credential header) or, with denied set, a denial's (reason,
// status, challenge, Retry-After). It holds no credential: only what the
// answer itself carries.
type allowKey struct {
	reason                                  authz.Reason
	policy, rule, credentialHeader          string
	hasIdentity                             bool
	credential                              authz.CredentialKind
	subject, scopes, keyID, issuer, tokenID string

	denied                bool
	status                int
	challenge, retryAfter string
}

// appendTo appends an encoding of k to b that tells keys apart: every
// string with its length first, then the flags and the status. A map
// keyed by this one string hashes it once; keyed by allowKey itself, a
// look-up hashed its twelve strings one by one.
func (k *allowKey) appendTo(b []byte) []byte {
	for _, s := range [...]string{string(k.reason), k.policy, k.rule, k.credentialHeader, string(k.credential),
		k.subject, k.scopes, k.keyID, k.issuer, k.tokenID, k.challenge, k.retryAfter} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	var flags byte
	if k.hasIdentity {
		flags |= 1
	}
	if k.denied {
		flags |= 2
	}
	b = append(b, flags)
	return binary.AppendVarint(b, int64(k.status))
}

// keyBufferBytes is room on the stack for the usual encoded key; a longer
// one is encoded on the heap.
const keyBufferBytes = 512

// responseCache maps allow keys (encoded, appendTo) to their answers, and
// each answer to its wire encoding. When it is full, half of it is
// dropped (Go's map order picks which): simple, bounded, and cheap for the
// usual case of a working set that fits.
type responseCache struct {
	mu  sync.RWMutex
	m   map[string]*authv3.CheckResponse
	enc map[*authv3.CheckResponse]mem.BufferSlice
	max int
}

func newResponseCache(size int) *responseCache {
	return &responseCache{m: make(map[string]*authv3.CheckResponse), enc: make(map[*authv3.CheckResponse]mem.BufferSlice), max: size}
}

func (c *responseCache) get(k *allowKey) *authv3.CheckResponse {
	var buf [keyBufferBytes]byte
	key := k.appendTo(buf[:0])
	c.mu.RLock()
	r := c.m[string(key)] // no conversion: a look-up by the bytes
	c.mu.RUnlock()
	return r
}

// encoded is the wire encoding of an answer of the cache, nil for any
// other message. It is shared by every send of the answer: gRPC only reads
// it, and freeing a SliceBuffer does nothing.
func (c *responseCache) encoded(r *authv3.CheckResponse) mem.BufferSlice {
	c.mu.RLock()
	b := c.enc[r]
	c.mu.RUnlock()
	return b
}

func (c *responseCache) put(k *allowKey, r *authv3.CheckResponse) {
	// Encoded once here, outside the lock; an answer that does not encode
	// is still served, encoded by the codec each time (and failing there).
	b, err := proto.Marshal(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		n := len(c.m) / 2
		for old, resp := range c.m {
			if n == 0 {
				break
			}
			delete(c.enc, resp)
			delete(c.m, old)
			n--
		}
	}
	key := string(k.appendTo(nil))
	if prev, ok := c.m[key]; ok {
		delete(c.enc, prev)
	}
	c.m[key] = r
	if err == nil && r != nil {
		c.enc[r] = mem.BufferSlice{mem.SliceBuffer(b)}
	}
}

// GRPCCodec is the gRPC codec for a server of this Core (install it with
// grpc.ForceServerCodecV2): the standard protobuf codec, except that a
// shared allow answer is sent as the bytes it was encoded to when it was
// built, rather than encoded again for every check (those bytes are only
// read), and that a CheckRequest is decoded only as far as the sidecar
// reads it (decodeCheckRequest).
func (c *Core) GRPCCodec() encoding.CodecV2 {
	return checkCodec{base: encoding.GetCodecV2(grpcproto.Name), cache: c.allows}
}

type checkCodec struct {
	base  encoding.CodecV2
	cache *responseCache
}

func (c checkCodec) Name() string { return c.base.Name() }

func (c checkCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*authv3.CheckResponse); ok {
		if b := c.cache.encoded(r); b != nil {
			return b, nil
		}
	}
	return c.base.Marshal(v)
}

// Unmarshal decodes what the handler reads of a CheckRequest into a
// checkRequest (the server Register registers), a generated CheckRequest
// with decodeCheckRequest (only what the sidecar reads of it), and any
// other message with the standard codec.
func (c checkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v.(type) {
	case *checkRequest, *authv3.CheckRequest:
	default:
		return c.base.Unmarshal(data, v)
	}
	if len(data) == 1 {
		return decodeInto(data[0].ReadOnlyData(), v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return decodeInto(buf.ReadOnlyData(), v)
}

func decodeInto(b []byte, v any) error {
	if req, ok := v.(*checkRequest); ok {
		return decodeCheck(b, req)
	}
	return decodeCheckRequest(b, v.(*authv3.CheckRequest))
}
