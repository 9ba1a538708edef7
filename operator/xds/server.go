// Package xds is the operator's delta xDS server: it serves each
// namespace's Gatehouse state (API key entries, issuer key sets, compiled
// AuthPolicies; see api/xds/v1alpha1) to the sidecars of that namespace
// over envoy.service.discovery.v3 aggregated delta discovery, with
// go-control-plane's server and a cache per type per namespace (typeCache).
//
// Every operator replica serves, from its own informer cache: no leader
// is needed. A stream is admitted only with a ServiceAccount token for the
// xDS audience, bound to a pod, checked with TokenReview; its namespace
// comes from that identity alone, and it is answered only from that
// namespace's caches, whatever names it subscribes to. A pod holds
// MaxStreamsPerPod streams at most; one more ends its oldest.
package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// MaxConnectionAge bounds how long a client keeps one connection, and so
// how long one authentication lasts (grpc-go adds up to 10% jitter).
const MaxConnectionAge = 30 * time.Minute

// KeepaliveMinTime is the shortest interval between a client's keepalive
// pings the server accepts (a client pinging more often is sent away).
// Sidecars ping so that a replica that vanished silently is noticed and
// they fail over (sidecar/source.XDSKeepaliveTime, not shorter than this).
const KeepaliveMinTime = 10 * time.Second

// MaxRequestBytes bounds one request a client sends. A sidecar that
// reconnects sends the version of every resource it holds
// (initial_resource_versions), about 90 bytes per API key: gRPC's default
// of 4 MiB refused namespaces above some 45,000 keys, whose sidecars then
// never got another update. 64 MiB fits some 700,000 keys.
const MaxRequestBytes = 64 << 20

// Server serves delta xDS. It is a manager.Runnable that runs on every
// replica.
type Server struct {
	// Addr is the address to listen on; Listener, when set, is served
	// instead (tests listen on 127.0.0.1:0).
	Addr     string
	Listener net.Listener
	// TLS, when set, is the server's TLS configuration. Without it the
	// server speaks plain gRPC: tests only, since bearer tokens would
	// cross the network in the clear.
	TLS *tls.Config
	// Reviewer authenticates the bearer token of every stream.
	Reviewer TokenReviewer
	// Feed fills Caches; the server answers no stream before Feed.Load
	// has returned. Without a Feed, the caller has filled Caches before
	// Start and changes them itself (hack/internal/xdsload serves load
	// test fixtures this way, without an API server).
	Feed   *Feed
	Caches *Namespaces
	// WaitForSync waits for the informer cache behind Feed (the
	// manager's cache.WaitForCacheSync).
	WaitForSync func(context.Context) bool
	// MaxStreamsPerPod bounds the streams one pod (the pod its token is
	// bound to) holds open on this server; DefaultMaxStreamsPerPod when 0.
	// One stream more ends the pod's oldest.
	MaxStreamsPerPod int
	// Metrics, when set, registers the stream metrics.
	Metrics prometheus.Registerer
	Log     logr.Logger

	// pods is the bound on streams per pod (made once, by podBound);
	// handlers counts the stream handlers it runs.
	podsOnce sync.Once
	pods     *podStreams
	handlers sync.WaitGroup
}

// podBound is the server's bound on streams per pod.
func (s *Server) podBound() *podStreams {
	s.podsOnce.Do(func() { s.pods = newPodStreams(s.MaxStreamsPerPod, newStreamMetrics(s.Metrics)) })
	return s.pods
}

var (
	_ manager.Runnable               = (*Server)(nil)
	_ manager.LeaderElectionRunnable = (*Server)(nil)
)

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start loads the caches, then serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if s.WaitForSync != nil && !s.WaitForSync(ctx) {
		return errors.New("xds: the informer cache did not sync")
	}
	if s.Feed != nil {
		if err := s.Feed.Load(ctx); err != nil {
			return fmt.Errorf("xds: loading the caches: %w", err)
		}
	}
	ln := s.Listener
	if ln == nil {
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", s.Addr); err != nil {
			return fmt.Errorf("xds: listening on %s: %w", s.Addr, err)
		}
	}
	gs := s.grpcServer(ctx)
	var wg sync.WaitGroup
	if s.Feed != nil {
		wg.Go(func() { s.Feed.Run(ctx) })
	}
	defer wg.Wait()
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	s.Log.Info("serving delta xDS", "address", ln.Addr().String(), "tls", s.TLS != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("xds: serving: %w", err)
	case <-ctx.Done():
	}
	// The delta server ends every stream when ctx ends, so GracefulStop
	// only waits for them to unwind, and the handlers of replaced streams
	// with them.
	gs.GracefulStop()
	s.handlers.Wait()
	return nil
}

