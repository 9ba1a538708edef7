package xdsload_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/hack/internal/loadgen"
	"gatehouse.dev/gatehouse/hack/internal/xdsload"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
)

// stream opens a delta ADS stream to srv as a sidecar does (the CA and
// the token Start wrote) and subscribes to every type.
func stream(t *testing.T, srv *xdsload.Server, out string) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(out, xdsload.CAFileName))
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(out, xdsload.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in ca.pem")
	}
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1"})
	conn, err := grpc.NewClient("passthrough:///"+srv.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+string(token))
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range xds.Types {
		if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// recvEntries receives one response, ACKs it and returns its API key
// entries by name (nil for another type) and the count of its resources.
func recvEntries(t *testing.T, st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) (string, map[string]*xdsv1alpha1.APIKeyEntry, int) {
	t.Helper()
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if r.GetTypeUrl() != xds.APIKeyEntryType {
		return r.GetTypeUrl(), nil, len(r.GetResources())
	}
	entries := map[string]*xdsv1alpha1.APIKeyEntry{}
	for _, res := range r.GetResources() {
		e := &xdsv1alpha1.APIKeyEntry{}
		if err := res.GetResource().UnmarshalTo(e); err != nil {
			t.Fatal(err)
		}
		entries[res.GetName()] = e
	}
	return r.GetTypeUrl(), entries, len(r.GetResources())
}

// TestTheFixturesAreServedOverXDSAndOnlyKeysTheClientDoesNotUseChange
// serves fixtures of 200 keys, 50 of them the client's, to a delta xDS
// client authenticated as a sidecar: it receives every key, the key set
// and the policy, and then, while the server churns, changes of keys the
// client never sends only, each one entry, toggling between disabled and
// active.
func TestTheFixturesAreServedOverXDSAndOnlyKeysTheClientDoesNotUseChange(t *testing.T) {
	dir := t.TempDir()
	creds, err := loadgen.WriteFixtures(loadgen.FixtureOptions{Dir: dir, Keys: 200, ClientKeys: 50, Tokens: 2, ObjectsPerFile: 64})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	out := filepath.Join(dir, "xds")
	srv, err := xdsload.Start(ctx, xdsload.Options{
		ConfigDir: filepath.Join(dir, loadgen.ConfigDirName), Namespace: "loadtest", ClientKeys: creds.APIKeys, Addr: "127.0.0.1:0", OutDir: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := srv.Wait(); err != nil {
			t.Errorf("the server stopped with %v", err)
		}
	})
	clientHashes := map[string]bool{}
	for _, k := range creds.APIKeys {
		key, err := apikeyformat.Parse(k)
		if err != nil {
			t.Fatal(err)
		}
		clientHashes[key.Hash()] = true
	}

	st := stream(t, srv, out)
	got := map[string]int{}
	var all map[string]*xdsv1alpha1.APIKeyEntry
	for range xds.Types {
		typ, entries, n := recvEntries(t, st)
		got[typ] = n
		if entries != nil {
			all = entries
		}
	}
	if got[xds.APIKeyEntryType] != 200 || got[xds.IssuerKeySetType] != 1 || got[xds.AuthPolicyType] != 1 {
		t.Fatalf("first responses held %v resources by type, want 200 API key entries, 1 key set, 1 policy", got)
	}

	churned := make(chan int, 1)
	churnCtx, stopChurn := context.WithCancel(ctx)
	go func() {
		n, err := srv.Churn(churnCtx, 200)
		if err != nil {
			t.Errorf("churn: %v", err)
		}
		churned <- n
	}()
	states := map[string][]xdsv1alpha1.APIKeyState{}
	for changes := 0; changes < 10; {
		_, entries, _ := recvEntries(t, st)
		for name, e := range entries {
			changes++
			for _, k := range e.GetKeys() {
				if clientHashes[hex.EncodeToString(k.GetSha256())] {
					t.Fatalf("the client's key %s changed", name)
				}
			}
			if all[name] == nil {
				t.Fatalf("a change of %s, which the fixtures do not hold", name)
			}
			states[name] = append(states[name], e.GetState())
		}
	}
	stopChurn()
	if n := <-churned; n < 10 {
		t.Fatalf("Churn reported %d changes, fewer than the 10 received", n)
	}
	for name, s := range states {
		if s[0] != xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED {
			t.Errorf("the first change of %s made it %v, want revoked (disabled)", name, s[0])
		}
	}
}
