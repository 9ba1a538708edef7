package source

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"gatehouse.dev/gatehouse/test/testenv"
)

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestSidecarsSpreadOverTheReplicasTheTargetResolvesTo connects 24
// channels, each with the sidecar's dial options, to a target that
// resolves to two replicas listed in the same order: both replicas get
// connections (pick_first without the shuffle sends all 24 to the first;
// with it, all on one replica has a chance of 2 in 2^24).
func TestSidecarsSpreadOverTheReplicasTheTargetResolvesTo(t *testing.T) {
	serverTLS, clientTLS := testenv.LoopbackTLS(t)
	replicas := make([]*countingListener, 2)
	var endpoints []resolver.Endpoint
	for i := range replicas {
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		replicas[i] = &countingListener{Listener: ln}
		gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
		go func() { _ = gs.Serve(replicas[i]) }()
		t.Cleanup(gs.Stop)
		endpoints = append(endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: ln.Addr().String()}}})
	}
	x := &XDS{TLS: clientTLS}
	for range 24 {
		res := manual.NewBuilderWithScheme("spread")
		res.InitialState(resolver.State{Endpoints: endpoints})
		conn, err := grpc.NewClient("spread:///xds", append(x.dialOptions(), grpc.WithResolvers(res))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		conn.Connect()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
			if !conn.WaitForStateChange(ctx, s) {
				cancel()
				t.Fatalf("a channel did not connect: %v", s)
			}
		}
		cancel()
	}
	if a, b := replicas[0].accepted.Load(), replicas[1].accepted.Load(); a == 0 || b == 0 {
		t.Fatalf("connections per replica: %d and %d; every sidecar took the same replica", a, b)
	}
}
