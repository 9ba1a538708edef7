package server

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

// lookedUp are the header names every comparison reads, besides the names
// the request holds: the engine's credential headers, and one absent.
var lookedUp = []string{"authorization", "x-api-key", "x-gatehouse-key", "host", "absent", ""}

// sameDecisionInputs fails unless got (the codec's checkRequest) gives the
// handler what want (the generated message, read through grpcHeaders as
// before) gives it: request id, method, host, path, the header count,
// and Values and FirstValue of every name either holds, as sent and in
// lower case, and of the engine's names.
func sameDecisionInputs(t *testing.T, got *checkRequest, want *authv3.CheckRequest) {
	t.Helper()
	h := want.GetAttributes().GetRequest().GetHttp()
	if got.id != h.GetId() || got.method != h.GetMethod() || got.host != h.GetHost() || got.path != h.GetPath() {
		t.Fatalf("id, method, host, path = %q %q %q %q; want %q %q %q %q",
			got.id, got.method, got.host, got.path, h.GetId(), h.GetMethod(), h.GetHost(), h.GetPath())
	}
	old := grpcHeaders{h}
	if got.Count() != old.Count() {
		t.Fatalf("Count() = %d, want %d", got.Count(), old.Count())
	}
	if got.CountBound() < got.Count() {
		t.Fatalf("CountBound() = %d, below Count() = %d", got.CountBound(), got.Count())
	}
	names := slices.Clone(lookedUp)
	for k := range h.GetHeaders() {
		names = append(names, k, strings.ToLower(k), strings.ToUpper(k))
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		names = append(names, hv.GetKey(), strings.ToLower(hv.GetKey()))
	}
	for _, f := range got.headers {
		names = append(names, f.name)
	}
	for _, name := range names {
		if vs, want := got.Values(name), old.Values(name); !slices.Equal(vs, want) {
			t.Fatalf("Values(%q) = %q, want %q", name, vs, want)
		}
		v, n := got.FirstValue(name)
		if wv, wn := old.FirstValue(name); v != wv || n != wn {
			t.Fatalf("FirstValue(%q) = %q, %d; want %q, %d", name, v, n, wv, wn)
		}
	}
}

// checkBothWays decodes b with the codec's decoder (decodeCheck) and with
// the standard one and the previous one (decodeCheckRequest into the
// generated message): the codec's must refuse exactly what the previous
// one refused, accept whatever the standard decoder accepts, and give the
// handler the same decision inputs.
func checkBothWays(t *testing.T, b []byte) {
	t.Helper()
	got := &checkRequest{}
	err := decodeCheck(b, got)
	prev := &authv3.CheckRequest{}
	prevErr := decodeCheckRequest(b, prev)
	if (err == nil) != (prevErr == nil) {
		t.Fatalf("decodeCheck: %v; the previous decoder: %v", err, prevErr)
	}
	std := &authv3.CheckRequest{}
	stdErr := proto.Unmarshal(b, std)
	if stdErr == nil && err != nil {
		t.Fatalf("the standard decoder accepts what decodeCheck refuses: %v", err)
	}
	reused := reusedRequest(t)
	if reusedErr := decodeCheck(b, reused); (reusedErr == nil) != (err == nil) {
		t.Fatalf("decodeCheck into a reused request: %v; into a new one: %v", reusedErr, err)
	}
	if err != nil {
		return
	}
	sameDecisionInputs(t, got, prev)
	sameDecisionInputs(t, reused, prev)
	if stdErr == nil {
		sameDecisionInputs(t, got, std)
	}
}

// reusedRequest is a request as the pool gives it back: one that held a
// request with headers in both forms, then reset.
func reusedRequest(t *testing.T) *checkRequest {
	t.Helper()
	r := &checkRequest{}
	b, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Id: "i", Method: "POST", Host: "h", Path: "/p",
			Headers: map[string]string{"authorization": "Bearer old", "x-api-key": "old", "a": "1", "b": "2"}, HeaderMap: rawHeaders("x-api-key", "old", "c", "3")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeCheck(b, r); err != nil || len(r.headers) != 4 || len(r.raw) != 2 {
		t.Fatalf("decoding the request to reuse: %v, %d and %d fields", err, len(r.headers), len(r.raw))
	}
	// What an API key check writes to the request's room (its key ID a
	// substring of the request).
	r.identity = authz.Identity{Credential: authz.CredentialAPIKey, Subject: "svc", KeyID: r.headers[0].value, Scopes: []string{"read"}}
	r.reset()
	return r
}

// TestResetKeepsNoStringOfTheRequest: a request going back to the pool
// keeps room for header fields but no string of the request it held
// (they point into its bytes, credential included), and gives up the
// room of a request with more fields than maxPooledFields.
func TestResetKeepsNoStringOfTheRequest(t *testing.T) {
	r := reusedRequest(t)
	if r.id != "" || r.method != "" || r.host != "" || r.path != "" || len(r.headers) != 0 || len(r.raw) != 0 {
		t.Fatalf("reset left %+v", r)
	}
	if !reflect.DeepEqual(r.identity, authz.Identity{}) {
		t.Fatalf("reset kept the identity %+v", r.identity)
	}
	if cap(r.headers) == 0 || cap(r.raw) == 0 {
		t.Fatal("reset gave up the room of a small request")
	}
	for _, f := range append(r.headers[:cap(r.headers)], r.raw[:cap(r.raw)]...) {
		if f != (headerField{}) {
			t.Fatalf("reset kept the field %+v", f)
		}
	}
	r.headers = make([]headerField, maxPooledFields+1)
	r.reset()
	if r.headers != nil {
		t.Fatalf("reset kept room for %d fields", cap(r.headers))
	}
}

