package source

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
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

func selfSignedLoopback(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xds-dial-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return server, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1"}
}

// TestSidecarsSpreadOverTheReplicasTheTargetResolvesTo connects 24
// channels, each with the sidecar's dial options, to a target that
// resolves to two replicas listed in the same order: both replicas get
// connections (pick_first without the shuffle sends all 24 to the first;
// with it, all on one replica has a chance of 2 in 2^24).
func TestSidecarsSpreadOverTheReplicasTheTargetResolvesTo(t *testing.T) {
	serverTLS, clientTLS := selfSignedLoopback(t)
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
