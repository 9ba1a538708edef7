package loadgen

import (
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestTheVerdictDecoderAgreesWithTheFullProtobufDecoding(t *testing.T) {
	meta, _ := structpb.NewStruct(map[string]any{"subject": "service:a", "scopes": []any{"a", "b"}})
	cases := []struct {
		name string
		resp *authv3.CheckResponse
		want Outcome
	}{
		{"an allow with identity headers and metadata", &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:         []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-gatehouse-subject", Value: "service:a"}}},
				HeadersToRemove: []string{"x-api-key"},
			}},
			DynamicMetadata: meta,
		}, Outcome{Allowed: true}},
		{"an allow with no status at all", &authv3.CheckResponse{}, Outcome{Allowed: true}},
		{"a 401 denial", &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.Unauthenticated), Message: "invalid_token"},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "www-authenticate", Value: `Bearer error="invalid_token"`}}},
				Body:    `{"error":"invalid_token"}`,
			}},
		}, Outcome{Status: 401, GRPCCode: int32(codes.Unauthenticated)}},
		{"a 429 denial", &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.ResourceExhausted)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
			}},
		}, Outcome{Status: 429, GRPCCode: int32(codes.ResourceExhausted)}},
		{"a denial without an HTTP status, which Envoy turns into 403", &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.PermissionDenied)},
		}, Outcome{Status: 403, GRPCCode: int32(codes.PermissionDenied)}},
		{"a negative status code, which is still a denial", &authv3.CheckResponse{
			Status: &status.Status{Code: -5},
		}, Outcome{Status: 403, GRPCCode: -5}},
		{"an error response", &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.Internal)},
			HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
			}},
		}, Outcome{Status: 503, GRPCCode: int32(codes.Internal)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeCheckResponse(b)
			if err != nil {
				t.Fatalf("decoding: %v", err)
			}
			if got != tc.want {
				t.Errorf("decoded %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTheVerdictDecoderRejectsExactlyTheTruncationsProtobufRejects(t *testing.T) {
	// Every field of this message is one the decoder walks into, so it must
	// accept and reject the same prefixes as the full decoder.
	b, _ := proto.Marshal(&authv3.CheckResponse{
		Status: &status.Status{Code: 16},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: 401}, Body: "some body text",
		}},
	})
	for cut := 0; cut <= len(b); cut++ {
		_, err := decodeCheckResponse(b[:cut])
		perr := proto.Unmarshal(b[:cut], &authv3.CheckResponse{})
		if (err != nil) != (perr != nil) {
			t.Errorf("prefix of %d/%d bytes: decoder error %v, protobuf error %v", cut, len(b), err, perr)
		}
	}
	if _, err := decodeCheckResponse([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Error("garbage decoded without an error")
	}
}

func TestExpectationsMatchOnlyTheRightVerdict(t *testing.T) {
	allow, deny401, deny := Expect{Allow: true}, Expect{Status: 401}, Expect{}
	cases := []struct {
		e    Expect
		o    Outcome
		want bool
	}{
		{allow, Outcome{Allowed: true}, true},
		{allow, Outcome{Status: 401}, false},
		{deny401, Outcome{Status: 401}, true},
		{deny401, Outcome{Status: 403}, false},
		{deny401, Outcome{Allowed: true}, false},
		{deny, Outcome{Status: 429}, true},
		{deny, Outcome{Allowed: true}, false},
	}
	for _, tc := range cases {
		if got := tc.e.Matches(tc.o); got != tc.want {
			t.Errorf("%v matches %+v = %v, want %v", tc.e, tc.o, got, tc.want)
		}
	}
}

func TestARequestNeverPrintsItsHeaderValues(t *testing.T) {
	const secret = "gth_credential_that_must_not_leak"
	r, err := NewRequest("GET", "app.test", "/x", map[string]string{"X-Api-Key": secret}, Expect{Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, r); strings.Contains(s, secret) {
			t.Errorf("%s printed the credential: %s", verb, s)
		}
	}
	if got := r.CheckRequest().GetAttributes().GetRequest().GetHttp().GetHeaders()["x-api-key"]; got != secret {
		t.Errorf("the CheckRequest carries x-api-key %q, want the credential (header names lower-cased)", got)
	}
}

func TestThePreEncodedRequestDecodesToTheEnvoyShapedCheckRequest(t *testing.T) {
	r, err := NewRequest("POST", "api.test", "/orders?id=1", map[string]string{"authorization": "Bearer t"}, Expect{Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	got := &authv3.CheckRequest{}
	if err := proto.Unmarshal(r.encoded, got); err != nil {
		t.Fatal(err)
	}
	h := got.GetAttributes().GetRequest().GetHttp()
	if h.GetMethod() != "POST" || h.GetPath() != "/orders?id=1" || h.GetHost() != "api.test" {
		t.Errorf("http attributes %v %v %v, want POST /orders?id=1 api.test", h.GetMethod(), h.GetPath(), h.GetHost())
	}
	for k, want := range map[string]string{":method": "POST", ":path": "/orders?id=1", ":authority": "api.test", "authorization": "Bearer t"} {
		if h.GetHeaders()[k] != want {
			t.Errorf("header %s = %q, want %q", k, h.GetHeaders()[k], want)
		}
	}
}
