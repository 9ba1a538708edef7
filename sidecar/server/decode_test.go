package server

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// readPart is what the sidecar reads of a request decoded by the standard
// decoder: attributes.request.http without body, raw body and unknown
// fields. decodeCheckRequest must produce exactly this.
func readPart(t testing.TB, b []byte) (*authv3.CheckRequest, error) {
	t.Helper()
	full := &authv3.CheckRequest{}
	if err := proto.Unmarshal(b, full); err != nil {
		return nil, err
	}
	out := &authv3.CheckRequest{}
	if a := full.GetAttributes(); a != nil {
		out.Attributes = &authv3.AttributeContext{}
		if r := a.GetRequest(); r != nil {
			out.Attributes.Request = &authv3.AttributeContext_Request{}
			if h := r.GetHttp(); h != nil {
				h.Body, h.RawBody = "", nil
				h.ProtoReflect().SetUnknown(nil)
				if hm := h.GetHeaderMap(); hm != nil {
					hm.ProtoReflect().SetUnknown(nil)
					for _, hv := range hm.GetHeaders() {
						hv.ProtoReflect().SetUnknown(nil)
					}
				}
				out.Attributes.Request.Http = h
			}
		}
	}
	return out, nil
}

func sampleRequests(t testing.TB) map[string][]byte {
	t.Helper()
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	compact := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Id: "r1", Method: "GET", Host: "api.example.com", Path: "/orders/1?x=1",
		Headers: map[string]string{":authority": "api.example.com", "authorization": "Bearer a.b.c", "x-api-key": "", "é": "ünïcode"},
	}}}}
	md, err := structpb.NewStruct(map[string]any{"route": "orders"})
	if err != nil {
		t.Fatal(err)
	}
	envoy := proto.Clone(compact).(*authv3.CheckRequest)
	envoy.Attributes.Source = &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/a/sa/b", Labels: map[string]string{"app": "a"},
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 4000}}}}}
	envoy.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/c/sa/d", Service: "orders"}
	envoy.Attributes.ContextExtensions = map[string]string{"policy": "main"}
	envoy.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"x": md}}
	envoy.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "api.example.com"}
	envoy.Attributes.Request.Time = timestamppb.Now()
	h := envoy.Attributes.Request.Http
	h.Scheme, h.Protocol, h.Size, h.Query, h.Fragment, h.Body, h.RawBody = "https", "HTTP/2", 12, "q", "f", `{"a":1}`, []byte{0xff, 0}
	raw := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/", HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "authorization", RawValue: []byte("Bearer x")}, {Key: "x-api-key", Value: "k"}, {Key: "authorization", RawValue: []byte("Bearer y")},
		}},
	}}}}
	// Two occurrences of attributes and of http merge, as protobuf does;
	// unknown fields and other wire types are skipped.
	merged := append(marshal(compact), marshal(raw)...)
	unknown := protowire.AppendTag(marshal(compact), 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 7)
	unknown = protowire.AppendTag(unknown, 1, protowire.Fixed32Type) // attributes with the wrong wire type
	unknown = protowire.AppendFixed32(unknown, 1)
	return map[string][]byte{"compact": marshal(compact), "envoy": marshal(envoy), "raw": marshal(raw), "merged": merged, "unknown": unknown, "empty": nil}
}

func TestTheDecoderReadsExactlyWhatTheStandardDecoderReads(t *testing.T) {
	for name, b := range sampleRequests(t) {
		t.Run("The "+name+" request decodes to the standard decoder's http attributes", func(t *testing.T) {
			want, err := readPart(t, b)
			if err != nil {
				t.Fatalf("the standard decoder refused the sample: %v", err)
			}
			got := &authv3.CheckRequest{}
			if err := decodeCheckRequest(b, got); err != nil {
				t.Fatalf("decodeCheckRequest: %v", err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded\n%v\nwant\n%v", got, want)
			}
			if name == "envoy" && (got.GetAttributes().GetSource() != nil || got.GetAttributes().GetContextExtensions() != nil || got.GetAttributes().GetRequest().GetHttp().GetBody() != "") {
				t.Fatalf("fields the sidecar does not read were decoded")
			}
		})
	}
}

func TestTheDecoderRefusesWhatTheStandardDecoderRefuses(t *testing.T) {
	good := sampleRequests(t)["envoy"]
	badUTF8 := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Headers: map[string]string{"x": "ok"},
	}}}}
	b, err := proto.Marshal(badUTF8)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:len(b)-1]
	b = append(b, 0xff) // the header value "ok" becomes "o\xff"
	cases := map[string][]byte{
		"A request cut in the middle is refused":          good[:len(good)/2],
		"A header value that is not UTF-8 is refused":     b,
		"A length beyond the end of the data is refused":  {0x0a, 0x7f, 0x00},
		"A lone end-group tag is refused":                 {0x0c},
		"A tag with field number zero is refused":         {0x00, 0x01},
		"A varint that never ends is refused":             {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"A truncated map entry inside http is refused":    {0x0a, 0x06, 0x22, 0x04, 0x12, 0x02, 0x1a, 0x05},
		"A truncated header_map inside http is refused":   {0x0a, 0x06, 0x22, 0x04, 0x12, 0x02, 0x6a, 0x05},
		"A truncated request attribute is refused":        {0x0a, 0x03, 0x22, 0x05, 0x00},
		"A truncated attributes message is refused":       {0x0a, 0x05, 0x22},
		"A start-group tag that never closes is refused":  {0x0b, 0x08, 0x01},
		"A truncated fixed64 field at the end is refused": {0x09, 0x01, 0x02},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := readPart(t, b); err == nil {
				t.Fatalf("the standard decoder accepts this input: the case tests nothing")
			}
			if err := decodeCheckRequest(b, &authv3.CheckRequest{}); err == nil {
				t.Fatalf("decodeCheckRequest accepted it")
			}
		})
	}
}

// FuzzDecodeCheckRequest: whatever the standard decoder accepts, the
// sidecar's decoder accepts too and reads the same http attributes; what
// it accepts holds only valid UTF-8 strings.
func FuzzDecodeCheckRequest(f *testing.F) {
	for _, b := range sampleRequests(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := &authv3.CheckRequest{}
		err := decodeCheckRequest(b, got)
		want, stdErr := readPart(t, b)
		if stdErr != nil {
			return
		}
		if err != nil {
			t.Fatalf("the standard decoder accepts what decodeCheckRequest refuses: %v", err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("decoded\n%v\nwant\n%v", got, want)
		}
	})
}

// TestIsASCIIFindsAHighByteAnywhere checks isASCII, which reads 32 and 8
// bytes at a time, against a byte-by-byte reading: for every length up to
// three chunks and a tail, with no high byte, and with one at each place.
func TestIsASCIIFindsAHighByteAnywhere(t *testing.T) {
	for n := 0; n <= 3*32+7; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		if !isASCII(b) {
			t.Fatalf("%d ASCII bytes: not ASCII", n)
		}
		for at := range b {
			for _, high := range []byte{0x80, 0xc3, 0xff} {
				c := b[at]
				b[at] = high
				if isASCII(b) {
					t.Fatalf("%d bytes with %#x at %d: ASCII", n, high, at)
				}
				b[at] = c
			}
		}
	}
}
