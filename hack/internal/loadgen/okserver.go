package loadgen

import (
	"context"
	"fmt"
	"net/http"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// OKServer is the baseline ext_authz server: it allows every request and
// does nothing else, so it measures the cost of gRPC (or HTTP) itself on
// this machine. Ratios against it isolate the cost of real authorization.
// Served with FloorCodec it is the cheapest ext_authz server the gRPC stack
// allows: see FloorCodec.
type OKServer struct {
	authv3.UnimplementedAuthorizationServer
}

// okResponse is shared: the server never modifies it, and gRPC only reads it.
var okResponse = &authv3.CheckResponse{
	Status:       &status.Status{Code: int32(codes.OK)},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
}

// Check allows the request.
func (OKServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

// ServeHTTP answers the HTTP ext_authz contract with 200 for any method and
// path.
func (OKServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
}

// Baseline decoding modes of FloorCodec.
const (
	// DecodeNone drops the request bytes undecoded: the floor.
	DecodeNone = "none"
	// DecodeStandard decodes the whole request with the standard
	// protobuf codec, as a server without a codec of its own does.
	DecodeStandard = "standard"
)

// FloorCodec returns the baseline's gRPC server codec (install it with
// grpc.ForceServerCodecV2). It sends the one answer encoded once at start,
// shared by every call, and, with decode DecodeNone, does not decode the
// request at all: gRPC still reads, frames and hands over every request's
// bytes, and nothing else is done with them. No ext_authz server can spend
// less on the same gRPC stack, which makes it the floor the sidecar's cost
// is measured against; the sidecar's own codec also sends prebuilt answers
// but must decode the parts of the request it reads. With DecodeStandard
// the request is decoded in full, as the standard codec does.
func FloorCodec(decode string) (encoding.CodecV2, error) {
	b, err := proto.Marshal(okResponse)
	if err != nil {
		return nil, fmt.Errorf("encoding the baseline answer: %w", err)
	}
	switch decode {
	case DecodeNone, DecodeStandard:
	default:
		return nil, fmt.Errorf("decode mode %q: want %s or %s", decode, DecodeNone, DecodeStandard)
	}
	return floorCodec{base: encoding.GetCodecV2(grpcproto.Name), answer: mem.BufferSlice{mem.SliceBuffer(b)}, decode: decode != DecodeNone}, nil
}

type floorCodec struct {
	base   encoding.CodecV2
	answer mem.BufferSlice
	decode bool
}

func (c floorCodec) Name() string { return c.base.Name() }

func (c floorCodec) Marshal(v any) (mem.BufferSlice, error) {
	if v == okResponse {
		return c.answer, nil
	}
	return c.base.Marshal(v)
}

func (c floorCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if _, ok := v.(*authv3.CheckRequest); ok && !c.decode {
		return nil
	}
	return c.base.Unmarshal(data, v)
}
