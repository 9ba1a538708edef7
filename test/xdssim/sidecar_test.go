package xdssim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/test/testenv"
)

// reviewer admits the tokens "<key>/<pod>" whose key it knows, each as a
// ServiceAccount "sidecar" of the namespace the key maps to, bound to pod
// <pod> (the server bounds streams per pod).
type reviewer map[string]string

func (r reviewer) Review(_ context.Context, token string) (xds.Identity, error) {
	key, pod, _ := strings.Cut(token, "/")
	ns, ok := r[key]
	if !ok || pod == "" {
		return xds.Identity{}, errors.New("unknown token")
	}
	return xds.Identity{Namespace: ns, ServiceAccount: "sidecar", PodName: pod, PodUID: ns + "/" + pod}, nil
}

// serve runs the operator's xDS server on 127.0.0.1 over TLS, serving
// caches (filled by the test) to the tokens of rev, and returns its
// address and a Target for namespace ns, each a pod of its own (token:
// ns/pod-<n>).
func serve(t *testing.T, caches *xds.Namespaces, rev reviewer) func(ns string) Target {
	t.Helper()
	serverTLS, clientTLS := testenv.LoopbackTLS(t)
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	srv := &xds.Server{Listener: ln, TLS: serverTLS, Caches: caches, Reviewer: rev, Log: testr.New(t)}
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the server did not stop")
		}
	})
	var pods atomic.Int64
	return func(ns string) Target {
		token := fmt.Sprintf("%s/pod-%d", ns, pods.Add(1))
		return Target{
			Addresses: []string{ln.Addr().String()}, TLS: clientTLS, Namespace: ns,
			Token:   func(context.Context) (string, error) { return token, nil },
			Belongs: prefixed(ns),
		}
	}
}

// prefixed says a resource belongs to ns when its name starts with ns+"-".
func prefixed(ns string) func(string, string, proto.Message) bool {
	return func(_, name string, _ proto.Message) bool { return strings.HasPrefix(name, ns+"-") }
}

func entry(name string, state xdsv1alpha1.APIKeyState) *xdsv1alpha1.APIKeyEntry {
	return &xdsv1alpha1.APIKeyEntry{
		Name: name, Subject: "service:" + name, Scopes: []string{"orders:read"}, State: state,
		Keys: []*xdsv1alpha1.APIKeyHash{{KeyId: name + "-id", Sha256: make([]byte, 32)}},
	}
}

func fill(t *testing.T, caches *xds.Namespaces, ns string, n int) {
	t.Helper()
	entries := map[string]types.Resource{}
	for i := range n {
		name := fmt.Sprintf("%s-key-%d", ns, i)
		entries[name] = entry(name, xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE)
	}
	policies := map[string]types.Resource{ns + "-policy": &xdsv1alpha1.AuthPolicy{Name: ns + "-policy"}}
	if err := caches.Update(ns, xds.APIKeyEntryType, entries, nil); err != nil {
		t.Fatal(err)
	}
	if err := caches.Update(ns, xds.AuthPolicyType, policies, nil); err != nil {
		t.Fatal(err)
	}
}

// putKeyInA puts r under name in namespace a's cache of APIKeyEntries
// (r may be of another type, to test what a client makes of that).
func putKeyInA(t *testing.T, caches *xds.Namespaces, name string, r types.Resource) {
	t.Helper()
	if err := caches.Update("a", xds.APIKeyEntryType, map[string]types.Resource{name: r}, nil); err != nil {
		t.Fatal(err)
	}
}

// start runs fleet until the test ends.
func start(t *testing.T, f *Fleet) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx)
	t.Cleanup(func() {
		cancel()
		f.Wait()
	})
}

func holding(n int) func(*Sidecar) bool {
	return func(s *Sidecar) bool { return s.Complete() && s.Count(xds.APIKeyEntryType) == n }
}

func waitReady(t *testing.T, f *Fleet, ready func(*Sidecar) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.WaitReady(ctx, ready); err != nil {
		t.Fatal(err)
	}
}

func waitViolation(t *testing.T, f *Fleet, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if slices.ContainsFunc(f.Violations(), func(v string) bool { return strings.Contains(v, want) }) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no violation %q reported; violations: %q", want, f.Violations())
}

