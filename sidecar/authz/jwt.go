package authz

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	tokenTimes
	// identity points to id: the token and its identity are one
	// allocation; so are the scopes of a token with one scope (scope).
	identity *Identity
	id       Identity
	scope    [1]string
	// payload is the token's decoded payload, kept to read claims that
	// rules name (allClaims); it is never modified.
	payload string
	all     struct {
		once   sync.Once
		claims map[string]any
	}
}

// tokenTimes are a token's time claims, read by fill and checked by
// checkTimes: before the signature on the verifier's stack, after it in
// the verified token.
type tokenTimes struct {
	exp      time.Time
	nbf, iat time.Time
	hasNbf   bool
	hasIat   bool
}

// allClaims is every claim of the token, decoded on first use: only
// tokens used on a route whose rules name claims pay for it, once per
// verification.
func (vt *verifiedToken) allClaims() map[string]any {
	vt.all.once.Do(func() {
		vt.all.claims, _ = decodeClaims(vt.payload)
	})
	return vt.all.claims
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
	// The parsed token lives in this frame: only its payload (kept by a
	// verified token) and the strings of its claims (parts of one copy of
	// the payload) reach the heap.
	var pt parsedToken
	if reason := parseToken(token, maxBytes, &pt); reason != "" {
		return nil, reason
	}
	iss, key, reason := pt.trustedKey(pol)
	if reason != "" {
		return nil, reason
	}
	var times tokenTimes
	if reason := times.fill(iss, &pt.claims); reason != "" {
		return nil, reason
	}
	if reason := times.checkTimes(now, iss.ClockSkew); reason != "" {
		return nil, reason
	}
	if reason := pt.verifySignature(key); reason != "" {
		return nil, reason
	}
	// Built only now: a token refused above (expired, forged, ...) costs
	// no verified token and no identity.
	vt := &verifiedToken{iss: iss.Issuer, fingerprint: iss.Fingerprint, key: key, tokenTimes: times, payload: pt.payload}
	vt.id = identityOf(iss.Issuer, &pt.claims, &vt.scope)
	vt.identity = &vt.id
	return vt, ""
}

// parsedToken is a compact JWS split and decoded, its signature not yet
// verified: nothing in it is trusted.
type parsedToken struct {
	alg, kid string
	// signingInput is the signed part, header "." payload, as received.
	signingInput []byte
	signature    []byte
	payload      string
	claims       tokenClaims
}

// parseToken splits and decodes a compact JWS of at most maxBytes into
// pt, which must be zero. It refuses what no trusted key could have signed: a size over the bound, a
// shape other than three non-empty parts of strict unpadded base64url, a
// header or payload that is not one JSON object, a critical header, and
// the algorithms none and HS* (whatever the key; no shared secret is ever
// trusted).
func parseToken(token string, maxBytes int, pt *parsedToken) Reason {
	if len(token) > maxBytes {
		return TokenTooLarge
	}
	h64, rest, ok := strings.Cut(token, ".")
	if !ok {
		return MalformedToken
	}
	p64, s64, ok := strings.Cut(rest, ".")
	// Exactly three non-empty parts: a stripped signature ("a.b.") or a JWE
	// (five parts) is malformed.
	if !ok || h64 == "" || p64 == "" || s64 == "" || strings.IndexByte(s64, '.') >= 0 {
		return MalformedToken
	}
	h, ok := headers.decode(h64)
	if !ok {
		return MalformedToken
	}
	pt.alg, pt.kid = h.alg, h.kid
	if h.crit {
		// No critical extension is understood here (RFC 7515 4.1.11),
		// including b64=false: refuse rather than misinterpret.
		return MalformedToken
	}
	if h.alg == "" || strings.EqualFold(h.alg, "none") || strings.HasPrefix(strings.ToUpper(h.alg), "HS") {
		return AlgorithmNotAllowed
	}
	if pt.signingInput, pt.signature, ok = signedParts(token[:len(h64)+1+len(p64)], s64); !ok {
		return MalformedToken
	}
	payload, reason := pt.claims.decodeEncoded(p64)
	if reason != "" {
		return reason
	}
	pt.payload = payload
	return ""
}

// signedParts returns a copy of the signing input and the decoded
// signature s64, in one allocation (the verifier wants the input as bytes;
// both are dropped after the verification, unlike the payload, which a
// cached token keeps). ok is false if s64 is not strict unpadded
// base64url or decodes to nothing.
func signedParts(signingInput, s64 string) (input, sig []byte, ok bool) {
	buf := make([]byte, len(signingInput)+base64.RawURLEncoding.DecodedLen(len(s64)))
	input = buf[:copy(buf, signingInput):len(signingInput)]
	n, err := strictBase64.Decode(buf[len(signingInput):], []byte(s64))
	if err != nil || n == 0 {
		return nil, nil, false
	}
	return input, buf[len(signingInput) : len(signingInput)+n], true
}

