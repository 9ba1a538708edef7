package xdssim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"gatehouse.dev/gatehouse/operator/xds"
)

// Target is where and as whom a simulated sidecar connects.
type Target struct {
	// Addresses are the operator replicas (host:port). Sidecar i starts
	// at Addresses[i%len(Addresses)] and moves to the next when a stream
	// fails.
	Addresses []string
	// TLS trusts the operator's CA and names its server (RootCAs and
	// ServerName). Required: bearer tokens never go in the clear.
	TLS *tls.Config
	// Namespace is the sidecar's namespace, for reports.
	Namespace string
	// Token returns the bearer token (a projected ServiceAccount token);
	// it is called for every stream.
	Token func(ctx context.Context) (string, error)
	// Belongs says whether a resource received belongs to the sidecar's
	// namespace; nil accepts everything.
	Belongs func(typeURL, name string, msg proto.Message) bool
	// MaxRecvBytes bounds one response (DefaultMaxRecvBytes when 0).
	MaxRecvBytes int

	// dialOptions are added to the connection's (tests).
	dialOptions []grpc.DialOption
}

// DefaultMaxRecvBytes bounds one response unless the Target says
// otherwise: the first response of a type holds the whole namespace.
const DefaultMaxRecvBytes = 512 << 20

// Backoff between two streams after a failure: small and bounded, so a
// simulation measures the operator, not the wait.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// errDropped ends a stream that Reconnect dropped.
var errDropped = errors.New("dropped by Reconnect")

// Reconnect drops the current stream and its connection now; the sidecar
// reconnects at once to the same address with the versions it holds.
func (s *Sidecar) Reconnect() {
	s.mu.Lock()
	drop := s.drop
	s.mu.Unlock()
	if drop != nil {
		drop()
	}
}

// run connects, streams and reconnects until ctx ends.
func (s *Sidecar) run(ctx context.Context) {
	if len(s.target.Addresses) == 0 || s.target.TLS == nil || s.target.Token == nil {
		s.report(fmt.Sprintf("sidecar %d: a target needs addresses, TLS and a token", s.index))
		return
	}
	addr := s.index % len(s.target.Addresses)
	backoff := minBackoff
	for ctx.Err() == nil {
		answered, err := s.connect(ctx, s.target.Addresses[addr])
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errDropped):
			continue
		case answered:
			backoff = minBackoff
		}
		addr = (addr + 1) % len(s.target.Addresses)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// connect opens a connection of its own to addr and runs one stream on it.
func (s *Sidecar) connect(ctx context.Context, addr string) (answered bool, err error) {
	maxRecv := s.target.MaxRecvBytes
	if maxRecv <= 0 {
		maxRecv = DefaultMaxRecvBytes
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(s.target.TLS)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecv)),
	}, s.target.dialOptions...)
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return false, err
	}
	defer func() { _ = conn.Close() }()
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.mu.Lock()
	s.drop = func() { cancel(errDropped); _ = conn.Close() }
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.drop = nil
		s.mu.Unlock()
	}()
	answered, err = s.stream(sctx, conn)
	if errors.Is(context.Cause(sctx), errDropped) {
		return answered, errDropped
	}
	return answered, err
}

// stream subscribes to every type with the wildcard and the versions
// held, then applies and acknowledges responses until the stream fails.
func (s *Sidecar) stream(ctx context.Context, conn *grpc.ClientConn) (answered bool, err error) {
	token, err := s.target.Token(ctx)
	if err != nil {
		return false, fmt.Errorf("token: %w", err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	for _, typ := range xds.Types {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: s.versions(typ)}
		if err := st.Send(req); err != nil {
			_, err = st.Recv() // the stream's status says why
			return false, err
		}
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return answered, err
		}
		answered = true
		ack := &discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}
		if refused := s.apply(r); refused > 0 {
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: fmt.Sprintf("%d resources refused", refused)}
		}
		if err := st.Send(ack); err != nil {
			return answered, err
		}
	}
}
