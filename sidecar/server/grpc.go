package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

// MetadataNamespace is where Envoy files the dynamic metadata of allowed
// requests (the ext_authz filter's name).
const MetadataNamespace = "envoy.filters.http.ext_authz"

// AuthorizationServer implements envoy.service.auth.v3.Authorization.
type AuthorizationServer struct {
	authv3.UnimplementedAuthorizationServer
	core *Core
}

// NewAuthorizationServer returns the gRPC service over core.
func NewAuthorizationServer(core *Core) *AuthorizationServer {
	return &AuthorizationServer{core: core}
}

// Check answers one ext_authz check. Denials are CheckResponses with a nil
// error: an RPC error would make Envoy apply its failure mode instead.
// The server registered by Register does not call it: its handler reads
// the request as the codec decoded it (checkRequest), without the
// generated message, and answers with the shared encoded answer
// (sharedAnswer); Check builds its answer for each call.
func (s *AuthorizationServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	r := &authz.Request{
		Method:  httpReq.GetMethod(),
		Host:    httpReq.GetHost(),
		Path:    httpReq.GetPath(),
		Headers: grpcHeaders{httpReq},
	}
	return decide(s, httpReq.GetId(), r, (*Core).grpcResponse), nil
}

// checkDecoded answers a check the codec decoded into a checkRequest with
// a CheckResponse of its own (for an interceptor, which may read it).
func (s *AuthorizationServer) checkDecoded(req *checkRequest) *authv3.CheckResponse {
	r := req.authzRequest()
	return decide(s, req.id, &r, (*Core).grpcResponse)
}

// checkShared answers a check the codec decoded into a checkRequest with
// the shared encoded answer (Core.grpcAnswer), which only the codec reads.
func (s *AuthorizationServer) checkShared(req *checkRequest) any {
	r := req.authzRequest()
	return decide(s, req.id, &r, (*Core).grpcAnswer)
}

// authzRequest is what the engine reads of req; an API key's identity is
// written to req's room.
func (req *checkRequest) authzRequest() authz.Request {
	return authz.Request{Method: req.method, Host: req.host, Path: req.path, Headers: req, IdentityRoom: &req.identity}
}

// internalError is the verdict of a check that panicked.
var internalError = verdict{d: authz.Decision{Reason: authz.InternalError, Status: authz.InternalError.Status()}}

// decide checks r and answers the verdict as answer builds it; a panic,
// in the check or the answer, is an internal error, denied.
func decide[T any](s *AuthorizationServer, requestID string, r *authz.Request, answer func(*Core, verdict) T) (resp T) {
	defer func() {
		if p := recover(); p != nil {
			s.panicked(p)
			resp = answer(s.core, internalError)
		}
	}()
	return answer(s.core, s.core.check("grpc", requestID, r))
}

func (s *AuthorizationServer) panicked(p any) {
	s.core.opts.Log.Error(fmt.Errorf("panic of type %T in grpc check", p), "check panicked; denying")
}

// Register registers s as envoy.service.auth.v3.Authorization on a gRPC
// server that uses the Core's codec (GRPCCodec, which decodes the
// requests of this registration). It is authv3.RegisterAuthorizationServer
// but for the handler, which receives the request the codec decoded
// rather than the generated CheckRequest.
func (s *AuthorizationServer) Register(r grpc.ServiceRegistrar) {
	r.RegisterService(&authorizationServiceDesc, s)
}

// authorizationServiceDesc is authv3.Authorization_ServiceDesc with
// checkHandler for Check (same service, method and proto file, so that
// server reflection describes it).
var authorizationServiceDesc = grpc.ServiceDesc{
	ServiceName: "envoy.service.auth.v3.Authorization",
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    "envoy/service/auth/v3/external_auth.proto",
}

