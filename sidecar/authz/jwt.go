package authz

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// DefaultMaxTokenBytes bounds a bearer token.
const DefaultMaxTokenBytes = 8 << 10

// maxNumericDate keeps exp/nbf/iat within what time.Time converts exactly
// (year ~33658); larger values are treated as that bound.
const maxNumericDate = 1e12

// verifiedToken is the outcome of a signature check, immutable and shared
// through the verification cache. Its time claims are checked again on every
// use, against the current clock and issuer settings.
type verifiedToken struct {
	iss         string
	fingerprint string
	key         *snapshot.VerificationKey
	exp         time.Time
	nbf, iat    *time.Time
	identity    *Identity
	claims      map[string]any
}

// tokenHeader is the part of a JOSE header the verifier reads. jku, x5u,
// x5c and jwk are deliberately absent: keys come only from trusted sets.
type tokenHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

var verifiers sync.Map // jwa.SignatureAlgorithm -> jws.Verifier

func verifierFor(alg jwa.SignatureAlgorithm) (jws.Verifier, error) {
	if v, ok := verifiers.Load(alg); ok {
		return v.(jws.Verifier), nil
	}
	v, err := jws.NewVerifier(alg)
	if err != nil {
		return nil, err
	}
	verifiers.Store(alg, v)
	return v, nil
}

// verifyToken checks a compact JWS token at now, cheapest step first, so
// that whatever can be refused without cryptography is refused before the
// signature is verified: an expired or replayed token, or one for another
// issuer, key or audience, costs a parse, not an RSA or ECDSA verification.
//
// The order opens no oracle. Every step before the signature reads only
// the token's own header and claims and the public trust settings (issuers,
// their published key IDs and audiences), so an attacker learns from its
// answer only what the attacker wrote; a forged token may therefore be
// refused as, say, expired rather than as forged. What the attacker cannot
// know (whether the key a token was exchanged from is revoked, whether its
// scopes suffice for a route) is only looked at after the signature holds.
func verifyToken(pol *snapshot.Policy, token string, maxBytes int, now time.Time) (*verifiedToken, Reason) {
	pt, reason := parseToken(token, maxBytes)
	if reason != "" {
		return nil, reason
	}
	iss, key, reason := pt.trustedKey(pol)
	if reason != "" {
		return nil, reason
	}
	vt := &verifiedToken{iss: iss.Issuer, fingerprint: iss.Fingerprint, key: key, claims: pt.claims}
	if reason := vt.fill(iss); reason != "" {
		return nil, reason
	}
	if reason := vt.checkTimes(now, iss.ClockSkew); reason != "" {
		return nil, reason
	}
	if reason := pt.verifySignature(key); reason != "" {
		return nil, reason
	}
	return vt, ""
}

// parsedToken is a compact JWS split and decoded, its signature not yet
// verified: nothing in it is trusted.
type parsedToken struct {
	header tokenHeader
	// signingInput is the signed part, header "." payload, as received.
	signingInput string
	signature    []byte
	claims       map[string]any
}

// parseToken splits and decodes a compact JWS of at most maxBytes. It
// refuses what no trusted key could have signed: a size over the bound, a
// shape other than three non-empty parts of strict unpadded base64url, a
// header or payload that is not one JSON object, a critical header, and
// the algorithms none and HS* (whatever the key; no shared secret is ever
// trusted).
func parseToken(token string, maxBytes int) (*parsedToken, Reason) {
	if len(token) > maxBytes {
		return nil, TokenTooLarge
	}
	h64, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, MalformedToken
	}
	p64, s64, ok := strings.Cut(rest, ".")
	// Exactly three non-empty parts: a stripped signature ("a.b.") or a JWE
	// (five parts) is malformed.
	if !ok || h64 == "" || p64 == "" || s64 == "" || strings.IndexByte(s64, '.') >= 0 {
		return nil, MalformedToken
	}
	headerJSON, err := base64.RawURLEncoding.Strict().DecodeString(h64)
	if err != nil {
		return nil, MalformedToken
	}
	pt := &parsedToken{signingInput: token[:len(h64)+1+len(p64)]}
	if err := json.Unmarshal(headerJSON, &pt.header); err != nil {
		return nil, MalformedToken
	}
	if len(pt.header.Crit) > 0 {
		// No critical extension is understood here (RFC 7515 4.1.11),
		// including b64=false: refuse rather than misinterpret.
		return nil, MalformedToken
	}
	if alg := pt.header.Alg; alg == "" || strings.EqualFold(alg, "none") || strings.HasPrefix(strings.ToUpper(alg), "HS") {
		return nil, AlgorithmNotAllowed
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(p64)
	if err != nil {
		return nil, MalformedToken
	}
	pt.signature, err = base64.RawURLEncoding.Strict().DecodeString(s64)
	if err != nil || len(pt.signature) == 0 {
		return nil, MalformedToken
	}
	claims, reason := decodeClaims(payload)
	if reason != "" {
		return nil, reason
	}
	pt.claims = claims
	return pt, ""
}

