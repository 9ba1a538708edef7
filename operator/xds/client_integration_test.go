package xds

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
)

// deltaClient is a minimal delta xDS client of one type: it subscribes,
// ACKs every response and hands responses to the test.
type deltaClient struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
	resp   chan *discovery.DeltaDiscoveryResponse
	errc   chan error
	// versions are the resource versions the client holds.
	versions map[string]string
	entries  map[string]*xdsv1alpha1.APIKeyEntry
}

// dial opens a delta stream to addr with token (none when empty) and
// sends the first request.
func dial(t *testing.T, addr, token string, first *discovery.DeltaDiscoveryRequest) *deltaClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &deltaClient{
		t: t, stream: st, cancel: cancel,
		resp: make(chan *discovery.DeltaDiscoveryResponse, 16), errc: make(chan error, 1),
		versions: map[string]string{}, entries: map[string]*xdsv1alpha1.APIKeyEntry{},
	}
	for k, v := range first.GetInitialResourceVersions() {
		c.versions[k] = v
	}
	t.Cleanup(func() { c.close(); _ = conn.Close() })
	// A refused stream fails Send with io.EOF; Recv says why.
	if err := st.Send(first); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	go c.recv()
	return c
}

func (c *deltaClient) recv() {
	for {
		r, err := c.stream.Recv()
		if err != nil {
			c.errc <- err
			return
		}
		c.resp <- r
		// ACK, so that the server sends the next change.
		if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil && !errors.Is(err, io.EOF) {
			c.errc <- err
			return
		}
	}
}

func (c *deltaClient) close() { c.cancel() }

// next waits for the next response and applies it to the client's state.
func (c *deltaClient) next() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resp:
		for _, res := range r.GetResources() {
			e := &xdsv1alpha1.APIKeyEntry{}
			if err := res.GetResource().UnmarshalTo(e); err != nil {
				c.t.Fatalf("decoding %s: %v", res.GetName(), err)
			}
			c.versions[res.GetName()] = res.GetVersion()
			c.entries[res.GetName()] = e
		}
		for _, name := range r.GetRemovedResources() {
			delete(c.versions, name)
			delete(c.entries, name)
		}
		return r
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(30 * time.Second):
		c.t.Fatal("no delta response within 30s")
	}
	return nil
}

// streamError waits for the stream to end and returns why.
func (c *deltaClient) streamError() error {
	c.t.Helper()
	select {
	case err := <-c.errc:
		return err
	case r := <-c.resp:
		c.t.Fatalf("got a response, want the stream refused: %v", names(r))
	case <-time.After(30 * time.Second):
		c.t.Fatal("the stream was neither answered nor ended within 30s")
	}
	return nil
}

func names(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	return out
}

func wireBytes(r *discovery.DeltaDiscoveryResponse) int { return proto.Size(r) }