// checkHandler decodes a check and answers it. Without an interceptor the
// request is a pooled one, returned to the pool once answered, and the
// answer the shared encoded one; an interceptor gets a request and a
// CheckResponse of its own, which it may keep or read.
func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) { //nolint:revive // grpc.MethodHandler's order
	s := srv.(*AuthorizationServer)
	if interceptor == nil {
		in := checkRequests.Get().(*checkRequest)
		defer func() {
			in.reset()
			checkRequests.Put(in)
		}()
		if err := dec(in); err != nil {
			return nil, err
		}
		return s.checkShared(in), nil
	}
	in := new(checkRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, in, info, func(context.Context, any) (any, error) { return s.checkDecoded(in), nil })
}

// grpcHeaders reads a generated CheckRequest's headers: header_map (raw, one entry
// per field, sent with encode_raw_headers) when present, else the headers
// map (lower-case keys, repeated fields comma-joined). It is one pointer,
// so that making it an authz.Headers allocates nothing.
type grpcHeaders struct {
	http *authv3.AttributeContext_HttpRequest
}

func (h grpcHeaders) Values(name string) []string {
	if raw := h.http.GetHeaderMap().GetHeaders(); len(raw) > 0 {
		var out []string
		for _, hv := range raw {
			if strings.EqualFold(hv.GetKey(), name) {
				v := hv.GetValue()
				if v == "" {
					v = string(hv.GetRawValue())
				}
				out = append(out, v)
			}
		}
		return out
	}
	if v, ok := h.http.GetHeaders()[name]; ok {
		return []string{v}
	}
	return nil
}

// FirstValue is Values' first element and length, without building the
// slice (authz.FirstValuer): the credential headers are read on every
// check.
func (h grpcHeaders) FirstValue(name string) (string, int) {
	raw := h.http.GetHeaderMap().GetHeaders()
	if len(raw) == 0 {
		v, ok := h.http.GetHeaders()[name]
		if !ok {
			return "", 0
		}
		return v, 1
	}
	first, n := "", 0
	for _, hv := range raw {
		if strings.EqualFold(hv.GetKey(), name) {
			if n == 0 {
				first = hv.GetValue()
				if first == "" {
					first = string(hv.GetRawValue())
				}
			}
			n++
		}
	}
	return first, n
}

func (h grpcHeaders) Count() int {
	if raw := h.http.GetHeaderMap().GetHeaders(); len(raw) > 0 {
		return len(raw)
	}
	return len(h.http.GetHeaders())
}

