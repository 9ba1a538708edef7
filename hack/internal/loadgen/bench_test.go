package loadgen

import (
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// The client's own cost per request: these must stay far below the cost of
// the server under test.

func BenchmarkDecodeCheckResponse(b *testing.B) {
	enc, _ := proto.Marshal(&authv3.CheckResponse{
		Status: &status.Status{Code: 16},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: 401}, Body: `{"error":"missing_credential"}`,
		}},
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeCheckResponse(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	d := time.Duration(0)
	for b.Loop() {
		d += 997
		h.Record(d % (50 * time.Millisecond))
	}
}

func BenchmarkGRPCCallToTheOKServer(b *testing.B) {
	target := startGRPC(b, OKServer{})
	r, err := NewRequest("GET", "app.test", "/api/orders", map[string]string{"x-api-key": "good"}, Expect{Allow: true})
	if err != nil {
		b.Fatal(err)
	}
	c := target.NewCaller()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Call(b.Context(), r); err != nil {
			b.Fatal(err)
		}
	}
}
