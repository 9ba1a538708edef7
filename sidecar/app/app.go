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

// grpcStreamWorkers is the number of goroutines that serve gRPC streams
// (grpc.NumStreamWorkers). Without them every check runs on a goroutine of
// its own, whose stack grows (is copied) on the way into gRPC's receive
// path: at saturation, runtime.newstack was 6-10% of a loopback benchmark's
// CPU (BenchmarkGRPCCheck), 1.2-1.5% with 32 workers, which is also what
// hack/load.sh keeps in flight. A stream finding every worker busy gets a
// goroutine of its own as before. The idle workers' stacks cost about
// 0.1-0.4 MiB. hack/okserver, the floor, uses the same number.
const grpcStreamWorkers = 32

// DefaultShutdownTimeout bounds the graceful stop.
const DefaultShutdownTimeout = 10 * time.Second

// RemoteKeySets supplies the snapshot builder with remote issuers' keys
// (remotejwks.Registry) and retires, after each build, the sources the
// new state no longer asked for.
type RemoteKeySets interface {
	snapshot.RemoteKeySets
	Sweep()
}

// Config is everything a sidecar needs. Empty addresses disable a server
// (except GRPCAddr, which is required).
type Config struct {
	Namespace string
	PodLabels map[string]string
	// Source feeds the state. NewSource builds one from flags.
	Source source.Source
	// Remote fetches remote issuers' keys; nil disables remote issuers.
	Remote RemoteKeySets

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
// the first error of any part (nil on a clean stop). It builds everything
// first (listeners, servers, the state's installer) and only then runs the
// parts under one errgroup.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return err
	}
	s, err := build(ctx, cfg)
	if err != nil {
		return err
	}
	// Until the first state is in, collect garbage eagerly: reading
	// 100,000 records interleaves their live objects with decoding
	// garbage, and the freed gaps stay resident as fragmentation (about
	// 35 MB at 100,000 records with the default GOGC). Recycling the
	// garbage early packs the state densely; the normal setting returns
	// with the first state (installer.install).
	prevGC := debug.SetGCPercent(startupGCPercent)
	defer debug.SetGCPercent(prevGC) // the process's own setting once the sidecar stops
	s.installer.normalGC = runningGCPercent(cfg.GCPercent, prevGC, os.Getenv)
	return s.run(ctx)
}

