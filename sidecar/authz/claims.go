package authz

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// tokenClaims are the claims the engine reads, decoded straight from the
// payload without building a map of every claim (a map of interfaces cost
// about 30 allocations per token) and without reflection. Names match
// case-sensitively (RFC 7519 4); a payload naming any claim twice is
// malformed (RFC 7519 4 allows refusing it) rather than letting the last
// copy win; other claims are skipped here and decoded, all of them, only
// when a rule asks for one (verifiedToken.allClaims).
//
// Each field records what it met, so that fill can refuse an ill-typed
// claim with the same reason, at the same step, as it always did.
type tokenClaims struct {
	Iss   stringClaim
	Sub   stringClaim
	Jti   stringClaim
	KeyID stringClaim
	Exp   dateClaim
	Nbf   dateClaim
	Iat   dateClaim
	Aud   listClaim
	Scope stringClaim
	Scp   listClaim
}

// readMember reads the member name of the payload into its claim, and
// ignores a claim the engine does not read. Each claim's read is called
// directly, not through an interface, so that c need not live on the heap.
func (c *tokenClaims) readMember(name []byte, v jsonValue) {
	switch string(name) {
	case "iss":
		c.Iss.read(v)
	case "sub":
		c.Sub.read(v)
	case "jti":
		c.Jti.read(v)
	case gatehousev1.ClaimAPIKeyID:
		c.KeyID.read(v)
	case "exp":
		c.Exp.read(v)
	case "nbf":
		c.Nbf.read(v)
	case "iat":
		c.Iat.read(v)
	case "aud":
		c.Aud.read(v)
	case "scope":
		c.Scope.read(v)
	case "scp":
		c.Scp.read(v)
	}
}

// decodeTokenClaims decodes a payload that must be one JSON object.
func decodeTokenClaims(payload []byte) (*tokenClaims, Reason) {
	c := &tokenClaims{}
	if reason := c.decode(payload); reason != "" {
		return nil, reason
	}
	return c, ""
}

// decode fills c, which must be zero, from a payload that must be one
// JSON object, as decodeTokenClaims does, in memory the caller chose.
func (c *tokenClaims) decode(payload []byte) Reason {
	if !eachMember(payload, c.readMember) {
		return MalformedToken
	}
	return ""
}

// tokenHeader is the part of a JOSE header the verifier reads. jku, x5u,
// x5c and jwk are deliberately absent: keys come only from trusted sets.
type tokenHeader struct {
	Alg  stringClaim
	Kid  stringClaim
	Crit stringClaim // refused whatever it holds
}

// decodeHeader decodes a JOSE header: alg and kid must be strings when
// present (null reads as absent), and no name may appear twice.
func decodeHeader(data []byte) (alg, kid string, crit bool, ok bool) {
	var h tokenHeader
	if !eachMember(data, func(name []byte, v jsonValue) {
		switch string(name) {
		case "alg":
			h.Alg.read(v)
		case "kid":
			h.Kid.read(v)
		case "crit":
			h.Crit.read(v)
		}
	}) {
		return "", "", false, false
	}
	alg, okA := h.Alg.optional()
	kid, okK := h.Kid.optional()
	return alg, kid, h.Crit.kind != absent, okA && okK
}

// jsonReader is a reusable jsontext decoder over a byte slice, with room
// for a payload decoded from base64url.
type jsonReader struct {
	buf  bytes.Buffer
	dec  jsontext.Decoder
	name []byte
	// text is the room decodeEncoded decodes a payload into; cleared
	// before the reader goes back to the pool.
	text []byte
}

var jsonReaders = sync.Pool{New: func() any { return new(jsonReader) }}

// maxPooledText bounds the room a pooled reader keeps for payloads, so
// that one large token does not pin its room in the pool.
const maxPooledText = 4 << 10

// strictBase64 is unpadded base64url that refuses non-zero padding bits
// (RFC 7515 2 and RFC 4648 3.5).
var strictBase64 = base64.RawURLEncoding.Strict()

// readerOf is a pooled reader.
func readerOf() *jsonReader {
	return jsonReaders.Get().(*jsonReader)
}

// read makes r read data, in place.
func (r *jsonReader) read(data []byte) {
	r.buf = *bytes.NewBuffer(data)
	r.dec.Reset(&r.buf, jsontext.AllowInvalidUTF8(true))
}

// release returns r to the pool. Its room for payloads is cleared first,
// so that the pool keeps no byte of a token; its decoder still refers to
// the last data it read (a header, the cleared room, or a claim's array)
// until it is used again or the pool is emptied.
func (r *jsonReader) release() {
	clear(r.text)
	r.text = r.text[:0]
	if cap(r.text) > maxPooledText {
		r.text = nil
	}
	r.buf = bytes.Buffer{}
	jsonReaders.Put(r)
}