// headerRequests are requests whose headers test the lookups: the map's
// exact lower-case names and last-wins repeated keys (two messages merged),
// header_map's names without case, repeated fields and raw values.
func headerRequests(t testing.TB) [][]byte {
	t.Helper()
	marshal := func(h *authv3.AttributeContext_HttpRequest) []byte {
		b, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := marshal(&authv3.AttributeContext_HttpRequest{Method: "GET", Headers: map[string]string{"authorization": "Bearer a", "x-api-key": "k1", "host": "h"}})
	second := marshal(&authv3.AttributeContext_HttpRequest{Path: "/p", Headers: map[string]string{"x-api-key": "k2", "authorization": ""}})
	reqs := [][]byte{
		nil,
		marshal(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"authorization": "Bearer a", "x-api-key": ""}}),
		marshal(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"Authorization": "upper-case keys are not found in the map"}}),
		marshal(&authv3.AttributeContext_HttpRequest{HeaderMap: rawHeaders("Authorization", "Bearer a", "x-api-key", "k1", "X-API-KEY", "k2", "x-empty", "")}),
		marshal(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"authorization": "not read: header_map is set"}, HeaderMap: rawHeaders("x-api-key", "k")}),
		marshal(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"x-api-key": "read: header_map is empty"}, HeaderMap: rawHeaders()}),
		append(slices.Clone(first), second...),
		append(slices.Clone(second), first...),
	}
	many := map[string]string{}
	for i := range 40 {
		many[strings.Repeat("x", i+1)] = "v"
	}
	manyAgain := map[string]string{"x": "again", "xx": "again", "new": "v"}
	reqs = append(reqs, append(marshal(&authv3.AttributeContext_HttpRequest{Headers: many}), marshal(&authv3.AttributeContext_HttpRequest{Headers: manyAgain})...))
	return reqs
}

func TestTheHandlersRequestReadsWhatTheGeneratedMessageGave(t *testing.T) {
	for _, b := range headerRequests(t) {
		checkBothWays(t, b)
	}
	for name, b := range sampleRequests(t) {
		t.Run(name, func(t *testing.T) { checkBothWays(t, b) })
	}
}

// FuzzCheckRequestDecodesAsTheGeneratedMessage holds decodeCheck and the
// checkRequest's lookups to the generated message's (the standard decoder
// and the previous one, read through grpcHeaders).
func FuzzCheckRequestDecodesAsTheGeneratedMessage(f *testing.F) {
	for _, b := range headerRequests(f) {
		f.Add(b)
	}
	for _, b := range sampleRequests(f) {
		f.Add(b)
	}
	f.Fuzz(checkBothWays)
}

// wrapHTTP is a CheckRequest whose attributes.request.http message is
// http, built by hand so that its strings may be anything.
func wrapHTTP(http []byte) []byte {
	msg := func(num protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	return msg(fieldCheckRequestAttributes, msg(fieldAttributesRequest, msg(fieldRequestHTTP, http)))
}

// httpField is one bytes field of a message.
func httpField(num protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

// headerEntry is a headers map entry, or a header_map HeaderValue.
func headerEntry(name, value string) []byte {
	return append(httpField(fieldMapKey, []byte(name)), httpField(fieldMapValue, []byte(value))...)
}

// TestTheHandlersDecoderChecksUTF8WhereItCanFail: strings are checked to
// be UTF-8 one by one only where the bytes around them are not all ASCII;
// a string that is not UTF-8 has a byte of 0x80 or more, so it is always
// checked, whatever the header field or message around it.
func TestTheHandlersDecoderChecksUTF8WhereItCanFail(t *testing.T) {
	long := strings.Repeat("t", 200) // a field whose length takes two bytes
	cases := map[string][]byte{
		"in a short header value":                   httpField(fieldHTTPHeaders, headerEntry("x", "o\xff")),
		"in a long header value":                    httpField(fieldHTTPHeaders, headerEntry("authorization", long+"\xff")),
		"in a header name, next to a long header":   append(httpField(fieldHTTPHeaders, headerEntry("authorization", long)), httpField(fieldHTTPHeaders, headerEntry("\xc3", "v"))...),
		"in the path, next to a long header":        append(httpField(fieldHTTPHeaders, headerEntry("authorization", long)), httpField(fieldHTTPPath, []byte("/\xff"))...),
		"in the path of an otherwise ASCII request": append(httpField(fieldHTTPMethod, []byte("GET")), httpField(fieldHTTPPath, []byte("/\xed\xa0\x80"))...),
		"in a header_map name":                      httpField(fieldHTTPHeaderMap, httpField(fieldHeaderMapHeader, headerEntry("x-\xff", "v"))),
		"in a header_map value, next to a long one": httpField(fieldHTTPHeaderMap, append(httpField(fieldHeaderMapHeader, headerEntry("a", long)), httpField(fieldHeaderMapHeader, headerEntry("b", "\xff"))...)),
	}
	for name, http := range cases {
		b := wrapHTTP(http)
		if err := proto.Unmarshal(b, &authv3.CheckRequest{}); err == nil {
			t.Fatalf("%s: the standard decoder accepts it: the case tests nothing", name)
		}
		if err := decodeCheck(b, &checkRequest{}); err == nil {
			t.Errorf("a string that is not UTF-8 %s was accepted", name)
		}
		checkBothWays(t, b)
	}
	valid := wrapHTTP(append(httpField(fieldHTTPHeaders, headerEntry("authorization", long+"é")), httpField(fieldHTTPHeaders, headerEntry("é", "ünïcode"))...))
	got := &checkRequest{}
	if err := decodeCheck(valid, got); err != nil || got.Count() != 2 {
		t.Fatalf("UTF-8 that is not ASCII: %v, %d headers", err, got.Count())
	}
	checkBothWays(t, valid)
}