func TestSidecarsOfTwoNamespacesConvergeAndSeeChanges(t *testing.T) {
	caches := xds.NewNamespaces()
	fill(t, caches, "a", 300)
	fill(t, caches, "b", 20)
	target := serve(t, caches, reviewer{"a": "a", "b": "b"})
	f := NewFleet(6, func(i int) Target { return target([]string{"a", "b"}[i%2]) })
	start(t, f)
	waitReady(t, f, func(s *Sidecar) bool {
		return holding(map[string]int{"a": 300, "b": 20}[s.Namespace()])(s) && s.Count(xds.AuthPolicyType) == 1
	})

	revoked := func(e *xdsv1alpha1.APIKeyEntry) bool {
		return e.GetState() == xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED
	}
	putKeyInA(t, caches, "a-key-7", entry("a-key-7", xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := NewFleet(0, nil)
	a.sidecars = []*Sidecar{f.Sidecar(0), f.Sidecar(2), f.Sidecar(4)}
	times, err := a.WaitAll(ctx, "a-key-7", revoked)
	if err != nil {
		t.Fatal(err)
	}
	for i, at := range times {
		if at.IsZero() {
			t.Errorf("sidecar %d: no time", i)
		}
	}
	for i := range f.Len() {
		s := f.Sidecar(i)
		want := map[string]int{"a": 1, "b": 0}[s.Namespace()]
		if got := s.Removals("a-key-7"); got != want {
			t.Errorf("sidecar %d (%s): Removals = %d, want %d", i, s.Namespace(), got, want)
		}
		if got := s.Removals("a-key-8"); got != 0 {
			t.Errorf("sidecar %d: Removals of an unchanged key = %d", i, got)
		}
	}
	if v := f.Violations(); len(v) > 0 {
		t.Fatalf("violations: %q", v)
	}
}

func TestAReconnectingSidecarIsSentOnlyWhatChanged(t *testing.T) {
	caches := xds.NewNamespaces()
	fill(t, caches, "a", 500)
	target := serve(t, caches, reviewer{"a": "a"})
	f := NewFleet(1, func(int) Target { return target("a") })
	start(t, f)
	waitReady(t, f, holding(500))
	s := f.Sidecar(0)
	first := s.BytesReceived()

	s.Reconnect()
	putKeyInA(t, caches, "a-new-key", entry("a-new-key", xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE))
	waitReady(t, f, holding(501))
	again := s.BytesReceived() - first
	t.Logf("first state: %d bytes; a reconnection and a one-key change: %d bytes", first, again)
	if again <= 0 || again*20 > first {
		t.Fatalf("a reconnection and one new key cost %d bytes, the first state %d: the versions held were not used", again, first)
	}
	if v := f.Violations(); len(v) > 0 {
		t.Fatalf("violations: %q", v)
	}
}

// The negative controls: each check reports what it is there to catch.

func TestAResourceOfAnotherNamespaceIsReported(t *testing.T) {
	caches := xds.NewNamespaces()
	fill(t, caches, "a", 3)
	putKeyInA(t, caches, "b-key-0", entry("b-key-0", xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE))
	target := serve(t, caches, reviewer{"a": "a"})
	f := NewFleet(1, func(int) Target { return target("a") })
	start(t, f)
	waitViolation(t, f, `APIKeyEntry "b-key-0": it is not of the sidecar's namespace`)
	waitReady(t, f, holding(3))
	if e := f.Sidecar(0).Entry("b-key-0"); e != nil {
		t.Fatal("the foreign entry is held")
	}
}

func TestAResourceOfAnotherTypeIsReported(t *testing.T) {
	caches := xds.NewNamespaces()
	fill(t, caches, "a", 3)
	putKeyInA(t, caches, "a-odd", &xdsv1alpha1.IssuerKeySet{Name: "a-odd"})
	target := serve(t, caches, reviewer{"a": "a"})
	f := NewFleet(1, func(int) Target { return target("a") })
	start(t, f)
	waitViolation(t, f, `APIKeyEntry "a-odd": the resource's type is "type.googleapis.com/gatehouse.xds.v1alpha1.IssuerKeySet"`)
	waitReady(t, f, holding(3))
}

// tamper changes every response the client receives with edit, as a
// faulty server or a party in the path would.
func tamper(edit func(*discovery.DeltaDiscoveryResponse)) grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		return &tampered{ClientStream: cs, edit: edit}, err
	})
}

type tampered struct {
	grpc.ClientStream
	edit func(*discovery.DeltaDiscoveryResponse)
}

func (s *tampered) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if r, ok := m.(*discovery.DeltaDiscoveryResponse); ok && err == nil {
		s.edit(r)
	}
	return err
}

func TestAVersionThatIsNotTheContentHashIsReported(t *testing.T) {
	caches := xds.NewNamespaces()
	fill(t, caches, "a", 3)
	target := serve(t, caches, reviewer{"a": "a"})
	f := NewFleet(1, func(int) Target {
		tg := target("a")
		tg.dialOptions = []grpc.DialOption{tamper(func(r *discovery.DeltaDiscoveryResponse) {
			for _, res := range r.GetResources() {
				if res.GetName() == "a-key-1" {
					res.Version = strings.Repeat("0", 64)
				}
			}
		})}
		return tg
	})
	start(t, f)
	waitViolation(t, f, `APIKeyEntry "a-key-1": its version is not the SHA-256 of its content`)
	waitReady(t, f, holding(2))
}

func TestAValueThatDoesNotDecodeOrCarriesAnotherNameIsReported(t *testing.T) {
	caches := xds.NewNamespaces()
	fill(t, caches, "a", 3)
	target := serve(t, caches, reviewer{"a": "a"})
	f := NewFleet(1, func(int) Target {
		tg := target("a")
		tg.dialOptions = []grpc.DialOption{tamper(func(r *discovery.DeltaDiscoveryResponse) {
			for _, res := range r.GetResources() {
				switch res.GetName() {
				case "a-key-0":
					res.Name = "a-key-9"
				case "a-key-1":
					res.Resource.Value = []byte{0xff}
					res.Version = hashOf(res.GetResource().GetValue())
				}
			}
		})}
		return tg
	})
	start(t, f)
	waitViolation(t, f, `APIKeyEntry "a-key-9": the message carries another name`)
	waitViolation(t, f, `APIKeyEntry "a-key-1": its value does not decode`)
	waitReady(t, f, holding(1))
}

func TestARemovalOfANameNotHeldIsNoViolation(t *testing.T) {
	caches := xds.NewNamespaces()
	fill(t, caches, "a", 3)
	target := serve(t, caches, reviewer{"a": "a"})
	f := NewFleet(1, func(int) Target {
		tg := target("a")
		tg.dialOptions = []grpc.DialOption{tamper(func(r *discovery.DeltaDiscoveryResponse) {
			r.RemovedResources = append(r.RemovedResources, "a-never-held")
		})}
		return tg
	})
	start(t, f)
	waitReady(t, f, holding(3))
	if v := f.Violations(); len(v) > 0 {
		t.Fatalf("violations: %q", v)
	}
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
