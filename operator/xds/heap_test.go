package xds

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// The child process of BenchmarkHeapPerStream (TestSidecarClientsProcess)
// is configured by these variables.
const (
	clientsAddrEnv     = "GATEHOUSE_XDS_CLIENTS_ADDR"
	clientsStreamsEnv  = "GATEHOUSE_XDS_CLIENTS_STREAMS"
	clientsKeysEnv     = "GATEHOUSE_XDS_CLIENTS_KEYS"
	clientsVersionsEnv = "GATEHOUSE_XDS_CLIENTS_VERSIONS" // a JSON file of initial versions, for reconnecting clients
	heapProfileEnv     = "GATEHOUSE_XDS_HEAP_PROFILE"     // where the parent writes a heap profile with the streams open
)

// BenchmarkHeapPerStream measures what the operator's xDS server holds for
// each connected sidecar: streams clients, each on its own connection as
// sidecars are, subscribe to the three types with the wildcard and ACK
// every response, in a namespace of keys APIKeyEntries. They run in a
// child process, so that only the server's memory is counted. Once every
// client holds the full state, the server's heap (after a GC) is compared
// with the heap before they connected: heap-B/stream is HeapInuse's
// growth per stream, live-B/stream HeapAlloc's (the live objects),
// stack-B/stream the goroutine stacks', and alloc-B/stream is what was
// allocated meanwhile (garbage included: it sets how far the heap grows
// between collections while sidecars connect). With reconnect, the clients
// connect with initial_resource_versions holding every current version,
// as a sidecar does after a failover, and are sent nothing.
//
// Set GATEHOUSE_XDS_HEAP_PROFILE=file to write a heap profile (of the
// last sub-benchmark run) while the streams are open.
func BenchmarkHeapPerStream(b *testing.B) {
	for _, bc := range []struct {
		keys, streams int
		reconnect     bool
	}{{10000, 20, false}, {10000, 40, false}, {10000, 40, true}} {
		b.Run(fmt.Sprintf("keys=%d/streams=%d/reconnect=%v", bc.keys, bc.streams, bc.reconnect), func(b *testing.B) {
			caches := namespaceOfKeys(b, "shop", bc.keys)
			versions := ""
			if bc.reconnect {
				versions = writeVersions(b, caches.Cache("shop", APIKeyEntryType))
			}
			var grown heapGrowth
			for b.Loop() {
				grown.add(heapOfStreams(b, caches, bc.streams, bc.keys, versions))
			}
			n := float64(b.N * bc.streams)
			b.ReportMetric(float64(grown.inuse)/n, "heap-B/stream")
			b.ReportMetric(float64(grown.live)/n, "live-B/stream")
			b.ReportMetric(float64(grown.live)/n/float64(bc.keys), "live-B/key/stream")
			b.ReportMetric(float64(grown.stack)/n, "stack-B/stream")
			b.ReportMetric(float64(grown.goroutines)/n, "goroutines/stream")
			b.ReportMetric(float64(grown.alloc)/n, "alloc-B/stream")
		})
	}
}

// heapGrowth is how much the server's memory grew.
type heapGrowth struct{ inuse, live, stack, goroutines, alloc int64 }

func (g *heapGrowth) add(o heapGrowth) {
	g.inuse += o.inuse
	g.live += o.live
	g.stack += o.stack
	g.goroutines += o.goroutines
	g.alloc += o.alloc
}

func memNow() heapGrowth {
	runtime.GC()
	runtime.GC() // a second cycle empties the sync.Pools the first one moved to their victim caches
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return heapGrowth{inuse: int64(m.HeapInuse), live: int64(m.HeapAlloc), stack: int64(m.StackInuse), goroutines: int64(runtime.NumGoroutine()), alloc: int64(m.TotalAlloc)}
}