// trustedKey finds the issuer the token names and the key its kid names in
// that issuer's key set, and requires the header's algorithm to be the
// key's. It reads only public trust settings.
func (pt *parsedToken) trustedKey(pol *snapshot.Policy) (*snapshot.Issuer, *snapshot.VerificationKey, Reason) {
	issClaim, _ := pt.claims["iss"].(string)
	iss, ok := pol.IssuerFor(issClaim)
	if !ok || issClaim == "" {
		return nil, nil, UnknownIssuer
	}
	if pt.header.Kid == "" {
		return nil, nil, UnknownKeyID
	}
	key, ok := iss.Keys.Key(pt.header.Kid)
	if !ok {
		return nil, nil, UnknownKeyID
	}
	// The algorithm is the key's. A header naming any other (HS256 against
	// an RSA key, RS256 against a PS256 key, ...) is refused before any
	// cryptography runs.
	if pt.header.Alg != key.Algorithm.String() {
		return nil, nil, AlgorithmNotAllowed
	}
	return iss, key, ""
}

// verifySignature verifies the signature with key, under the key's own
// algorithm.
func (pt *parsedToken) verifySignature(key *snapshot.VerificationKey) Reason {
	v, err := verifierFor(key.Algorithm)
	if err != nil {
		return AlgorithmNotAllowed
	}
	if err := v.Verify([]byte(pt.signingInput), pt.signature, key.Public); err != nil {
		return InvalidSignature
	}
	return ""
}

func decodeClaims(payload []byte) (map[string]any, Reason) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, MalformedToken
	}
	if dec.More() {
		return nil, MalformedToken
	}
	return claims, ""
}

// fill reads the registered and Gatehouse claims with strict types.
func (vt *verifiedToken) fill(iss *snapshot.Issuer) Reason {
	c := vt.claims
	expV, ok := c["exp"]
	if !ok {
		return MissingExpiry
	}
	exp, ok := numericDate(expV)
	if !ok {
		return MalformedClaims
	}
	vt.exp = exp
	var okN, okI bool
	vt.nbf, okN = optionalNumericDate(c, "nbf")
	vt.iat, okI = optionalNumericDate(c, "iat")
	if !okN || !okI {
		return MalformedClaims
	}
	if len(iss.Audiences) > 0 {
		auds, ok := stringOrList(c["aud"])
		if !ok {
			return MalformedClaims
		}
		if !intersects(auds, iss.Audiences) {
			return WrongAudience
		}
	}
	id := &Identity{Credential: CredentialJWT, Issuer: vt.iss}
	var okS, okJ, okK bool
	id.Subject, okS = optionalString(c["sub"])
	id.TokenID, okJ = optionalString(c["jti"])
	id.KeyID, okK = optionalString(c[gatehousev1.ClaimAPIKeyID])
	if !okS || !okJ || !okK {
		return MalformedClaims
	}
	if v, present := c["scope"]; present {
		s, ok := v.(string)
		if !ok {
			return MalformedClaims
		}
		id.Scopes = strings.Fields(s)
	} else if v, present := c["scp"]; present {
		l, ok := stringOrList(v)
		if !ok {
			return MalformedClaims
		}
		id.Scopes = l
	}
	if !headerSafe(id.Subject) || !headerSafe(id.TokenID) || !headerSafe(id.KeyID) || !allHeaderSafe(id.Scopes) {
		// These become header values upstream: a signed CR LF is still a
		// header injection.
		return MalformedClaims
	}
	id.scopesJoined = strings.Join(id.Scopes, " ")
	vt.identity = id
	return ""
}

// headerSafe reports whether s can be sent as a header value as it is: no
// control characters (CR, LF, NUL, DEL, ...).
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func allHeaderSafe(list []string) bool {
	for _, s := range list {
		if !headerSafe(s) {
			return false
		}
	}
	return true
}

// checkTimes applies exp, nbf and iat with the issuer's skew at now.
func (vt *verifiedToken) checkTimes(now time.Time, skew time.Duration) Reason {
	if !now.Before(vt.exp.Add(skew)) {
		return TokenExpired
	}
	limit := now.Add(skew)
	if vt.nbf != nil && vt.nbf.After(limit) {
		return TokenNotYetValid
	}
	if vt.iat != nil && vt.iat.After(limit) {
		return TokenNotYetValid
	}
	return ""
}

func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) {
		return time.Time{}, false
	}
	f = math.Max(math.Min(f, maxNumericDate), -maxNumericDate)
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// optionalNumericDate reads an optional NumericDate claim: nil when absent,
// false when present but not a number.
func optionalNumericDate(c map[string]any, name string) (*time.Time, bool) {
	v, present := c[name]
	if !present {
		return nil, true
	}
	t, ok := numericDate(v)
	if !ok {
		return nil, false
	}
	return &t, true
}

func optionalString(v any) (string, bool) {
	if v == nil {
		return "", true
	}
	s, ok := v.(string)
	return s, ok
}

func stringOrList(v any) ([]string, bool) {
	switch t := v.(type) {
	case nil:
		return nil, true
	case string:
		return []string{t}, true
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}
