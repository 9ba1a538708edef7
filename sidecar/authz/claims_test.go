package authz

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// The claims decoder reads into a struct what the engine once read from a
// map of every claim. These tests hold it to the map's answers, claim by
// claim, on every payload: the same reason at the same step, the same
// times and identity. It differs only where it is stricter: a claim named
// twice (RFC 7519 4 lets a parser refuse it; the map kept the last), and
// bytes after the object.

func TestTheKeyIDClaimIsTheContractsClaimName(t *testing.T) {
	c, reason := decodeTokenClaims([]byte(`{"` + gatehousev1.ClaimAPIKeyID + `":"k1"}`))
	if reason != "" || c.KeyID.s != "k1" {
		t.Fatalf("the claim read as KeyID is not %q", gatehousev1.ClaimAPIKeyID)
	}
}

var claimPayloads = []string{
	`{"iss":"i","sub":"alice","aud":"orders","exp":4102444800,"iat":1700000000,"nbf":1700000000,"jti":"t1","scope":"orders:read orders:write","gatehouse_key_id":"k1"}`,
	`{"exp":4102444800}`,
	`{}`,
	`{"iss":"i"}`,
	`{"exp":null}`, `{"exp":"4102444800"}`, `{"exp":true}`, `{"exp":{}}`, `{"exp":[1]}`, `{"exp":1e400}`, `{"exp":-1e400}`,
	`{"exp":1.5}`, `{"exp":-0}`, `{"exp":-12}`, `{"exp":1e12}`, `{"exp":1e13}`, `{"exp":-1e13}`, `{"exp":123456789012345678}`,
	`{"exp":4102444800,"nbf":null}`, `{"exp":4102444800,"nbf":"x"}`, `{"exp":4102444800,"iat":null}`, `{"exp":4102444800,"iat":1.25e9}`,
	`{"exp":4102444800,"aud":null}`, `{"exp":4102444800,"aud":["x","orders"]}`, `{"exp":4102444800,"aud":[]}`,
	`{"exp":4102444800,"aud":["orders",1]}`, `{"exp":4102444800,"aud":["orders",null]}`, `{"exp":4102444800,"aud":1}`,
	`{"exp":4102444800,"aud":{"a":"orders"}}`, `{"exp":4102444800,"aud":[["orders"]]}`, `{"exp":4102444800,"aud":"x"}`,
	`{"exp":4102444800,"aud":"orders","sub":null,"jti":null,"gatehouse_key_id":null}`,
	`{"exp":4102444800,"aud":"orders","sub":1}`, `{"exp":4102444800,"aud":"orders","jti":false}`,
	`{"exp":4102444800,"aud":"orders","gatehouse_key_id":["k"]}`,
	`{"exp":4102444800,"aud":"orders","scope":null}`, `{"exp":4102444800,"aud":"orders","scope":["a"]}`,
	`{"exp":4102444800,"aud":"orders","scope":"  a   b  "}`, `{"exp":4102444800,"aud":"orders","scope":""}`,
	`{"exp":4102444800,"aud":"orders","scp":["a","b"]}`, `{"exp":4102444800,"aud":"orders","scp":"a b"}`,
	`{"exp":4102444800,"aud":"orders","scp":null}`, `{"exp":4102444800,"aud":"orders","scp":[1]}`,
	`{"exp":4102444800,"aud":"orders","scope":"a","scp":[1]}`,
	// Scopes that are, and are not, words joined by single spaces.
	`{"exp":4102444800,"aud":"orders","scope":"a"}`, `{"exp":4102444800,"aud":"orders","scope":"a b c"}`,
	`{"exp":4102444800,"aud":"orders","scope":"a "}`, `{"exp":4102444800,"aud":"orders","scope":" a"}`,
	`{"exp":4102444800,"aud":"orders","scope":"a  b"}`, `{"exp":4102444800,"aud":"orders","scope":"a\tb"}`,
	`{"exp":4102444800,"aud":"orders","scope":"a\u00a0b"}`, `{"exp":4102444800,"aud":"orders","scope":"\u0085a"}`,
	`{"exp":4102444800,"aud":"orders","scope":"\u00e9t\u00e9 a"}`, `{"exp":4102444800,"aud":"orders","scp":""}`,
	`{"exp":4102444800,"aud":"orders","scp":"a"}`, `{"exp":4102444800,"aud":"orders","scp":[]}`,
	`{"exp":4102444800,"aud":"orders","sub":"a\r\nx: y"}`, `{"exp":4102444800,"aud":"orders","sub":"a\u0000"}`,
	`{"exp":4102444800,"aud":"orders","sub":"\u00e9\ud83d\ude00 \"q\" \\"}`, "{\"exp\":4102444800,\"aud\":\"orders\",\"sub\":\"\xff\xfe\"}",
	`{"\u0065xp":4102444800,"aud":"orders","s\u0075b":"escaped names"}`,
	`{"EXP":4102444800,"Exp":1,"aud":"orders"}`, `{"exp":4102444800,"aud":"orders","Sub":1,"SCOPE":2}`,
	`{"exp":4102444800,"aud":"orders","team":["a"],"nested":{"exp":1,"sub":2},"list":[{"aud":1}]}`,
	` 	{"exp":4102444800 , "aud" : [ "orders" , "x" ] , "sub" : "s" } `,
	`null`, `[]`, `[{"exp":1}]`, `"x"`, `1`, `true`, ``, ` `, `{`, `{"exp":}`, `{"exp":1,}`, `{"exp":01}`,
	// Where the decoder is stricter than the map was.
	`{"exp":1,"exp":4102444800}`, `{"sub":"a","sub":"b","exp":4102444800}`, `{"exp":4102444800}]`, `{"exp":4102444800}}`,
	`{"exp":4102444800} {}`, `{"exp":4102444800}x`,
	`{"exp":4102444800,"team":"a","team":"b"}`, `{"exp":4102444800,"t\u0065am":1,"team":2}`,
	`{"exp":4102444800,"aud":"orders","sub":"\ud800"}`, `{"exp":4102444800,"aud":["orders","\udfff\ud800"],"\ud800":1}`,
}