// heapOfStreams serves caches, connects streams clients in a child
// process, and returns how much the server's memory grew once all of
// them held the full state.
func heapOfStreams(b *testing.B, caches *Namespaces, streams, keys int, versions string) heapGrowth {
	b.Helper()
	addr, stop := serveCaches(b, caches, "shop")
	defer stop()
	before := memNow()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSidecarClientsProcess$") //nolint:gosec // the test binary itself
	cmd.Env = append(os.Environ(),
		clientsAddrEnv+"="+addr, clientsStreamsEnv+"="+strconv.Itoa(streams),
		clientsKeysEnv+"="+strconv.Itoa(keys), clientsVersionsEnv+"="+versions)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && lines.Text() != clientsReady {
		b.Log("clients: ", lines.Text())
	}
	if lines.Text() != clientsReady {
		_ = cmd.Wait()
		b.Fatal("the clients ended before they all held the state")
	}
	after := memNow()
	writeHeapProfile(b)
	_ = stdin.Close() // the clients end
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if err := cmd.Wait(); err != nil {
		b.Fatalf("clients: %v", err)
	}
	return heapGrowth{inuse: after.inuse - before.inuse, live: after.live - before.live, stack: after.stack - before.stack, goroutines: after.goroutines - before.goroutines, alloc: after.alloc - before.alloc}
}

func writeHeapProfile(b *testing.B) {
	b.Helper()
	path := os.Getenv(heapProfileEnv)
	if path == "" {
		return
	}
	f, err := os.Create(path) //nolint:gosec // the path the person running the benchmark chose
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// writeVersions writes the versions c holds, as a reconnecting client
// sends them, to a JSON file and returns its path.
func writeVersions(b *testing.B, c *typeCache) string {
	b.Helper()
	c.mu.Lock()
	held := make(map[string]string, len(c.resources))
	for name, e := range c.resources {
		held[name] = e.version
	}
	c.mu.Unlock()
	data, err := json.Marshal(held)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "versions.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// clientsReady is the line the child process prints once every client
// holds the full state.
const clientsReady = "all clients hold the state"

// TestSidecarClientsProcess is BenchmarkHeapPerStream's child process:
// it connects the clients, prints clientsReady once every one holds the
// state, and ends them when its stdin closes.
func TestSidecarClientsProcess(t *testing.T) {
	addr := os.Getenv(clientsAddrEnv)
	if addr == "" {
		t.Skip("the child process of BenchmarkHeapPerStream")
	}
	streams, err := strconv.Atoi(os.Getenv(clientsStreamsEnv))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := strconv.Atoi(os.Getenv(clientsKeysEnv))
	if err != nil {
		t.Fatal(err)
	}
	var initial map[string]string
	if path := os.Getenv(clientsVersionsEnv); path != "" {
		data, err := os.ReadFile(path) //nolint:gosec // written by the parent
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &initial); err != nil {
			t.Fatal(err)
		}
		keys = 0 // a client holding every version is sent none
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	ready := make(chan struct{}, streams)
	for i := range streams {
		g.Go(func() error { return sidecarLikeStream(gctx, addr, fmt.Sprintf("pod-%d", i), keys, initial, ready) })
	}
	for range streams {
		select {
		case <-ready:
		case <-gctx.Done():
			t.Fatal(g.Wait())
		}
	}
	fmt.Println(clientsReady)
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// sidecarLikeStream subscribes to every type with the wildcard on a
// connection of its own, as the pod that token names (anyToken), ACKs every response, and signals ready once
// each type has been answered (with want APIKeyEntries). It returns when
// ctx ends.
func sidecarLikeStream(ctx context.Context, addr, token string, want int, initial map[string]string, ready chan<- struct{}) error {
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for _, typ := range Types {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}}
		if typ == APIKeyEntryType {
			req.InitialResourceVersions = initial
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	answered := map[string]bool{}
	signalled := false
	for {
		r, err := st.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if !answered[r.GetTypeUrl()] && r.GetTypeUrl() == APIKeyEntryType && len(r.GetResources()) != want {
			return fmt.Errorf("the first response holds %d APIKeyEntries, want %d", len(r.GetResources()), want)
		}
		answered[r.GetTypeUrl()] = true
		if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
			return err
		}
		if len(answered) == len(Types) && !signalled {
			ready <- struct{}{}
			signalled = true
		}
	}
}
