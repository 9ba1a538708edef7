package authz

import (
	"encoding/base64"
	"hash/maphash"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// memoDecodeAsDirect requires m.decode(h64) to give what decoding h64
// directly gives, twice (the second time from the memo if it kept it).
func memoDecodeAsDirect(t *testing.T, m *headerMemo, h64 string) {
	t.Helper()
	var want headerOutcome
	if headerJSON, err := base64.RawURLEncoding.Strict().DecodeString(h64); err == nil {
		want.alg, want.kid, want.crit, want.ok = decodeHeader(headerJSON)
	}
	if !want.ok {
		want = headerOutcome{}
	}
	for i := range 2 {
		var got headerOutcome
		if h, ok := m.decode(h64); ok {
			got = headerOutcome{alg: h.alg, kid: h.kid, crit: h.crit, ok: true}
		}
		if got != want {
			t.Fatalf("header %q, call %d: the memo gave %+v, decoding gives %+v", h64, i+1, got, want)
		}
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestHeaderMemoDecodesAsDecodeHeader(t *testing.T) {
	m := &headerMemo{seed: maphash.MakeSeed()}
	for _, h := range headerPayloads {
		memoDecodeAsDirect(t, m, b64(h))
	}
	for _, h64 := range []string{"", "e30=", "e30", "!!!!", b64(`{"alg":"ES256"}`) + "A"} {
		memoDecodeAsDirect(t, m, h64)
	}
}

func FuzzHeaderMemoDecodesAsDecodeHeader(f *testing.F) {
	for _, h := range headerPayloads {
		f.Add(b64(h))
	}
	m := &headerMemo{seed: maphash.MakeSeed()}
	f.Fuzz(func(t *testing.T, h64 string) {
		memoDecodeAsDirect(t, m, h64)
	})
}

// TestHeaderMemoSlotHoldsOnlyItsOwnHeader fills one slot with a header,
// then decodes another header of the same slot: it must get its own
// values, not the slot's, and take the slot; the first header, decoded
// again, gets its own values back.
func TestHeaderMemoSlotHoldsOnlyItsOwnHeader(t *testing.T) {
	m := &headerMemo{seed: maphash.MakeSeed()}
	a := b64(`{"alg":"ES256","kid":"a"}`)
	slot := maphash.String(m.seed, a) % headerMemoSlots
	var b string
	for i := 0; b == ""; i++ {
		if c := b64(`{"alg":"RS256","kid":"b` + strconv.Itoa(i) + `"}`); maphash.String(m.seed, c)%headerMemoSlots == slot {
			b = c
		}
	}
	for _, tc := range []struct{ h64, kid string }{{a, "a"}, {a, "a"}, {b, "b"}, {b, "b"}, {a, "a"}} {
		h, ok := m.decode(tc.h64)
		if !ok || !strings.HasPrefix(h.kid, tc.kid) || m.slots[slot].Load() == nil || m.slots[slot].Load().b64 != tc.h64 {
			t.Fatalf("decoding %q gave %+v, ok %v; the slot holds %+v", tc.h64, h, ok, m.slots[slot].Load())
		}
	}
}

// TestHeaderMemoKeepsNoRequestBytesAndNoLongHeader: a remembered header's
// text is a copy, not the caller's string (which points into a request),
// and a header over maxMemoHeaderBytes, or one that does not decode, is
// not remembered.
func TestHeaderMemoKeepsNoRequestBytesAndNoLongHeader(t *testing.T) {
	m := &headerMemo{seed: maphash.MakeSeed()}
	token := b64(`{"alg":"ES256","kid":"k"}`) + ".payload"
	h64 := token[:strings.IndexByte(token, '.')]
	if _, ok := m.decode(h64); !ok {
		t.Fatal("a valid header did not decode")
	}
	kept := m.slots[maphash.String(m.seed, h64)%headerMemoSlots].Load()
	if kept == nil || kept.b64 != h64 || unsafe.StringData(kept.b64) == unsafe.StringData(token) {
		t.Fatalf("the memo kept %+v for %q: not a copy of the header", kept, h64)
	}
	long := b64(`{"alg":"ES256","kid":"` + strings.Repeat("k", maxMemoHeaderBytes) + `"}`)
	for _, h64 := range []string{long, b64(`{"alg":1}`), "%%%"} {
		_, _ = m.decode(h64)
		if kept := m.slots[maphash.String(m.seed, h64)%headerMemoSlots].Load(); kept != nil && kept.b64 == h64 {
			t.Fatalf("the memo kept the header %.40q", h64)
		}
	}
}