func overwrite(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// statusCodes maps the HTTP status of a denial to the gRPC status code
// and Envoy's HttpStatus code. Anything unexpected is a 403.
func statusCodes(status int) (int32, typev3.StatusCode) {
	switch status {
	case http.StatusUnauthorized:
		return int32(codes.Unauthenticated), typev3.StatusCode_Unauthorized
	case http.StatusTooManyRequests:
		return int32(codes.ResourceExhausted), typev3.StatusCode_TooManyRequests
	case http.StatusBadRequest:
		return int32(codes.InvalidArgument), typev3.StatusCode_BadRequest
	case http.StatusRequestHeaderFieldsTooLarge:
		return int32(codes.InvalidArgument), typev3.StatusCode_RequestHeaderFieldsTooLarge
	default:
		return int32(codes.PermissionDenied), typev3.StatusCode_Forbidden
	}
}

// grpcResponse is the answer to v, built for this check (Check, and the
// handler under an interceptor).
func (c *Core) grpcResponse(v verdict) *authv3.CheckResponse {
	d := v.d
	if d.Allowed {
		return c.allowResponse(&d)
	}
	return c.denyResponse(&d)
}

// grpcAnswer is the answer to v as the handler sends it: the shared
// encoded answer (sharedAnswer) of every check with the same answer key,
// built and encoded on the first (grpcResponse); the CheckResponse itself
// if it does not encode. An allow's answer depends only on the identity,
// the policy and rule that decided and the Core's options, a denial's
// only on its reason, status, challenge and Retry-After: building one
// costs about 25 allocations, finding it one map look-up, and a flood of
// bad or expired credentials costs as little as possible. A kept answer
// is its bytes and its key, both copies: no request bytes (an API key's
// ID in the decision is part of the key as sent) stay in memory with it.
func (c *Core) grpcAnswer(v verdict) any {
	k := answerKeyOf(&v.d)
	if a := c.allows.get(&k); a != nil {
		return a
	}
	resp := c.grpcResponse(v)
	if a := c.allows.put(&k, resp); a != nil {
		return a
	}
	return resp
}

// answerKeyOf is the key of d's shared answer.
func answerKeyOf(d *authz.Decision) allowKey {
	if !d.Allowed {
		k := allowKey{denied: true, reason: d.Reason, status: d.Status, challenge: d.Challenge}
		if d.RetryAfter > 0 {
			k.retryAfter = retryAfterSeconds(d.RetryAfter)
		}
		return k
	}
	k := allowKey{reason: d.Reason, policy: d.Policy, rule: d.Rule, credentialHeader: d.CredentialHeader}
	if id := d.Identity; id != nil {
		k.hasIdentity = true
		k.credential, k.subject, k.keyID, k.issuer, k.tokenID = id.Credential, id.Subject, id.KeyID, id.Issuer, id.TokenID
		k.scopes = id.ScopesJoined()
	}
	return k
}

// denyResponse is the answer to a denied check.
func (c *Core) denyResponse(d *authz.Decision) *authv3.CheckResponse {
	headers := []*corev3.HeaderValueOption{
		overwrite("content-type", "application/json"),
		overwrite(c.opts.Headers.DenyReason, string(d.Reason)),
	}
	if d.Challenge != "" {
		headers = append(headers, overwrite("www-authenticate", d.Challenge))
	}
	if d.RetryAfter > 0 {
		headers = append(headers, overwrite("retry-after", retryAfterSeconds(d.RetryAfter)))
	}
	grpcCode, httpCode := statusCodes(d.Status)
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: grpcCode, Message: string(d.Reason)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpCode},
			Headers: headers,
			Body:    denyBody(d.Reason),
		}},
	}
}

// allowResponse is the answer to an allowed check: identity headers,
// headers to remove, dynamic metadata.
func (c *Core) allowResponse(d *authz.Decision) *authv3.CheckResponse {
	set, remove := c.identityHeaders(d)
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: overwriteAll(set), HeadersToRemove: remove}},
		DynamicMetadata: identityMetadata(d),
	}
}

// overwriteAll renders headers as HeaderValueOptions, allocating the
// messages in two blocks rather than two per header: this is the hot path.
func overwriteAll(set []upstreamHeader) []*corev3.HeaderValueOption {
	if len(set) == 0 {
		return nil
	}
	opts := make([]corev3.HeaderValueOption, len(set))
	vals := make([]corev3.HeaderValue, len(set))
	out := make([]*corev3.HeaderValueOption, len(set))
	for i, h := range set {
		vals[i].Key, vals[i].Value = h.name, h.value
		opts[i].Header = &vals[i]
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &opts[i]
	}
	return out
}

// identityMetadata is the dynamic metadata of an allowed request, for
// other Envoy filters (rate limiting, access logs): the identity and the
// policy and rule that decided. Empty values are left out.
func identityMetadata(d *authz.Decision) *structpb.Struct {
	fields := make(map[string]*structpb.Value, 9)
	add := func(k, v string) {
		if v != "" {
			fields[k] = structpb.NewStringValue(v)
		}
	}
	add("reason", string(d.Reason))
	add("policy", d.Policy)
	add("rule", d.Rule)
	if id := d.Identity; id != nil {
		add("credential", string(id.Credential))
		add("subject", id.Subject)
		add("keyId", id.KeyID)
		add("issuer", id.Issuer)
		add("tokenId", id.TokenID)
		if len(id.Scopes) > 0 {
			list := make([]*structpb.Value, len(id.Scopes))
			for i, sc := range id.Scopes {
				list[i] = structpb.NewStringValue(sc)
			}
			fields["scopes"] = structpb.NewListValue(&structpb.ListValue{Values: list})
		}
	}
	return &structpb.Struct{Fields: fields}
}
