package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// BenchmarkGRPCCheck is a check through a real gRPC server on loopback,
// with the sidecar's codec, from a client in the same process that sends
// prebuilt request bytes (rawCodec) over one connection with 32 requests
// in flight, as hack/load.sh's closed loop does. Its CPU profile is the
// one to read for where a check's cost goes at saturation (client frames
// aside: pprof -focus handleStream); its time per check is client and
// server together; cpu-ns/op is the CPU time both used per check, less
// sensitive to a busy machine. The server has the sidecar's 32 stream workers;
// BENCH_STREAM_WORKERS=0 runs it without.
func BenchmarkGRPCCheck(b *testing.B) {
	store, key, es, rs := benchState(b, 1000)
	now := time.Now()
	esTok := es.Sign(b, testfixture.Claims(esIssuer, "alice", now, map[string]any{"scope": "orders:read"}), nil)
	rsTok := rs.Sign(b, testfixture.Claims(rsIssuer, "alice", now, map[string]any{"scope": "orders:read"}), nil)
	expired := map[string]any{"scope": "orders:read", "iat": now.Add(-3 * time.Hour).Unix(), "nbf": nil, "exp": now.Add(-time.Hour).Unix()}
	rsExpired := rs.Sign(b, testfixture.Claims(rsIssuer, "alice", now, expired), nil)
	for _, tc := range []struct {
		name    string
		cache   int
		headers map[string]string
	}{
		{"APIKey", 0, map[string]string{"x-api-key": key.Key.Plaintext()}},
		{"JWTCached", 0, map[string]string{"authorization": "Bearer " + esTok}},
		{"JWTExpiredUncached", -1, map[string]string{"authorization": "Bearer " + rsExpired}},
		{"JWTUncached/RS256", -1, map[string]string{"authorization": "Bearer " + rsTok}},
		{"JWTUncached/ES256", -1, map[string]string{"authorization": "Bearer " + esTok}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			engine := authz.New(store, authz.Options{CacheSize: tc.cache})
			core := server.NewCore(engine, store, metrics.New(store, nil), server.Options{StripCredential: true, Log: logr.Discard()})
			conn := serveGRPC(b, core)
			wire, err := proto.Marshal(benchRequest(tc.headers))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)) // 32 in flight
			start := cpuTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var resp []byte
				for pb.Next() {
					if err := conn.Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", &wire, &resp); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used: a
// check's cost whatever share of a core the benchmark got on a busy
// machine, where ns/op also counts the time it waited.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serveGRPC serves core's ext_authz over gRPC on 127.0.0.1, as the sidecar
// does (its codec), and returns a client connection that sends and
// receives raw bytes.
func serveGRPC(b *testing.B, core *server.Core) *grpc.ClientConn {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	workers := uint64(32) // sidecar/app's grpcStreamWorkers
	if w := os.Getenv("BENCH_STREAM_WORKERS"); w != "" {
		n, err := strconv.ParseUint(w, 10, 32)
		if err != nil {
			b.Fatal(err)
		}
		workers = n
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(core.GRPCCodec()), grpc.NumStreamWorkers(uint32(workers)))
	server.NewAuthorizationServer(core).Register(srv)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rawCodec sends a *[]byte as it is and receives into one.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*p)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T", v)
	}
	*p = data.Materialize()
	return nil
}
