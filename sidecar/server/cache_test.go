package server

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

func allowOf(id *authz.Identity, credentialHeader, rule string) *authz.Decision {
	return &authz.Decision{Allowed: true, Reason: authz.Authenticated, Status: 200, Identity: id,
		CredentialHeader: credentialHeader, Policy: "main", Rule: rule}
}

func headerValue(t *testing.T, c *Core, d *authz.Decision, name string) (string, []string) {
	t.Helper()
	ok := c.allowResponse(d).GetOkResponse()
	if ok == nil {
		t.Fatal("an allow is not an OkResponse")
	}
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue(), ok.GetHeadersToRemove()
		}
	}
	return "", ok.GetHeadersToRemove()
}

// sharedOf is the handler's shared answer to d, failing the test if it is
// not a sharedAnswer.
func sharedOf(t *testing.T, c *Core, d *authz.Decision) *sharedAnswer {
	t.Helper()
	a, ok := c.grpcAnswer(verdict{d: *d}).(*sharedAnswer)
	if !ok || a == nil {
		t.Fatalf("the answer to %+v is not a shared answer", d)
	}
	return a
}

// decoded is the CheckResponse a shared answer's bytes encode.
func decoded(t *testing.T, a *sharedAnswer) *authv3.CheckResponse {
	t.Helper()
	resp := &authv3.CheckResponse{}
	if err := proto.Unmarshal(a.enc.Materialize(), resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestSharedAllowAnswersAreThoseOfTheirOwnDecision checks that a shared
// answer is reused only for a decision that would render the same, and
// that every field of the decision that shows in the answer tells
// answers apart.
func TestSharedAllowAnswersAreThoseOfTheirOwnDecision(t *testing.T) {
	c := NewCore(nil, nil, nil, Options{StripCredential: true, Log: logr.Discard()})
	h := c.opts.Headers
	alice := &authz.Identity{Credential: authz.CredentialAPIKey, Subject: "alice", Scopes: []string{"a", "b"}, KeyID: "k1"}
	aliceFewer := &authz.Identity{Credential: authz.CredentialAPIKey, Subject: "alice", Scopes: []string{"a"}, KeyID: "k1"}
	bob := &authz.Identity{Credential: authz.CredentialJWT, Subject: "bob", Issuer: "https://i", TokenID: "t1"}

	first := sharedOf(t, c, allowOf(alice, "x-api-key", "r"))
	if again := sharedOf(t, c, allowOf(&authz.Identity{Credential: authz.CredentialAPIKey, Subject: "alice", Scopes: []string{"a", "b"}, KeyID: "k1"}, "x-api-key", "r")); again != first {
		t.Error("the same identity, policy and rule got a new answer")
	}
	if v, _ := headerValue(t, c, allowOf(aliceFewer, "x-api-key", "r"), h.Scopes); v != "a" {
		t.Errorf("other scopes got scopes header %q", v)
	}
	if v, _ := headerValue(t, c, allowOf(alice, "x-api-key", "r"), h.Scopes); v != "a b" {
		t.Errorf("scopes header %q", v)
	}
	if v, remove := headerValue(t, c, allowOf(bob, "authorization", "r"), h.Subject); v != "bob" || !slices.Contains(remove, "authorization") || slices.Contains(remove, "x-api-key") {
		t.Errorf("bob's answer: subject %q, removes %q", v, remove)
	}
	if _, remove := headerValue(t, c, allowOf(alice, "x-api-key", "r"), h.Subject); !slices.Contains(remove, "x-api-key") || !slices.Contains(remove, h.Issuer) {
		t.Errorf("alice's answer removes %q", remove)
	}
	if !proto.Equal(decoded(t, first), c.allowResponse(allowOf(alice, "x-api-key", "r"))) {
		t.Error("the shared answer's bytes are not the decision's answer")
	}
	other := sharedOf(t, c, allowOf(alice, "x-api-key", "other-rule"))
	if other == first || decoded(t, other).GetDynamicMetadata().GetFields()["rule"].GetStringValue() != "other-rule" {
		t.Error("another rule shares the answer")
	}
	anon := c.allowResponse(&authz.Decision{Allowed: true, Reason: authz.Anonymous, Status: 200, Policy: "main", Rule: "r"})
	if _, ok := anon.GetDynamicMetadata().GetFields()["subject"]; ok || len(anon.GetOkResponse().GetHeaders()) != 0 {
		t.Error("an anonymous allow carries an identity")
	}
}

func TestResponseCacheIsBounded(t *testing.T) {
	c := newResponseCache(8)
	for i := range 100 {
		c.put(&allowKey{subject: fmt.Sprint(i)}, &authv3.CheckResponse{})
		if len(c.m) > 8 {
			t.Fatalf("%d entries in a cache of 8", len(c.m))
		}
	}
	if c.get(&allowKey{subject: "99"}) == nil {
		t.Fatal("the answer put last is gone")
	}
}

// TestTheCodecSendsTheEncodingOfSharedAnswers checks that the codec's bytes
// for a shared answer decode to the answer it stands for, and that other
// messages are encoded as by the standard codec.
func TestTheCodecSendsTheEncodingOfSharedAnswers(t *testing.T) {
	c := NewCore(nil, nil, nil, Options{Log: logr.Discard()})
	codec := c.GRPCCodec()
	if codec.Name() != "proto" {
		t.Fatalf("codec name %q", codec.Name())
	}
	alice := allowOf(&authz.Identity{Credential: authz.CredentialAPIKey, Subject: "alice", Scopes: []string{"a"}, KeyID: "k1"}, "x-api-key", "r")
	missing := &authz.Decision{Reason: authz.MissingCredential, Status: 401}
	for name, tc := range map[string]struct {
		sent any
		want *authv3.CheckResponse
	}{
		"a shared answer":      {sharedOf(t, c, alice), c.allowResponse(alice)},
		"a shared denial":      {sharedOf(t, c, missing), c.denyResponse(missing)},
		"a message of its own": {c.denyResponse(missing), c.denyResponse(missing)},
	} {
		data, err := codec.Marshal(tc.sent)
		if err != nil {
			t.Fatal(err)
		}
		got := &authv3.CheckResponse{}
		if err := codec.Unmarshal(data, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, tc.want) || got.GetStatus() == nil {
			t.Errorf("%s does not survive the codec: %v", name, got)
		}
	}
}

// Denials are shared answers too: the same denial gets the same answer,
// and every field of a denial that shows in the answer tells answers
// apart.
func TestSharedDenialsAreThoseOfTheirOwnDecision(t *testing.T) {
	c := NewCore(nil, nil, nil, Options{Log: logr.Discard()})
	deny := func(r authz.Reason, challenge string, retry time.Duration) *authz.Decision {
		return &authz.Decision{Reason: r, Status: r.Status(), Challenge: challenge, RetryAfter: retry}
	}
	first := sharedOf(t, c, deny(authz.TokenExpired, "Bearer x", 0))
	if again := sharedOf(t, c, deny(authz.TokenExpired, "Bearer x", 0)); again != first {
		t.Error("the same denial got a new answer")
	}
	if !proto.Equal(decoded(t, first), c.denyResponse(deny(authz.TokenExpired, "Bearer x", 0))) {
		t.Error("the shared denial's bytes are not the denial's answer")
	}
	for name, d := range map[string]*authz.Decision{
		"another reason":      deny(authz.InvalidSignature, "Bearer x", 0),
		"another challenge":   deny(authz.TokenExpired, "Bearer y", 0),
		"no challenge":        deny(authz.TokenExpired, "", 0),
		"another status":      {Reason: authz.TokenExpired, Status: 403, Challenge: "Bearer x"},
		"a Retry-After":       deny(authz.TokenExpired, "Bearer x", time.Second),
		"another Retry-After": deny(authz.TokenExpired, "Bearer x", 3*time.Second),
	} {
		if got := sharedOf(t, c, d); got == first {
			t.Errorf("a denial with %s shares the answer", name)
		}
	}
	if got := c.denyResponse(deny(authz.RateLimited, "", 2500*time.Millisecond)); got.GetDeniedResponse().GetHeaders()[2].GetHeader().GetValue() != "3" {
		t.Errorf("Retry-After of 2.5 s is %v, want 3", got.GetDeniedResponse().GetHeaders())
	}
}

// TestKeptAnswersKeepNoRequestBytes: an answer kept for later checks, and
// its key, share no memory with the decision's strings, which may point
// into the request (an API key's ID is a part of the key as sent).
func TestKeptAnswersKeepNoRequestBytes(t *testing.T) {
	c := NewCore(nil, nil, nil, Options{StripCredential: true, Log: logr.Discard()})
	request := strings.Clone("x-api-key gth_abcdefghijklmnop_secret alice orders:read orders:write https://i t1 main orders")
	part := func(s string) string {
		i := strings.Index(request, s)
		if i < 0 {
			t.Fatalf("%q is not in the request", s)
		}
		return request[i : i+len(s)]
	}
	id := &authz.Identity{Credential: authz.CredentialAPIKey, Subject: part("alice"), Scopes: []string{part("orders:read"), part("orders:write")},
		KeyID: part("abcdefghijklmnop"), Issuer: part("https://i"), TokenID: part("t1")}
	d := &authz.Decision{Allowed: true, Reason: authz.Authenticated, Status: 200, Identity: id,
		CredentialHeader: part("x-api-key"), Policy: part("main"), Rule: part("orders")}
	start := uintptr(unsafe.Pointer(unsafe.StringData(request)))
	inRequest := func(s string) bool {
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		return s != "" && p >= start && p < start+uintptr(len(request))
	}
	kept := sharedOf(t, c, d)
	if sharedOf(t, c, d) != kept {
		t.Fatal("the same decision got a new answer")
	}
	for k := range c.allows.m {
		if inRequest(k) {
			t.Errorf("the kept answer's key %q is the request's bytes", k)
		}
	}
	for _, b := range kept.enc {
		if inRequest(string(b.ReadOnlyData())) {
			t.Error("the kept answer's encoding is the request's bytes")
		}
	}
	resp := decoded(t, kept)
	var shown []string
	for _, h := range resp.GetOkResponse().GetHeaders() {
		shown = append(shown, h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	shown = append(shown, resp.GetOkResponse().GetHeadersToRemove()...)
	for _, v := range resp.GetDynamicMetadata().GetFields() {
		shown = append(shown, v.GetStringValue())
		for _, e := range v.GetListValue().GetValues() {
			shown = append(shown, e.GetStringValue())
		}
	}
	if !slices.Contains(shown, "abcdefghijklmnop") || !slices.Contains(shown, "orders:write") {
		t.Fatalf("the answer does not show the identity: %q", shown)
	}
}

// TestAllowKeyEncodingTellsKeysApart: keys that differ in any field, or
// only in where one string ends and the next begins, encode differently;
// equal keys encode alike.
func TestAllowKeyEncodingTellsKeysApart(t *testing.T) {
	fields := func(k *allowKey) []*string {
		return []*string{(*string)(&k.reason), &k.policy, &k.rule, &k.credentialHeader, (*string)(&k.credential),
			&k.subject, &k.scopes, &k.keyID, &k.issuer, &k.tokenID, &k.challenge, &k.retryAfter}
	}
	var keys []allowKey
	for i := range fields(&allowKey{}) {
		for _, v := range []string{"a", "ab", "b"} {
			var k allowKey
			*fields(&k)[i] = v
			keys = append(keys, k)
			if i+1 < len(fields(&k)) { // "ab" then "" against "a" then "b"
				k2 := allowKey{}
				*fields(&k2)[i], *fields(&k2)[i+1] = v[:1], v[1:]
				keys = append(keys, k2)
			}
		}
	}
	keys = append(keys, allowKey{}, allowKey{hasIdentity: true}, allowKey{denied: true}, allowKey{status: 401}, allowKey{status: -1},
		allowKey{subject: strings.Repeat("s", keyBufferBytes)}, allowKey{subject: strings.Repeat("s", keyBufferBytes), tokenID: "t"})
	keys = slices.CompactFunc(keys, func(a, b allowKey) bool { return a == b }) // "a" then "" twice over
	seen := map[string]allowKey{}
	for _, k := range keys {
		enc := string(k.appendTo(nil))
		if prev, ok := seen[enc]; ok && prev != k {
			t.Errorf("%+v and %+v encode alike", prev, k)
		}
		seen[enc] = k
		again := k
		if string(again.appendTo(nil)) != enc {
			t.Errorf("%+v encodes in two ways", k)
		}
	}
	c := newResponseCache(len(keys) * 2)
	for i := range keys {
		c.put(&keys[i], &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(i)}})
	}
	for i := range keys {
		if r := decoded(t, c.get(&keys[i])); r.GetStatus().GetCode() != int32(i) {
			t.Errorf("%+v found the answer of %+v", keys[i], keys[r.GetStatus().GetCode()])
		}
	}
}