// withDefaults checks cfg and fills in the defaults of optional fields.
func withDefaults(cfg Config) (Config, error) {
	if cfg.Source == nil || cfg.GRPCAddr == "" {
		return Config{}, errors.New("a source and a gRPC address are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Engine.Log.GetSink() == nil {
		cfg.Engine.Log = cfg.Log.WithName("engine")
	}
	if cfg.Core.Log.GetSink() == nil {
		cfg.Core.Log = cfg.Log.WithName("decision")
	}
	cfg.Engine.Clock, cfg.Core.Clock = cfg.Clock, cfg.Clock
	return cfg, nil
}

// runningGCPercent is the GOGC once the first state is loaded:
// Config.GCPercent if set, else GOGC from the environment (the process's
// setting, prev), else DefaultGCPercent.
func runningGCPercent(configured, prev int, getenv func(string) string) int {
	switch {
	case configured != 0:
		return configured
	case getenv("GOGC") == "":
		return DefaultGCPercent
	default:
		return prev
	}
}

// sidecar is a built sidecar: everything Run starts, built before anything
// runs.
type sidecar struct {
	cfg       Config
	log       logr.Logger
	metrics   *metrics.Metrics
	health    *health.Server
	grpc      *grpc.Server
	grpcLis   net.Listener
	https     []httpServer
	installer *installer
	draining  *atomic.Bool
}

// httpServer is one of the HTTP servers (ext_authz, probes, metrics) on its
// listener.
type httpServer struct {
	name string
	lis  net.Listener
	srv  *http.Server
}

// build makes the decision engine and the check core, opens the listeners
// (so that a busy port fails Run at once), and builds the servers and the
// state installer.
func build(ctx context.Context, cfg Config) (*sidecar, error) {
	log := cfg.Log
	if limit := applyMemoryLimit(cfg.MemoryLimit); limit != math.MaxInt64 {
		log.Info("memory limit of the Go runtime", "bytes", limit)
	}
	store := &snapshot.Store{}
	m := metrics.New(store, cfg.Clock)
	engine := authz.New(store, cfg.Engine)
	core := server.NewCore(engine, store, m, cfg.Core)
	draining := &atomic.Bool{}

	lis, err := listen(ctx, cfg)
	if err != nil {
		return nil, err
	}
	addrs := lis.addresses()
	log.Info("listening", "grpc", addrs.GRPC, "http", addrs.HTTP, "health", addrs.Health, "metrics", addrs.Metrics)
	if cfg.OnListening != nil {
		cfg.OnListening(addrs)
	}

	healthSrv := newHealthServer()
	s := &sidecar{
		cfg: cfg, log: log, metrics: m, health: healthSrv, draining: draining,
		grpc:    newGRPCServer(core, healthSrv),
		grpcLis: lis["grpc"],
		https:   newHTTPServers(lis, core, m, cfg.HTTP, draining),
	}
	s.installer = &installer{
		log: log, clock: cfg.Clock, store: store, metrics: m, engine: engine, draining: draining, remote: cfg.Remote,
		setServing: func(ok bool) { setServing(healthSrv, ok) },
		builder: snapshot.NewBuilder(snapshot.BuildOptions{
			Namespace: cfg.Namespace, PodLabels: labels.Set(cfg.PodLabels), Remote: cfg.Remote, Clock: cfg.Clock,
		}),
	}
	return s, nil
}

// listeners are the open listeners by server name (grpc, http, health,
// metrics); a disabled server has none.
type listeners map[string]net.Listener

// listen opens the listener of every enabled server, or none.
func listen(ctx context.Context, cfg Config) (listeners, error) {
	lis := listeners{}
	for _, l := range []struct{ name, addr string }{{"grpc", cfg.GRPCAddr}, {"http", cfg.HTTPAddr}, {"health", cfg.HealthAddr}, {"metrics", cfg.MetricsAddr}} {
		if l.addr == "" {
			continue
		}
		nl, err := (&net.ListenConfig{}).Listen(ctx, "tcp", l.addr)
		if err != nil {
			for _, open := range lis {
				_ = open.Close()
			}
			return nil, fmt.Errorf("listening for %s on %s: %w", l.name, l.addr, err)
		}
		lis[l.name] = nl
	}
	return lis, nil
}

func (lis listeners) addresses() Addresses {
	addr := func(name string) string {
		if l := lis[name]; l != nil {
			return l.Addr().String()
		}
		return ""
	}
	return Addresses{GRPC: addr("grpc"), HTTP: addr("http"), Health: addr("health"), Metrics: addr("metrics")}
}

// newHealthServer is the gRPC health service, NOT_SERVING until the first
// state is installed.
func newHealthServer() *health.Server {
	h := health.NewServer()
	setServing(h, false)
	return h
}

// setServing sets the overall and the ext_authz service's health.
func setServing(h *health.Server, ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	h.SetServingStatus("", st)
	h.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
}

// newGRPCServer is the gRPC ext_authz and health server.
func newGRPCServer(core *server.Core, h *health.Server) *grpc.Server {
	srv := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4<<20),
		grpc.ForceServerCodecV2(core.GRPCCodec()),
		grpc.NumStreamWorkers(grpcStreamWorkers),
	)
	server.NewAuthorizationServer(core).Register(srv)
	healthpb.RegisterHealthServer(srv, h)
	return srv
}

// newHTTPServers are the HTTP servers whose listeners are open: the HTTP
// ext_authz contract, the probes and the metrics.
func newHTTPServers(lis listeners, core *server.Core, m *metrics.Metrics, opts server.HTTPOptions, draining *atomic.Bool) []httpServer {
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	var out []httpServer
	for _, h := range []struct {
		name    string
		handler http.Handler
		idle    time.Duration
	}{
		{"http", core.HTTPHandler(opts), server.ExtAuthzIdleTimeout},
		{"health", core.HealthHandler(draining.Load), server.ProbeIdleTimeout},
		{"metrics", metricsMux, server.ProbeIdleTimeout},
	} {
		if l := lis[h.name]; l != nil {
			out = append(out, httpServer{h.name, l, server.NewHTTPServer(h.handler, h.idle)})
		}
	}
	return out
}

// installer installs each state the source delivers: it builds the
// snapshot, swaps it in, and reports readiness, metrics and problems.
type installer struct {
	log        logr.Logger
	clock      func() time.Time
	store      *snapshot.Store
	metrics    *metrics.Metrics
	engine     *authz.Engine
	builder    *snapshot.Builder
	draining   *atomic.Bool
	remote     RemoteKeySets
	setServing func(bool)
	// normalGC is the GOGC set once the first state is in.
	normalGC     int
	restoreGC    sync.Once
	lastProblems []string
}

