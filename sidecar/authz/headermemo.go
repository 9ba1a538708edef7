package authz

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
)

// joseHeader is what the verifier reads of a token's JOSE header, decoded
// from its base64url text b64.
type joseHeader struct {
	b64      string
	alg, kid string
	crit     bool
}

// headerMemoSlots is the number of headers remembered; maxMemoHeaderBytes
// bounds the base64url text of a remembered header, so that the memo
// holds at most 64 × 512 bytes of header text whatever it is sent.
const (
	headerMemoSlots    = 64
	maxMemoHeaderBytes = 512
)

// headerMemo remembers recently decoded JOSE headers by their base64url
// text. Every token one issuer signs with one key carries the same header
// (`{"alg":"RS256","kid":"k1","typ":"JWT"}`), so a check of a token the
// verification cache has not seen usually finds its header here and skips
// its base64 and JSON decoding, about a fifth of the work before the
// signature.
//
// Decoding a header is a pure function of its text, and a slot is used
// only when its text equals the token's exactly, so the memo changes no
// answer: a header found here is the one decoding would give, and every
// check that follows (crit, the algorithm, the issuer's key) runs on it
// as before. The header is public (it is the same for every token of the
// key), and nothing secret decides which slot a header takes or whether it
// is found. A direct-mapped table with a per-process seed: a header
// replaces whatever held its slot, so a flood of distinct headers costs
// misses, never memory beyond the bound.
type headerMemo struct {
	seed  maphash.Seed
	slots [headerMemoSlots]atomic.Pointer[joseHeader]
}

var headers = &headerMemo{seed: maphash.MakeSeed()}

// decode returns the decoded header whose base64url text is h64: the
// remembered one, or else one decoded now (strict unpadded base64url, one
// JSON object, alg and kid strings, no name twice), remembered if it
// decoded and is short enough. ok is false for a header that does not
// decode.
func (m *headerMemo) decode(h64 string) (h *joseHeader, ok bool) {
	slot := &m.slots[maphash.String(m.seed, h64)%headerMemoSlots]
	if h := slot.Load(); h != nil && h.b64 == h64 {
		return h, true
	}
	headerJSON, err := strictBase64.DecodeString(h64)
	if err != nil {
		return nil, false
	}
	alg, kid, crit, ok := decodeHeader(headerJSON)
	if !ok {
		return nil, false
	}
	h = &joseHeader{alg: alg, kid: kid, crit: crit}
	if len(h64) <= maxMemoHeaderBytes {
		// A copy: h64 points into the request, which the memo must not
		// keep.
		h.b64 = strings.Clone(h64)
		slot.Store(h)
	}
	return h, true
}
