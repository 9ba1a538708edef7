package loadgen

import (
	"context"
	"net/http"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// OKServer is the baseline ext_authz server: it allows every request and
// does nothing else, so it measures the cost of gRPC (or HTTP) itself on
// this machine. Ratios against it isolate the cost of real authorization.
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
