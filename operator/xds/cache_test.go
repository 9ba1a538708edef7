package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
)

func deltaWatch(t *testing.T, n *Namespaces, node *core.Node, names ...string) (cache.DeltaResponse, error) {
	t.Helper()
	req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: APIKeyEntryType, ResourceNamesSubscribe: names}
	sub := stream.NewDeltaSubscription(names, nil, nil, true)
	out := make(chan cache.DeltaResponse, 1)
	cancel, err := n.CreateDeltaWatch(req, &sub, out)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-out:
		return r, nil
	default:
		if cancel != nil {
			cancel()
		}
		return nil, nil
	}
}

func TestNamespacesRouteByTheServersNode(t *testing.T) {
	n := NewNamespaces()
	for _, ns := range []string{"a", "b"} {
		if err := n.Update(ns, APIKeyEntryType, map[string]types.Resource{"key-" + ns: &xdsv1alpha1.APIKeyEntry{Name: "key-" + ns}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a wildcard watch of namespace a gets a's resources only", func(t *testing.T) {
		r, err := deltaWatch(t, n, &core.Node{Cluster: "a"})
		if err != nil || r == nil {
			t.Fatalf("no response: %v", err)
		}
		got := r.GetReturnedResources()
		if _, ok := got["key-a"]; !ok || len(got) != 1 {
			t.Fatalf("resources = %v, want key-a only", got)
		}
	})
	t.Run("a watch of namespace a naming b's resource gets nothing", func(t *testing.T) {
		r, err := deltaWatch(t, n, &core.Node{Cluster: "a"}, "key-b")
		if err != nil || r != nil {
			t.Fatalf("response = %v, %v; want none", r, err)
		}
	})
	t.Run("a request without a namespace is refused", func(t *testing.T) {
		if _, err := deltaWatch(t, n, &core.Node{Id: "x"}); err == nil {
			t.Fatal("accepted")
		}
	})
	t.Run("state of the world is refused", func(t *testing.T) {
		if _, err := n.CreateWatch(&discovery.DiscoveryRequest{Node: &core.Node{Cluster: "a"}, TypeUrl: APIKeyEntryType}, nil, nil); err == nil {
			t.Fatal("accepted")
		}
	})
	t.Run("an unknown type is refused", func(t *testing.T) {
		req := &discovery.DeltaDiscoveryRequest{Node: &core.Node{Cluster: "a"}, TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}
		sub := stream.NewDeltaSubscription(nil, nil, nil, true)
		if _, err := n.CreateDeltaWatch(req, &sub, make(chan cache.DeltaResponse, 1)); err == nil {
			t.Fatal("accepted")
		}
	})
}