// install is the source's Changed callback: a full build.
func (in *installer) install(inputs snapshot.Inputs) {
	start := in.clock()
	snap := in.builder.Build(inputs)
	in.swap(snap, true, true)
	in.report(snap, start)
}

// apply is the source's Delta callback: the change is applied to the last
// snapshot in time proportional to it. Rate limiters are pruned only when
// the overlay is compacted (a walk of every record), and remote issuers
// swept only when the policy was compiled again (the build that asks for
// them); Compact runs after the change is in, so that it never holds one
// up.
func (in *installer) apply(d snapshot.Delta) {
	start := in.clock()
	snap := in.builder.Apply(d)
	in.swap(snap, false, d.Policy != nil)
	in.report(snap, start)
	if c := in.builder.Compact(); c != nil {
		in.store.Swap(c)
		in.engine.PruneLimiters(c)
	}
}

// swap installs snap, pruning the rate limiters of records it no longer
// holds and sweeping remote issuers when asked to.
func (in *installer) swap(snap *snapshot.Snapshot, prune, sweep bool) {
	in.store.Swap(snap)
	in.metrics.ObserveReload(snap)
	if prune {
		in.engine.PruneLimiters(snap)
	}
	if sweep && in.remote != nil {
		in.remote.Sweep() // stop polling issuers the new state no longer names
	}
}

// report says the sidecar is ready and logs the state installed.
func (in *installer) report(snap *snapshot.Snapshot, start time.Time) {
	if !in.draining.Load() {
		in.setServing(true)
	}
	policy := ""
	if snap.Policy != nil {
		policy = snap.Policy.Namespace + "/" + snap.Policy.Name
	}
	in.log.V(1).Info("state installed", "generation", snap.Generation, "keyIds", snap.KeyCount(), "policy", policy,
		"buildMillis", in.clock().Sub(start).Milliseconds())
	if snap.Generation == 1 {
		in.log.Info("first state installed; ready", "keyIds", snap.KeyCount(), "policy", policy)
		// Reading the first state (100,000 records: ~50 MB of YAML or
		// a full informer list) leaves garbage several times the size
		// of the state; give it back to the OS now rather than carry
		// it as resident memory. Later, because the source still holds
		// its inputs while this callback runs.
		in.restoreGC.Do(func() { debug.SetGCPercent(in.normalGC) })
		time.AfterFunc(time.Second, debug.FreeOSMemory)
	}
	in.logProblems(snap)
}

// logProblems logs the state's problems when they changed.
func (in *installer) logProblems(snap *snapshot.Snapshot) {
	if slices.Equal(snap.Problems, in.lastProblems) {
		return
	}
	for _, p := range snap.Problems {
		in.log.Info("state problem", "problem", p)
	}
	if snap.Policy == nil {
		in.log.Info("no AuthPolicy selects this pod; denying every request")
	}
	in.lastProblems = snap.Problems
}

// run runs the built sidecar under one errgroup: the state source, the
// servers, and the drain that stops them when ctx ends.
func (s *sidecar) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		events := source.Events{Changed: s.installer.install, Delta: s.installer.apply, Failed: func(error) { s.metrics.ObserveReloadError() }, Confirmed: s.metrics.ObserveConfirmed}
		if err := s.cfg.Source.Run(gctx, events); err != nil {
			return fmt.Errorf("state source: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server: %w", err)
		}
		return nil
	})
	for _, hs := range s.https {
		g.Go(func() error {
			if err := hs.srv.Serve(hs.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s server: %w", hs.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.drainAndStop(gctx)
		return nil
	})
	return g.Wait()
}

// drainAndStop says not serving first, so that Envoy's health checks and
// the kubelet stop sending, waits DrainDelay, then stops the servers
// gracefully (at most ShutdownTimeout each for gRPC and HTTP).
func (s *sidecar) drainAndStop(ctx context.Context) {
	s.draining.Store(true)
	s.health.Shutdown()
	s.log.Info("shutting down")
	if s.cfg.DrainDelay > 0 {
		t := time.NewTimer(s.cfg.DrainDelay)
		<-t.C
	}
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(s.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.grpc.Stop()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	for _, hs := range s.https {
		_ = hs.srv.Shutdown(sctx)
	}
}
