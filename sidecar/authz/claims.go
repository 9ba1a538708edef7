package authz

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	strictjson "sigs.k8s.io/json"
)

// tokenClaims are the claims the engine reads, decoded straight from the
// payload without building a map of every claim (a map of interfaces cost
// about 30 allocations per token). Names match case-sensitively (RFC 7519
// 4); a claim named twice makes the payload malformed rather than letting
// the last copy win; other claims are skipped here and decoded, all of
// them, only when a rule asks for one (verifiedToken.allClaims).
//
// Each field records what it met, so that fill can refuse an ill-typed
// claim with the same reason, at the same step, as it always did.
type tokenClaims struct {
	Iss   stringClaim `json:"iss"`
	Sub   stringClaim `json:"sub"`
	Jti   stringClaim `json:"jti"`
	KeyID stringClaim `json:"gatehouse_key_id"` // gatehousev1.ClaimAPIKeyID (a test keeps them equal)
	Exp   dateClaim   `json:"exp"`
	Nbf   dateClaim   `json:"nbf"`
	Iat   dateClaim   `json:"iat"`
	Aud   listClaim   `json:"aud"`
	Scope stringClaim `json:"scope"`
	Scp   listClaim   `json:"scp"`
}

// decodeTokenClaims decodes a payload that must be one JSON object.
func decodeTokenClaims(payload []byte) (*tokenClaims, Reason) {
	c := &tokenClaims{}
	if !decodeObject(payload, c) || c.duplicated() {
		return nil, MalformedToken
	}
	return c, ""
}

func (c *tokenClaims) duplicated() bool {
	return c.Iss.dup || c.Sub.dup || c.Jti.dup || c.KeyID.dup || c.Exp.dup || c.Nbf.dup || c.Iat.dup ||
		c.Aud.dup || c.Scope.dup || c.Scp.dup
}

// decodeObject decodes data, which must be one JSON object and nothing
// else, into v, matching names case-sensitively (sigs.k8s.io/json: the
// standard decoder with that option). The fields of v record their own
// duplicates: the library's strict mode allocates for every field read.
func decodeObject(data []byte, v any) bool {
	if i := firstNonSpace(data); i < 0 || data[i] != '{' {
		return false
	}
	return strictjson.UnmarshalCaseSensitivePreserveInts(data, v) == nil
}

// tokenHeader is the part of a JOSE header the verifier reads. jku, x5u,
// x5c and jwk are deliberately absent: keys come only from trusted sets.
type tokenHeader struct {
	Alg  stringClaim `json:"alg"`
	Kid  stringClaim `json:"kid"`
	Crit stringClaim `json:"crit"` // refused whatever it holds
}

// decodeHeader decodes a JOSE header: alg and kid must be strings when
// present (null reads as absent), and none may be named twice.
func decodeHeader(data []byte) (alg, kid string, crit bool, ok bool) {
	var h tokenHeader
	if !decodeObject(data, &h) || h.Alg.dup || h.Kid.dup || h.Crit.dup {
		return "", "", false, false
	}
	alg, okA := h.Alg.optional()
	kid, okK := h.Kid.optional()
	return alg, kid, h.Crit.kind != absent, okA && okK
}

func firstNonSpace(b []byte) int {
	for i, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			return i
		}
	}
	return -1
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
	dup  bool
	s    string
}

// UnmarshalJSON records the value's kind and, for a string, the string.
// It never fails: fill decides what an ill-typed claim means.
func (c *stringClaim) UnmarshalJSON(data []byte) error {
	c.dup = c.dup || c.kind != absent
	c.kind = kindOf(data)
	if c.kind == stringValue {
		c.s = unquote(data)
	}
	return nil
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
// Literals without escapes and with valid UTF-8 (nearly all) are copied
// as they are; others go through encoding/json, which replaces invalid
// UTF-8 as it always did.
func unquote(data []byte) string {
	inner := data[1 : len(data)-1]
	plain := utf8.Valid(inner)
	for _, b := range inner {
		if b == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return string(inner)
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
	dup  bool
	t    time.Time
}

// UnmarshalJSON records the kind and, for a number in range of a float64,
// the time; a number out of that range is recorded as otherValue (as
// json.Number.Float64 failed before).
func (c *dateClaim) UnmarshalJSON(data []byte) error {
	c.dup = c.dup || c.kind != absent
	c.kind = kindOf(data)
	if c.kind != numberValue {
		return nil
	}
	f, ok := parseNumber(data)
	if !ok || math.IsNaN(f) {
		c.kind = otherValue
		return nil
	}
	f = math.Max(math.Min(f, maxNumericDate), -maxNumericDate)
	sec, frac := math.Modf(f)
	c.t = time.Unix(int64(sec), int64(frac*1e9))
	return nil
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
	dup  bool
	list []string
	bad  bool
}

// UnmarshalJSON records the strings of a string or of an array of strings;
// anything else, or an array holding anything but strings, is bad.
func (c *listClaim) UnmarshalJSON(data []byte) error {
	c.dup = c.dup || c.kind != absent
	c.kind, c.list, c.bad = kindOf(data), nil, false
	switch c.kind {
	case absent, null:
	case stringValue:
		c.list = []string{unquote(data)}
	case listValue:
		// A malformed array cannot reach here (the whole payload was
		// checked first); it would be bad, not an error of the payload.
		var elems []stringClaim
		if c.bad = json.Unmarshal(data, &elems) != nil; c.bad {
			return nil
		}
		c.list = make([]string, len(elems))
		for i := range elems {
			if elems[i].kind != stringValue {
				c.bad = true
				return nil
			}
			c.list[i] = elems[i].s
		}
	default:
		c.bad = true
	}
	return nil
}

// values is the claim as stringOrList read it: nil when absent or null,
// false when ill-typed.
func (c *listClaim) values() ([]string, bool) {
	if c.bad {
		return nil, false
	}
	return c.list, true
}