// grpcServer builds the gRPC server: the stream authenticator in front of
// an ADS service that answers delta streams only.
func (s *Server) grpcServer(ctx context.Context) *grpc.Server {
	cb := &callbacks{streams: map[int64]*streamState{}, log: s.Log}
	opts := []grpc.ServerOption{
		grpc.ChainStreamInterceptor(
			//nolint:contextcheck // each stream is authenticated within its own context
			streamAuthenticator(s.Reviewer, func(err error) {
				s.Log.V(1).Info("refused an xds stream", "reason", err.Error())
			}),
			//nolint:contextcheck // each handler runs in its own stream's context
			boundStreamsPerPod(s.podBound(), &s.handlers),
		),
		// Notice dead peers: a sidecar that vanished must not hold a
		// stream (and its watches) for hours. And bound every connection's
		// age: the token a stream was admitted with is checked once, so a
		// client reconnects (with its versions: only changes are sent)
		// and authenticates again at least this often; it also spreads
		// sidecars over replicas that started later.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: 30 * time.Second, Timeout: 10 * time.Second,
			MaxConnectionAge: MaxConnectionAge, MaxConnectionAgeGrace: time.Minute,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		grpc.MaxHeaderListSize(MaxHeaderBytes),
		grpc.MaxConcurrentStreams(MaxStreamsPerConnection),
	}
	if s.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.TLS)))
	}
	gs := grpc.NewServer(opts...)
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, &ads{delta: delta.NewServer(ctx, s.Caches, cb)})
	return gs
}

// ads is the aggregated discovery service, delta variant only.
type ads struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	delta delta.Server
}

func (a *ads) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.delta.DeltaStreamHandler(st, resource.AnyType)
}

// MaxHeaderBytes bounds the headers of a stream, which the server reads
// before it authenticates the stream: a bearer token is 16 KiB at most
// (maxTokenBytes), where gRPC's default would hold 16 MiB of headers per
// stream for anyone who reaches the port.
const MaxHeaderBytes = 64 << 10

// MaxStreamsPerConnection bounds the streams one connection may hold open
// at once: a sidecar needs one (every type on one ADS stream).
const MaxStreamsPerConnection = 8

// MaxNamesPerStream bounds the resource names one stream may subscribe to
// over its life, counted as it names them (a name named again counts
// again). go-control-plane keeps every name a stream subscribes to, so
// without a bound one stream could grow the operator's memory by a full
// request (up to MaxRequestBytes) with every request it sends. Sidecars
// name none: they subscribe with the wildcard, which does not count.
const MaxNamesPerStream = 10000

// errTooManyNames ends a stream that named more than MaxNamesPerStream.
var errTooManyNames = status.Errorf(codes.ResourceExhausted, "a stream may subscribe to %d resource names at most; subscribe with the wildcard", MaxNamesPerStream)

// callbacks bind every request of a stream to the stream's identity: the
// node a client sends is replaced by one whose cluster is the namespace it
// authenticated as, which is all Namespaces routes by. They also count
// the names each stream subscribes to (MaxNamesPerStream).
type callbacks struct {
	log     logr.Logger
	mu      sync.Mutex
	streams map[int64]*streamState
}

// streamState is what callbacks know of one stream.
type streamState struct {
	id    Identity
	named int
}

var _ delta.Callbacks = (*callbacks)(nil)

func (c *callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	ident, ok := identityFrom(ctx)
	if !ok {
		return errUnauthenticated
	}
	c.mu.Lock()
	c.streams[id] = &streamState{id: ident}
	c.mu.Unlock()
	c.log.V(1).Info("xds stream opened", "stream", id, "namespace", ident.Namespace, "serviceAccount", ident.ServiceAccount, "pod", ident.PodName)
	return nil
}

func (c *callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) {
	c.mu.Lock()
	delete(c.streams, id)
	c.mu.Unlock()
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	named := 0
	for _, name := range req.GetResourceNamesSubscribe() {
		if name != explicitWildcard {
			named++
		}
	}
	c.mu.Lock()
	st, ok := c.streams[id]
	if ok {
		st.named += named
	}
	c.mu.Unlock()
	switch {
	case !ok:
		return errUnauthenticated
	case st.named > MaxNamesPerStream:
		return errTooManyNames
	}
	req.Node = &core.Node{Id: st.id.ServiceAccount, Cluster: st.id.Namespace}
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(int64, *discovery.DeltaDiscoveryRequest, *discovery.DeltaDiscoveryResponse) {
}
