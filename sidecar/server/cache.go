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

// responseCache maps allow keys (encoded, appendTo) to their answers'
// wire encodings. It keeps only those bytes, not the messages they were
// encoded from: a CheckResponse with its identity headers and metadata is
// about 25 objects full of pointers, and with a thousand identities the
// garbage collector's marking of those trees nearly doubled the cost of a
// collection (docs/performance.md, "Seventh pass"). When it is full, half
// of it is dropped (Go's map order picks which): simple, bounded, and cheap
// for the usual case of a working set that fits.
type responseCache struct {
	mu  sync.RWMutex
	m   map[string]*sharedAnswer
	max int
}

// sharedAnswer is the wire encoding of an answer shared by every check
// with the same key. The handler returns it in place of a CheckResponse,
// and the codec (checkCodec.Marshal) sends its bytes, which gRPC only
// reads (freeing a SliceBuffer does nothing).
type sharedAnswer struct {
	enc mem.BufferSlice
}

func newResponseCache(size int) *responseCache {
	return &responseCache{m: make(map[string]*sharedAnswer), max: size}
}

func (c *responseCache) get(k *allowKey) *sharedAnswer {
	var buf [keyBufferBytes]byte
	key := k.appendTo(buf[:0])
	c.mu.RLock()
	a := c.m[string(key)] // no conversion: a look-up by the bytes
	c.mu.RUnlock()
	return a
}

// put encodes r and keeps the encoding under k. It returns nil, keeping
// nothing, if r does not encode: the caller then answers with r itself,
// and the codec fails on it as it would have.
func (c *responseCache) put(k *allowKey, r *authv3.CheckResponse) *sharedAnswer {
	// Encoded here, outside the lock.
	b, err := proto.Marshal(r)
	if err != nil {
		return nil
	}
	a := &sharedAnswer{enc: mem.BufferSlice{mem.SliceBuffer(b)}}
	key := string(k.appendTo(nil))
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
	c.m[key] = a
	return a
}

// GRPCCodec is the gRPC codec for a server of this Core (install it with
// grpc.ForceServerCodecV2): the standard protobuf codec, except that a
// shared answer (sharedAnswer) is sent as the bytes it was encoded to when
// it was built, rather than encoded again for every check (those bytes are
// only read), and that a CheckRequest is decoded only as far as the sidecar
// reads it (decodeCheckRequest).
func (c *Core) GRPCCodec() encoding.CodecV2 {
	return checkCodec{base: encoding.GetCodecV2(grpcproto.Name)}
}

type checkCodec struct {
	base encoding.CodecV2
}

func (c checkCodec) Name() string { return c.base.Name() }

func (c checkCodec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.(*sharedAnswer); ok {
		return a.enc, nil
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