// decodeText decodes the strict unpadded base64url text b64 into r's
// room; ok is false if it is not that.
func (r *jsonReader) decodeText(b64 string) (data []byte, ok bool) {
	n := strictBase64.DecodedLen(len(b64))
	if cap(r.text) < n {
		r.text = make([]byte, n)
	}
	r.text = r.text[:n]
	n, err := strictBase64.Decode(r.text, []byte(b64))
	if err != nil {
		return nil, false
	}
	return r.text[:n], true
}

// decodeEncoded decodes into c, which must be zero, the payload whose
// strict unpadded base64url text is p64, as decode does, and returns the
// payload. The payload is decoded into a pooled reader's room and copied
// once, into the string returned, of which the claims' strings are parts:
// one allocation, where decoding into a new slice and then copying it
// into a string cost two.
func (c *tokenClaims) decodeEncoded(p64 string) (string, Reason) {
	r := readerOf()
	defer r.release()
	data, ok := r.decodeText(p64)
	if !ok {
		return "", MalformedToken
	}
	payload := string(data)
	if !r.eachMember(data, payload, c.readMember) {
		return "", MalformedToken
	}
	return payload, ""
}

// eachMember calls fn with the name (unquoted) and value of every member
// of data, which must be one JSON object and nothing else. The syntax is
// RFC 8259's, checked by jsontext (github.com/go-json-experiment/json,
// the module encoding/json/v2 comes from) without reflection; a name
// that appears twice, escaped or not, makes data malformed. Invalid UTF-8
// in strings is let through, as encoding/json let it through (replaced
// when a string is read; see unquote). name is only valid during the
// call; the strings of every value share one copy of data.
func eachMember(data []byte, fn func(name []byte, v jsonValue)) bool {
	r := readerOf()
	defer r.release()
	return r.eachMember(data, string(data), fn)
}

// eachMember is eachMember with r, the values' strings being parts of
// doc, a copy of data.
func (r *jsonReader) eachMember(data []byte, doc string, fn func(name []byte, v jsonValue)) bool {
	all := jsonValue{raw: data, str: doc}
	r.read(data)
	if tok, err := r.dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return false
	}
	for r.dec.PeekKind() == '"' {
		quoted, err := r.dec.ReadValue()
		if err != nil {
			return false
		}
		name := r.unquoteName(quoted)
		value, err := r.dec.ReadValue()
		if err != nil {
			return false
		}
		fn(name, all.part(r.dec.InputOffset(), len(value)))
	}
	if tok, err := r.dec.ReadToken(); err != nil || tok.Kind() != '}' {
		return false
	}
	_, err := r.dec.ReadToken()
	return errors.Is(err, io.EOF)
}

// unquoteName is the name quoted, a literal the decoder has checked: its
// inside when it holds no escape (nearly always), else unquoted into r's
// room. The only error left to unquoting is invalid UTF-8, replaced as
// encoding/json replaces it; a name holding some matches no claim the
// engine reads either way (their names are ASCII).
func (r *jsonReader) unquoteName(quoted []byte) []byte {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	r.name, _ = jsontext.AppendUnquote(r.name[:0], quoted)
	return r.name
}

// eachElement calls fn with every element of list, a JSON array that
// eachMember has already checked.
func eachElement(list jsonValue, fn func(v jsonValue)) bool {
	r := readerOf()
	defer r.release()
	r.read(list.raw)
	if tok, err := r.dec.ReadToken(); err != nil || tok.Kind() != '[' {
		return false
	}
	for r.dec.PeekKind() != ']' {
		value, err := r.dec.ReadValue()
		if err != nil {
			return false
		}
		fn(list.part(r.dec.InputOffset(), len(value)))
	}
	_, err := r.dec.ReadToken()
	return err == nil
}

// jsonKind is what a claim's value was.
type jsonKind uint8

const (
	absent jsonKind = iota
	null
	stringValue
	numberValue
	listValue
	otherValue
)

// jsonValue is one JSON value, as bytes and as a string (a part of the
// one string copy of its document).
type jsonValue struct {
	raw []byte
	str string
}

// part is the value of n bytes that ends at end, within v.
func (v jsonValue) part(end int64, n int) jsonValue {
	at := int(end) - n
	return jsonValue{raw: v.raw[at : at+n], str: v.str[at : at+n]}
}

func kindOf(data []byte) jsonKind {
	switch c := data[0]; {
	case c == 'n':
		return null
	case c == '"':
		return stringValue
	case c == '-' || (c >= '0' && c <= '9'):
		return numberValue
	case c == '[':
		return listValue
	}
	return otherValue
}