func TestClaimsDecodeAsTheMapOfEveryClaimDid(t *testing.T) {
	for _, p := range claimPayloads {
		compareWithMapDecoding(t, []byte(p))
	}
}

func FuzzClaimsDecodeAsTheMapOfEveryClaimDid(f *testing.F) {
	for _, p := range claimPayloads {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		compareWithMapDecoding(t, payload)
	})
}

// claimsOutcome is what the engine takes from a payload before the
// signature: the issuer it looks up, the reason, the times and identity.
type claimsOutcome struct {
	iss            string
	reason         Reason
	exp, nbf, iat  time.Time
	hasNbf, hasIat bool
	id             Identity
}

var testIssuer = &snapshot.Issuer{Issuer: "i", Audiences: []string{"orders"}}

func newOutcome(payload []byte) claimsOutcome {
	c, reason := decodeTokenClaims(payload)
	if reason != "" {
		return claimsOutcome{reason: reason}
	}
	out := claimsOutcome{}
	if c.Iss.kind == stringValue {
		out.iss = c.Iss.s
	}
	vt := &verifiedToken{iss: testIssuer.Issuer}
	out.reason = vt.fill(testIssuer, c)
	out.exp, out.nbf, out.iat, out.hasNbf, out.hasIat = vt.exp, vt.nbf, vt.iat, vt.hasNbf, vt.hasIat
	if out.reason == "" {
		out.id = identityOf(testIssuer.Issuer, c, new([1]string))
	}
	return out
}

func compareWithMapDecoding(t *testing.T, payload []byte) {
	t.Helper()
	got, want := newOutcome(payload), mapOutcome(payload)
	if got.reason == MalformedToken && want.reason != MalformedToken && stricterThanTheMap(payload) {
		return
	}
	if !sameOutcome(got, want) {
		t.Fatalf("payload %q: decoded as %+v, the map of every claim gave %+v", payload, got, want)
	}
	if got.reason == "" && !json.Valid(payload) {
		t.Fatalf("payload %q: accepted, but it is not one JSON value", payload)
	}
}

// sameOutcome compares what the engine uses: on a denial the reason (and
// the issuer, looked up first), on success everything.
func sameOutcome(a, b claimsOutcome) bool {
	if a.reason != "" || b.reason != "" {
		return a.iss == b.iss && a.reason == b.reason
	}
	return a.iss == b.iss && a.reason == b.reason && a.exp.Equal(b.exp) && a.hasNbf == b.hasNbf && a.hasIat == b.hasIat &&
		a.nbf.Equal(b.nbf) && a.iat.Equal(b.iat) && a.id.Subject == b.id.Subject && a.id.TokenID == b.id.TokenID &&
		a.id.KeyID == b.id.KeyID && a.id.Issuer == b.id.Issuer && a.id.Credential == b.id.Credential &&
		slices.Equal(a.id.Scopes, b.id.Scopes) && a.id.ScopesJoined() == b.id.ScopesJoined()
}

