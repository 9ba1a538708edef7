// Package app assembles and runs a whole sidecar: a state source feeding
// snapshot builds, the decision engine, the gRPC and HTTP check servers,
// health probes and metrics, all under one errgroup bound to a context.
// On cancellation it reports NOT_SERVING and fails /readyz first, so that
// traffic drains, then stops the servers gracefully.
package app

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"k8s.io/apimachinery/pkg/labels"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/sidecar/source"
)

// startupGCPercent is the GOGC in force until the first state is loaded.
const startupGCPercent = 10

// DefaultGCPercent is the GOGC of a running sidecar when neither
// Config.GCPercent nor the GOGC environment variable sets one. The state
// (the API key table) holds no pointers, so a collection costs little more
// than its fixed part, and a sidecar runs beside every pod: half the
// default heap headroom gave 95 instead of 114 MiB resident after load with
// 100,000 records, for 2-9% less throughput (docs/performance.md).
const DefaultGCPercent = 50

// DefaultShutdownTimeout bounds the graceful stop.
const DefaultShutdownTimeout = 10 * time.Second

// Config is everything a sidecar needs. Empty addresses disable a server
// (except GRPCAddr, which is required).
type Config struct {
	Namespace string
	PodLabels map[string]string
	// Source feeds the state. NewSource builds one from flags.
	Source source.Source
	// Remote fetches remote issuers' keys; nil disables remote issuers.
	Remote snapshot.RemoteKeySets

	GRPCAddr    string
	HTTPAddr    string
	HealthAddr  string
	MetricsAddr string

	HTTP   server.HTTPOptions
	Core   server.Options
	Engine authz.Options

	// GCPercent is the GOGC of the running sidecar: 0 is GOGC from the
	// environment if set, else DefaultGCPercent; negative turns the
	// collector off (debug.SetGCPercent).
	GCPercent int

	// MemoryLimit is the Go runtime's soft memory limit in bytes
	// (runtime/debug.SetMemoryLimit): the garbage collector works harder
	// as the process nears it, and returns freed memory to the OS sooner.
	// 0 is automatic: GOMEMLIMIT if the environment sets it, else
	// MemoryLimitShare of the container's memory limit, else none.
	// Negative: none.
	MemoryLimit int64

	// DrainDelay is how long the sidecar reports not ready before it stops
	// serving, so that load balancers notice. Zero stops at once.
	DrainDelay      time.Duration
	ShutdownTimeout time.Duration
	Clock           func() time.Time
	Log             logr.Logger
	// OnListening, when set, receives the bound addresses (tests use :0).
	OnListening func(Addresses)
}

// Addresses are the addresses the servers listen on.
type Addresses struct {
	GRPC, HTTP, Health, Metrics string
}

