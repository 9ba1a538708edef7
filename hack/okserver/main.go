// Command okserver is the baseline for Gatehouse's load tests: an ext_authz
// server that allows every request at once, over gRPC
// (envoy.service.auth.v3.Authorization/Check, with server reflection so that
// ghz and grpcurl need no proto files) and over HTTP (200 for any method and
// path). Ratios against it isolate the cost of real authorization from the
// cost of gRPC on the same machine. By default it does not even decode the
// request and sends an answer encoded once (--decode none, the floor; see
// loadgen.FloorCodec); --decode standard decodes every request in full.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"gatehouse.dev/gatehouse/hack/internal/loadgen"
)

// streamWorkers is sidecar/app's grpcStreamWorkers.
const streamWorkers = 32

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "okserver:", err)
		os.Exit(1)
	}
}

func run() error {
	grpcAddr := flag.String("grpc-bind-address", "127.0.0.1:9001", "gRPC listen address")
	httpAddr := flag.String("http-bind-address", "127.0.0.1:9002", "HTTP listen address (empty: no HTTP)")
	decode := flag.String("decode", loadgen.DecodeNone, "request decoding: none (the floor) or standard (the protobuf codec)")
	flag.Parse()
	codec, err := loadgen.FloorCodec(*decode)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", *grpcAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *grpcAddr, err)
	}
	// The sidecar's stream workers (sidecar/app grpcStreamWorkers): the
	// floor runs on the same gRPC server configuration.
	gs := grpc.NewServer(grpc.ForceServerCodecV2(codec), grpc.NumStreamWorkers(streamWorkers))
	authv3.RegisterAuthorizationServer(gs, loadgen.OKServer{})
	reflection.Register(gs)
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(lis) }()

	var hs *http.Server
	if *httpAddr != "" {
		hl, err := lc.Listen(ctx, "tcp", *httpAddr)
		if err != nil {
			gs.Stop()
			return fmt.Errorf("listening on %s: %w", *httpAddr, err)
		}
		hs = &http.Server{Handler: loadgen.OKServer{}, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- hs.Serve(hl) }()
	}
	fmt.Fprintf(os.Stderr, "okserver: gRPC on %s (decode %s), HTTP on %s\n", lis.Addr(), *decode, *httpAddr)

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
	}
	gs.Stop()
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx) //nolint:contextcheck // the signal context is already done

	}
	return nil
}