// stricterThanTheMap: bytes after the object (the map's decoder stopped
// after it), or a claim named twice (the map kept the last).
func stricterThanTheMap(payload []byte) bool {
	if !json.Valid(payload) {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		name, _ := tok.(string)
		if seen[name] {
			return true
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

// mapOutcome is the engine's reading before the claims decoder: every
// claim into a map, then typed reads from it (the code of 1d4cb00).
func mapOutcome(payload []byte) claimsOutcome {
	c, reason := decodeClaims(string(payload))
	if reason != "" {
		return claimsOutcome{reason: reason}
	}
	out := claimsOutcome{}
	out.iss, _ = c["iss"].(string)
	out.reason = out.mapFill(c)
	return out
}

func (out *claimsOutcome) mapFill(c map[string]any) Reason {
	expV, ok := c["exp"]
	if !ok {
		return MissingExpiry
	}
	exp, ok := refNumericDate(expV)
	if !ok {
		return MalformedClaims
	}
	out.exp = exp
	nbf, okN := refOptionalNumericDate(c, "nbf")
	iat, okI := refOptionalNumericDate(c, "iat")
	if !okN || !okI {
		return MalformedClaims
	}
	if nbf != nil {
		out.nbf, out.hasNbf = *nbf, true
	}
	if iat != nil {
		out.iat, out.hasIat = *iat, true
	}
	auds, ok := stringOrList(c["aud"])
	if !ok {
		return MalformedClaims
	}
	if !intersects(auds, testIssuer.Audiences) {
		return WrongAudience
	}
	return out.mapIdentity(c)
}

func (out *claimsOutcome) mapIdentity(c map[string]any) Reason {
	id := Identity{Credential: CredentialJWT, Issuer: testIssuer.Issuer}
	var okS, okJ, okK bool
	id.Subject, okS = refOptionalString(c["sub"])
	id.TokenID, okJ = refOptionalString(c["jti"])
	id.KeyID, okK = refOptionalString(c[gatehousev1.ClaimAPIKeyID])
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
		return MalformedClaims
	}
	id.scopesJoined = strings.Join(id.Scopes, " ")
	out.id = id
	return ""
}

func refNumericDate(v any) (time.Time, bool) {
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

func refOptionalNumericDate(c map[string]any, name string) (*time.Time, bool) {
	v, present := c[name]
	if !present {
		return nil, true
	}
	t, ok := refNumericDate(v)
	if !ok {
		return nil, false
	}
	return &t, true
}

func refOptionalString(v any) (string, bool) {
	if v == nil {
		return "", true
	}
	s, ok := v.(string)
	return s, ok
}

var headerPayloads = []string{
	`{"alg":"ES256","kid":"k1","typ":"JWT"}`, `{"alg":"ES256"}`, `{"kid":"k"}`, `{}`,
	`{"alg":null,"kid":null}`, `{"alg":1}`, `{"alg":["ES256"]}`, `{"kid":{}}`, `{"kid":true}`,
	`{"alg":"ES256","crit":["exp"]}`, `{"alg":"ES256","crit":null}`, `{"alg":"ES256","crit":[]}`, `{"alg":"ES256","crit":1}`,
	`{"alg":"\u0045S256","k\u0069d":"k"}`, "{\"alg\":\"ES256\",\"kid\":\"\xff\"}", ` {"alg" : "ES256"} `,
	`[]`, `"x"`, `1`, ``, `{`, `{"alg":"ES256"}x`, `{"alg":"ES256"}]`, `{"alg":"ES256"} {}`,
	// Where the decoder is stricter than encoding/json was: names are
	// case-sensitive (RFC 7515 4), a name twice is refused (RFC 7515 4),
	// and a header of null is malformed rather than without an algorithm.
	`{"ALG":"ES256"}`, `{"alg":"ES256","Alg":"none"}`, `{"alg":"ES256","CRIT":["x"]}`, `{"Kid":"k","alg":"ES256"}`,
	`{"alg":"none","alg":"ES256"}`, `{"kid":"a","kid":"b","alg":"ES256"}`, `{"alg":"ES256","crit":[],"crit":[]}`, `null`, ` null `,
	`{"alg":"ES256","typ":"JWT","typ":"JOSE"}`,
}

func TestHeadersDecodeAsEncodingJSONDid(t *testing.T) {
	for _, h := range headerPayloads {
		compareHeaderWithEncodingJSON(t, []byte(h))
	}
}

func FuzzHeadersDecodeAsEncodingJSONDid(f *testing.F) {
	for _, h := range headerPayloads {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, header []byte) {
		compareHeaderWithEncodingJSON(t, header)
	})
}

type headerOutcome struct {
	alg, kid string
	crit, ok bool
}

func compareHeaderWithEncodingJSON(t *testing.T, header []byte) {
	t.Helper()
	var got headerOutcome
	got.alg, got.kid, got.crit, got.ok = decodeHeader(header)
	var old struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	want := headerOutcome{ok: json.Unmarshal(header, &old) == nil}
	if want.ok {
		want.alg, want.kid, want.crit = old.Alg, old.Kid, len(old.Crit) > 0
	}
	if !got.ok {
		got = headerOutcome{}
		if want.ok && headerStricter(header) {
			return
		}
	}
	if !want.ok {
		want = headerOutcome{}
	}
	if got != want && (!got.ok || !headerStricter(header)) {
		t.Fatalf("header %q: decoded as %+v, encoding/json gave %+v", header, got, want)
	}
}

// headerStricter: a header of null, a name twice, or a name that matches
// a read one only without case.
func headerStricter(header []byte) bool {
	if string(bytes.TrimSpace(header)) == "null" {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		name, _ := tok.(string)
		if seen[name] {
			return true
		}
		for _, read := range []string{"alg", "kid", "crit"} {
			if name != read && strings.EqualFold(name, read) {
				return true
			}
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}