// Run runs the sidecar until ctx ends, then drains and stops. It returns
// the first error of any part (nil on a clean stop).
func Run(ctx context.Context, cfg Config) error {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Source == nil || cfg.GRPCAddr == "" {
		return errors.New("a source and a gRPC address are required")
	}
	log := cfg.Log
	if limit := applyMemoryLimit(cfg.MemoryLimit); limit != math.MaxInt64 {
		log.Info("memory limit of the Go runtime", "bytes", limit)
	}
	store := &snapshot.Store{}
	m := metrics.New(store, cfg.Clock)
	cfg.Engine.Clock, cfg.Core.Clock = cfg.Clock, cfg.Clock
	if cfg.Engine.Log.GetSink() == nil {
		cfg.Engine.Log = log.WithName("engine")
	}
	if cfg.Core.Log.GetSink() == nil {
		cfg.Core.Log = log.WithName("decision")
	}
	engine := authz.New(store, cfg.Engine)
	core := server.NewCore(engine, store, m, cfg.Core)
	var draining atomic.Bool

	listeners := map[string]net.Listener{}
	closeAll := func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}
	listen := func(name, addr string) error {
		if addr == "" {
			return nil
		}
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("listening for %s on %s: %w", name, addr, err)
		}
		listeners[name] = l
		return nil
	}
	for _, l := range []struct{ name, addr string }{{"grpc", cfg.GRPCAddr}, {"http", cfg.HTTPAddr}, {"health", cfg.HealthAddr}, {"metrics", cfg.MetricsAddr}} {
		if err := listen(l.name, l.addr); err != nil {
			return err
		}
	}
	addr := func(name string) string {
		if l := listeners[name]; l != nil {
			return l.Addr().String()
		}
		return ""
	}
	addrs := Addresses{GRPC: addr("grpc"), HTTP: addr("http"), Health: addr("health"), Metrics: addr("metrics")}
	log.Info("listening", "grpc", addrs.GRPC, "http", addrs.HTTP, "health", addrs.Health, "metrics", addrs.Metrics)
	if cfg.OnListening != nil {
		cfg.OnListening(addrs)
	}

	healthSrv := health.NewServer()
	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthSrv.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	setServing := func(ok bool) {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ok {
			st = healthpb.HealthCheckResponse_SERVING
		}
		healthSrv.SetServingStatus("", st)
		healthSrv.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
	}
	grpcSrv := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4<<20),
		grpc.ForceServerCodecV2(core.GRPCCodec()),
	)
	authv3.RegisterAuthorizationServer(grpcSrv, server.NewAuthorizationServer(core))
	healthpb.RegisterHealthServer(grpcSrv, healthSrv)

	type httpServer struct {
		name string
		lis  net.Listener
		srv  *http.Server
	}
	var httpServers []httpServer
	newHTTP := func(name string, h http.Handler, idle time.Duration) {
		if l := listeners[name]; l != nil {
			httpServers = append(httpServers, httpServer{name, l, server.NewHTTPServer(h, idle)})
		}
	}
	newHTTP("http", core.HTTPHandler(cfg.HTTP), server.ExtAuthzIdleTimeout)
	newHTTP("health", core.HealthHandler(draining.Load), server.ProbeIdleTimeout)
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	newHTTP("metrics", metricsMux, server.ProbeIdleTimeout)

	// Until the first state is in, collect garbage eagerly: reading
	// 100,000 records interleaves their live objects with decoding
	// garbage, and the freed gaps stay resident as fragmentation (about
	// 35 MB at 100,000 records with the default GOGC). Recycling the
	// garbage early packs the state densely; the normal setting returns
	// with the first state.
	prevGC := debug.SetGCPercent(startupGCPercent)
	defer debug.SetGCPercent(prevGC) // the process's own setting once the sidecar stops
	normalGC := prevGC
	switch {
	case cfg.GCPercent != 0:
		normalGC = cfg.GCPercent
	case os.Getenv("GOGC") == "":
		normalGC = DefaultGCPercent
	}
	var restoreGC sync.Once
	builder := snapshot.NewBuilder(snapshot.BuildOptions{
		Namespace: cfg.Namespace, PodLabels: labels.Set(cfg.PodLabels), Remote: cfg.Remote, Clock: cfg.Clock,
	})
	var lastProblems []string
	changed := func(in snapshot.Inputs) {
		start := cfg.Clock()
		snap := builder.Build(in)
		store.Swap(snap)
		m.ObserveReload(snap)
		engine.PruneLimiters(snap)
		if r, ok := cfg.Remote.(interface{ Sweep() }); ok {
			r.Sweep() // stop polling issuers the new state no longer names
		}
		if !draining.Load() {
			setServing(true)
		}
		policy := ""
		if snap.Policy != nil {
			policy = snap.Policy.Namespace + "/" + snap.Policy.Name
		}
		log.V(1).Info("state installed", "generation", snap.Generation, "keyIds", snap.KeyCount(), "policy", policy,
			"buildMillis", cfg.Clock().Sub(start).Milliseconds())
		if snap.Generation == 1 {
			log.Info("first state installed; ready", "keyIds", snap.KeyCount(), "policy", policy)
			// Reading the first state (100,000 records: ~50 MB of YAML or
			// a full informer list) leaves garbage several times the size
			// of the state; give it back to the OS now rather than carry
			// it as resident memory. Later, because the source still holds
			// its inputs while this callback runs.
			restoreGC.Do(func() { debug.SetGCPercent(normalGC) })
			time.AfterFunc(time.Second, debug.FreeOSMemory)
		}
		if !slices.Equal(snap.Problems, lastProblems) {
			for _, p := range snap.Problems {
				log.Info("state problem", "problem", p)
			}
			if snap.Policy == nil {
				log.Info("no AuthPolicy selects this pod; denying every request")
			}
			lastProblems = snap.Problems
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := cfg.Source.Run(gctx, source.Events{Changed: changed, Failed: func(error) { m.ObserveReloadError() }, Confirmed: m.ObserveConfirmed}); err != nil {
			return fmt.Errorf("state source: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := grpcSrv.Serve(listeners["grpc"]); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server: %w", err)
		}
		return nil
	})
	for _, hs := range httpServers {
		g.Go(func() error {
			if err := hs.srv.Serve(hs.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s server: %w", hs.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		// Drain: say not serving first, so that Envoy's health checks and
		// the kubelet stop sending, then stop.
		draining.Store(true)
		healthSrv.Shutdown()
		log.Info("shutting down")
		if cfg.DrainDelay > 0 {
			t := time.NewTimer(cfg.DrainDelay)
			<-t.C
		}
		stopped := make(chan struct{})
		go func() { grpcSrv.GracefulStop(); close(stopped) }()
		timer := time.NewTimer(cfg.ShutdownTimeout)
		defer timer.Stop()
		select {
		case <-stopped:
		case <-timer.C:
			grpcSrv.Stop()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		for _, hs := range httpServers {
			_ = hs.srv.Shutdown(sctx)
		}
		return nil
	})
	return g.Wait()
}
