package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/go-logr/logr/testr"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// anyToken admits every stream as ServiceAccount ns/sidecar of the pod
// the token names (pod name = token, UID = "uid-" + token), but
// unboundToken as no pod.
type anyToken struct{ ns string }

// unboundToken is a token anyToken admits bound to no pod.
const unboundToken = "unbound"

func (r anyToken) Review(_ context.Context, token string) (Identity, error) {
	id := Identity{Namespace: r.ns, ServiceAccount: "sidecar"}
	if token != unboundToken {
		id.PodName, id.PodUID = token, "uid-"+token
	}
	return id, nil
}

// namespaceOfKeys returns caches holding, in ns, the APIKeyEntries of keys
// APIKeys named apikey-000000, apikey-000001 and so on.
func namespaceOfKeys(t testing.TB, ns string, keys int) *Namespaces {
	t.Helper()
	caches := NewNamespaces()
	entries := make(map[string]types.Resource, keys)
	for i := range keys {
		name := fmt.Sprintf("apikey-%06d", i)
		entries[name] = APIKeyEntry(apiKey(name, i))
	}
	if err := caches.Update(ns, APIKeyEntryType, entries, nil); err != nil {
		t.Fatal(err)
	}
	return caches
}

// versionsOf is what a client holding every APIKeyEntry of ns would send
// as its initial_resource_versions.
func versionsOf(t *testing.T, caches *Namespaces, ns string) map[string]string {
	t.Helper()
	held := map[string]string{}
	for name, r := range caches.Cache(ns, APIKeyEntryType).GetResources() {
		held[name] = version(t, r)
	}
	return held
}

// startCachesServer serves caches (filled by the caller, no Feed) on
// 127.0.0.1, admitting every stream as namespace ns, until the test ends.
func startCachesServer(t testing.TB, caches *Namespaces, ns string) string {
	t.Helper()
	addr, stop := serveCaches(t, caches, ns)
	t.Cleanup(stop)
	return addr
}

// serveCaches serves caches as startCachesServer does, until stop is
// called; stop returns once the server has stopped.
func serveCaches(t testing.TB, caches *Namespaces, ns string) (addr string, stop func()) {
	t.Helper()
	return serveUntilStopped(t, &Server{Caches: caches, Reviewer: anyToken{ns: ns}, Log: testr.NewWithInterface(t, testr.Options{})})
}

// serve runs srv on 127.0.0.1 until the test ends and returns its address.
func serve(t testing.TB, srv *Server) string {
	t.Helper()
	addr, stop := serveUntilStopped(t, srv)
	t.Cleanup(stop)
	return addr
}

// serveUntilStopped runs srv on 127.0.0.1 until stop is called; stop
// returns once the server has stopped.
func serveUntilStopped(t testing.TB, srv *Server) (addr string, stop func()) {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	return ln.Addr().String(), func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the server did not stop")
		}
	}
}

// TestAReconnectingSidecarOfALargeNamespaceIsServed: a sidecar reconnects
// with the version of every resource it holds (initial_resource_versions),
// about 90 bytes per API key. At 60,000 keys that request is over gRPC's
// default 4 MiB receive limit, which refused it (ResourceExhausted): the
// sidecar then never got another update.
func TestAReconnectingSidecarOfALargeNamespaceIsServed(t *testing.T) {
	const ns, keys = "big", 60000
	caches := namespaceOfKeys(t, ns, keys)
	held := versionsOf(t, caches, ns)
	req := wildcard(held)
	if size := proto.Size(req); size <= 4<<20 {
		t.Fatalf("the request is %d bytes; the test needs one over 4 MiB", size)
	}
	c := dial(t, startCachesServer(t, caches, ns), "token", req)
	if r := c.next(); len(r.GetResources())+len(r.GetRemovedResources()) != 0 {
		t.Errorf("a client holding every version got %d resources and %d removals, want none", len(r.GetResources()), len(r.GetRemovedResources()))
	}
}

// TestAStreamNamingTooManyResourcesIsEnded: go-control-plane keeps every
// name a stream subscribes to, so a client that keeps naming new (made
// up) resources would grow the operator's memory without bound. A stream
// may name MaxNamesPerStream over its life; the wildcard does not count.
func TestAStreamNamingTooManyResourcesIsEnded(t *testing.T) {
	const ns = "shop"
	addr := startCachesServer(t, NewNamespaces(), ns)
	batch := func(from, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("made-up-%d", from+i)
		}
		return out
	}
	t.Run("the wildcard and names up to the bound are served", func(t *testing.T) {
		c := dial(t, addr, "token", wildcard(nil, batch(0, MaxNamesPerStream/2)...))
		c.next()
		if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: APIKeyEntryType, ResourceNamesSubscribe: append(batch(MaxNamesPerStream/2, MaxNamesPerStream/2), "*")}); err != nil {
			t.Fatal(err)
		}
		if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: IssuerKeySetType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
		c.next() // the first answer of the second type: the stream lives
	})
	t.Run("a stream naming more, over several requests, is ended", func(t *testing.T) {
		c := dial(t, addr, "token", wildcard(nil, batch(0, MaxNamesPerStream/2)...))
		c.next()
		if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: IssuerKeySetType, ResourceNamesSubscribe: batch(MaxNamesPerStream/2, MaxNamesPerStream/2+1)}); err != nil {
			t.Fatal(err)
		}
		if err := c.streamError(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stream ended with %v, want ResourceExhausted", err)
		}
	})
}

// TestLargeHeadersAreRefusedBeforeAuthentication: headers are read before
// the stream is authenticated, so anyone who reaches the port could make
// the server hold gRPC's default of 16 MiB of them per stream. A stream
// whose headers exceed MaxHeaderBytes is refused, even with a valid token.
func TestLargeHeadersAreRefusedBeforeAuthentication(t *testing.T) {
	addr := startCachesServer(t, NewNamespaces(), "shop")
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer token", "x-padding", strings.Repeat("a", 1<<20))
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err == nil {
		if err = st.Send(wildcard(nil)); err == nil || errors.Is(err, io.EOF) {
			_, err = st.Recv()
		}
	}
	if err == nil {
		t.Fatal("a stream with 1 MiB of headers was served")
	}
	t.Logf("refused: %v", err)
}

// TestTheServerBoundsStreamsPerConnection: a sidecar needs one stream; a
// client multiplexing thousands on one connection is held to
// MaxStreamsPerConnection, which the server announces in its HTTP/2
// SETTINGS (and grpc-go's server enforces, refusing streams beyond it).
func TestTheServerBoundsStreamsPerConnection(t *testing.T) {
	addr := startCachesServer(t, NewNamespaces(), "shop")
	conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %T, want SETTINGS", f)
	}
	if v, ok := settings.Value(http2.SettingMaxConcurrentStreams); !ok || v != MaxStreamsPerConnection {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (set: %v), want %d", v, ok, MaxStreamsPerConnection)
	}
}