// trustedKey finds the issuer the token names and the key its kid names in
// that issuer's key set, and requires the header's algorithm to be the
// key's. It reads only public trust settings.
func (pt *parsedToken) trustedKey(pol *snapshot.Policy) (*snapshot.Issuer, *snapshot.VerificationKey, Reason) {
	issClaim := ""
	if pt.claims.Iss.kind == stringValue {
		issClaim = pt.claims.Iss.s
	}
	iss, ok := pol.IssuerFor(issClaim)
	if !ok || issClaim == "" {
		return nil, nil, UnknownIssuer
	}
	if pt.kid == "" {
		return nil, nil, UnknownKeyID
	}
	key, ok := iss.Keys.Key(pt.kid)
	if !ok {
		return nil, nil, UnknownKeyID
	}
	// The algorithm is the key's. A header naming any other (HS256 against
	// an RSA key, RS256 against a PS256 key, ...) is refused before any
	// cryptography runs.
	if pt.alg != key.Algorithm.String() {
		return nil, nil, AlgorithmNotAllowed
	}
	return iss, key, ""
}

// verifySignature verifies the signature with key, under the key's own
// algorithm.
func (pt *parsedToken) verifySignature(key *snapshot.VerificationKey) Reason {
	if err := key.Verify(pt.signingInput, pt.signature); err != nil {
		return InvalidSignature
	}
	return ""
}

func decodeClaims(payload string) (map[string]any, Reason) {
	dec := json.NewDecoder(strings.NewReader(payload))
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

// fill checks the registered and Gatehouse claims with strict types and
// keeps the time claims.
func (t *tokenTimes) fill(iss *snapshot.Issuer, c *tokenClaims) Reason {
	if !c.Exp.present() {
		return MissingExpiry
	}
	if !c.Exp.ok() || (c.Nbf.present() && !c.Nbf.ok()) || (c.Iat.present() && !c.Iat.ok()) {
		return MalformedClaims
	}
	t.exp = c.Exp.t
	t.nbf, t.hasNbf = c.Nbf.t, c.Nbf.present()
	t.iat, t.hasIat = c.Iat.t, c.Iat.present()
	if len(iss.Audiences) > 0 {
		found, ok := c.Aud.intersects(iss.Audiences)
		if !ok {
			return MalformedClaims
		}
		if !found {
			return WrongAudience
		}
	}
	return checkIdentityClaims(c)
}

// checkIdentityClaims checks, without building anything, the claims
// identityOf reads: sub, jti and the Gatehouse key ID are strings or
// absent, scope a string or else scp a string or list of strings, and
// none holds a control character: each becomes a header value upstream,
// and a signed CR LF is still a header injection.
func checkIdentityClaims(c *tokenClaims) Reason {
	sub, okS := c.Sub.optional()
	jti, okJ := c.Jti.optional()
	kid, okK := c.KeyID.optional()
	if !okS || !okJ || !okK || !headerSafe(sub) || !headerSafe(jti) || !headerSafe(kid) {
		return MalformedClaims
	}
	if c.Scope.kind != absent {
		if c.Scope.kind != stringValue {
			return MalformedClaims
		}
		for f := range strings.FieldsSeq(c.Scope.s) {
			if !headerSafe(f) {
				return MalformedClaims
			}
		}
	} else if !c.Scp.headerSafe() {
		return MalformedClaims
	}
	return ""
}

// identityOf is the identity of claims checkIdentityClaims accepted. A
// single scope is put in room, which the identity's Scopes then point to
// (the verified token's, so that they are one allocation).
func identityOf(issuer string, c *tokenClaims, room *[1]string) Identity {
	id := Identity{Credential: CredentialJWT, Issuer: issuer, Subject: c.Sub.s, TokenID: c.Jti.s, KeyID: c.KeyID.s}
	id.Scopes, id.scopesJoined = scopesOf(c, room)
	return id
}

// scopesOf is the token's scopes and their join by single spaces: scope
// split at white space (strings.Fields), else scp. A scope claim that is
// already words joined by single spaces (nearly all) is its own join, and
// a single scope, or a scp string, is put in room rather than in a new
// list.
func scopesOf(c *tokenClaims, room *[1]string) ([]string, string) {
	var scopes []string
	switch {
	case c.Scope.kind != absent:
		n, ok := spaceSeparated(c.Scope.s)
		switch {
		case ok && n == 1:
			room[0] = c.Scope.s
			return room[:], c.Scope.s
		case ok:
			return strings.Fields(c.Scope.s), c.Scope.s
		}
		scopes = strings.Fields(c.Scope.s)
	case c.Scp.kind == stringValue:
		room[0] = c.Scp.one
		return room[:], c.Scp.one
	default:
		scopes, _ = c.Scp.values()
	}
	return scopes, strings.Join(scopes, " ")
}

// spaceSeparated counts the words of s when s is ASCII words separated
// by single spaces, with no other white space and none leading or
// trailing: then strings.Fields splits s at its spaces, and joining its
// fields by single spaces gives s back. ok is false otherwise.
func spaceSeparated(s string) (words int, ok bool) {
	if s == "" {
		return 0, false
	}
	words = 1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ':
			if i == 0 || i == len(s)-1 || s[i-1] == ' ' {
				return 0, false
			}
			words++
		case c < ' ' || c >= utf8.RuneSelf:
			return 0, false
		}
	}
	return words, true
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
func (t *tokenTimes) checkTimes(now time.Time, skew time.Duration) Reason {
	if !now.Before(t.exp.Add(skew)) {
		return TokenExpired
	}
	limit := now.Add(skew)
	if t.hasNbf && t.nbf.After(limit) {
		return TokenNotYetValid
	}
	if t.hasIat && t.iat.After(limit) {
		return TokenNotYetValid
	}
	return ""
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
