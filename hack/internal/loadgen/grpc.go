package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// checkMethod is the full gRPC method name of ext_authz v3.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// GRPCTarget sends Check calls over one or more HTTP/2 connections.
type GRPCTarget struct {
	addr  string
	conns []*grpc.ClientConn
	next  atomic.Uint32
}

// DialGRPC prepares conns plaintext connections to addr (host:port). The
// connections are established lazily, by the first calls.
func DialGRPC(addr string, conns int) (*GRPCTarget, error) {
	if conns < 1 {
		conns = 1
	}
	t := &GRPCTarget{addr: addr}
	for range conns {
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
		)
		if err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("creating grpc client for %s: %w", addr, err)
		}
		t.conns = append(t.conns, cc)
	}
	return t, nil
}

// NewCaller returns a caller bound to the next connection, round robin.
func (t *GRPCTarget) NewCaller() Caller {
	i := t.next.Add(1) - 1
	return &grpcCaller{cc: t.conns[int(i)%len(t.conns)]}
}

// Close closes every connection.
func (t *GRPCTarget) Close() error {
	var errs []error
	for _, cc := range t.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// String names the target.
func (t *GRPCTarget) String() string { return "grpc://" + t.addr }

type grpcCaller struct {
	cc *grpc.ClientConn
}

func (c *grpcCaller) Call(ctx context.Context, r *Request) (Outcome, error) {
	var o Outcome
	if err := c.cc.Invoke(ctx, checkMethod, r, &o); err != nil {
		return Outcome{}, fmt.Errorf("check: %w", err)
	}
	return o, nil
}

// rawCodec sends a Request's pre-encoded CheckRequest as is and decodes only
// the verdict fields of the CheckResponse into an Outcome, so the client's
// cost per call does not grow with the size of the server's answer.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*Request)
	if !ok {
		return nil, fmt.Errorf("rawCodec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(r.encoded)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	o, ok := v.(*Outcome)
	if !ok {
		return fmt.Errorf("rawCodec cannot unmarshal into %T", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	out, err := decodeCheckResponse(buf.ReadOnlyData())
	if err != nil {
		return err
	}
	*o = out
	return nil
}

// Field numbers of the messages decodeCheckResponse reads.
const (
	checkResponseStatus         = 1 // google.rpc.Status status
	checkResponseDeniedResponse = 2 // DeniedHttpResponse denied_response
	checkResponseErrorResponse  = 5 // DeniedHttpResponse error_response
	rpcStatusCode               = 1 // int32 code
	deniedResponseStatus        = 1 // envoy.type.v3.HttpStatus status
	httpStatusCode              = 1 // StatusCode code
)

// errMalformedResponse is returned for a CheckResponse that is not valid
// protobuf wire format.
var errMalformedResponse = errors.New("malformed CheckResponse")

// decodeCheckResponse reads status.code and the denied (or error) response's
// HTTP status from an encoded CheckResponse without decoding the rest.
func decodeCheckResponse(b []byte) (Outcome, error) {
	var code int32
	httpStatus := 0
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		switch {
		case num == checkResponseStatus && typ == protowire.BytesType:
			return eachField(v, func(num protowire.Number, typ protowire.Type, _ []byte, n uint64) error {
				if num == rpcStatusCode && typ == protowire.VarintType {
					code = varintInt32(n)
				}
				return nil
			})
		case (num == checkResponseDeniedResponse || num == checkResponseErrorResponse) && typ == protowire.BytesType:
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != deniedResponseStatus || typ != protowire.BytesType {
					return nil
				}
				return eachField(v, func(num protowire.Number, typ protowire.Type, _ []byte, n uint64) error {
					if num == httpStatusCode && typ == protowire.VarintType {
						httpStatus = int(varintInt32(n))
					}
					return nil
				})
			})
		}
		return nil
	})
	if err != nil {
		return Outcome{}, err
	}
	if code == 0 {
		return Outcome{Allowed: true}, nil
	}
	if httpStatus == 0 {
		httpStatus = 403 // what Envoy sends for a denial without a status
	}
	return Outcome{Status: httpStatus, GRPCCode: code}, nil
}

// varintInt32 reads a varint-encoded int32 field. Negative values arrive
// sign-extended to 64 bits; anything outside int32 is reported as -1, which
// is neither OK nor a valid HTTP status.
func varintInt32(n uint64) int32 {
	v := int64(n) //nolint:gosec // reinterpreting the two's complement encoding
	if v < math.MinInt32 || v > math.MaxInt32 {
		return -1
	}
	return int32(v)
}

// eachField calls fn for every field of an encoded message with the field's
// bytes (length-delimited fields) or its integer value (varints).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return errMalformedResponse
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return errMalformedResponse
		}
		b = b[l:]
		if err := fn(num, typ, v, n); err != nil {
			return err
		}
	}
	return nil
}