// stringClaim is a claim that should be a string.
type stringClaim struct {
	kind jsonKind
	s    string
}

// read records the value's kind and, for a string, the string. It never
// fails: fill decides what an ill-typed claim means.
func (c *stringClaim) read(v jsonValue) {
	c.kind = kindOf(v.raw)
	if c.kind == stringValue {
		c.s = unquote(v)
	}
}

// optional is the claim as an optional string: "" when absent or null,
// false when it is anything but a string.
func (c *stringClaim) optional() (string, bool) {
	switch c.kind {
	case absent, null:
		return "", true
	case stringValue:
		return c.s, true
	}
	return "", false
}

// unquote decodes a JSON string literal the scanner has already checked.
// Literals without escapes and with valid UTF-8 (nearly all) are taken as
// they are, a part of the document's string (which they keep alive);
// others go through encoding/json, which replaces invalid UTF-8 as it
// always did.
func unquote(v jsonValue) string {
	data := v.raw
	inner := data[1 : len(data)-1]
	plain := utf8.Valid(inner)
	for _, b := range inner {
		if b == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return v.str[1 : len(v.str)-1]
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return ""
	}
	return s
}

// dateClaim is a NumericDate claim.
type dateClaim struct {
	kind jsonKind
	t    time.Time
}

// read records the kind and, for a number in range of a float64, the time;
// a number out of that range is recorded as otherValue (as
// json.Number.Float64 failed before).
func (c *dateClaim) read(v jsonValue) {
	data := v.raw
	c.kind = kindOf(data)
	if c.kind != numberValue {
		return
	}
	f, ok := parseNumber(data)
	if !ok || math.IsNaN(f) {
		c.kind = otherValue
		return
	}
	f = math.Max(math.Min(f, maxNumericDate), -maxNumericDate)
	sec, frac := math.Modf(f)
	c.t = time.Unix(int64(sec), int64(frac*1e9))
}

// parseNumber reads a JSON number: small integers (every real NumericDate)
// without allocating, others with strconv.ParseFloat.
func parseNumber(data []byte) (float64, bool) {
	digits, neg := data, false
	if digits[0] == '-' {
		digits, neg = digits[1:], true
	}
	if len(digits) > 0 && len(digits) <= 15 {
		var n int64
		plain := true
		for _, d := range digits {
			if d < '0' || d > '9' {
				plain = false
				break
			}
			n = n*10 + int64(d-'0')
		}
		if plain {
			if neg {
				return -float64(n), true
			}
			return float64(n), true
		}
	}
	f, err := strconv.ParseFloat(string(data), 64)
	return f, err == nil
}

// present says whether the claim was there; ok whether it was a number.
func (c *dateClaim) present() bool { return c.kind != absent }
func (c *dateClaim) ok() bool      { return c.kind == numberValue }

// listClaim is a claim that may be a string or an array of strings (aud,
// scp).
type listClaim struct {
	kind jsonKind
	// one is the claim when it is a string: kept apart, so that reading
	// the usual single audience allocates no list.
	one  string
	list []string
	bad  bool
}

// read records the string, or the strings of an array of strings;
// anything else, or an array holding anything but strings, is bad.
func (c *listClaim) read(v jsonValue) {
	c.kind, c.one, c.list, c.bad = kindOf(v.raw), "", nil, false
	switch c.kind {
	case absent, null:
	case stringValue:
		c.one = unquote(v)
	case listValue:
		// A malformed array cannot reach here (the whole payload was
		// checked first); it would be bad, not an error of the payload.
		ok := eachElement(v, func(e jsonValue) {
			if kindOf(e.raw) != stringValue {
				c.bad = true
				return
			}
			c.list = append(c.list, unquote(e))
		})
		if c.bad = c.bad || !ok; c.bad {
			c.list = nil
		} else if c.list == nil {
			c.list = []string{}
		}
	default:
		c.bad = true
	}
}

// values is the claim as stringOrList read it: nil when absent or null,
// false when ill-typed.
func (c *listClaim) values() ([]string, bool) {
	if c.bad {
		return nil, false
	}
	if c.kind == stringValue {
		return []string{c.one}, true
	}
	return c.list, true
}

// intersects reports whether the claim holds one of set, as
// intersects(values(), set) does, without building a list; ok is false
// when the claim is ill-typed.
func (c *listClaim) intersects(set []string) (found, ok bool) {
	if c.bad {
		return false, false
	}
	if c.kind == stringValue {
		return slices.Contains(set, c.one), true
	}
	return intersects(c.list, set), true
}

// headerSafe reports whether every string of the claim is headerSafe;
// false when it is ill-typed.
func (c *listClaim) headerSafe() bool {
	return !c.bad && headerSafe(c.one) && allHeaderSafe(c.list)
}
