// Package examples validates the Envoy and Istio wiring under examples/:
// the Envoy bootstraps are decoded into go-control-plane's Bootstrap proto
// and validated with the protoc-gen-validate rules, every typed_config
// included; the Istio objects are decoded strictly into istio.io/api's protos,
// and (in the integration test) created on a real API server with Istio's own
// CRDs, whose OpenAPI schemas and CEL rules validate them.
package examples

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	securityv1 "istio.io/api/security/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func read(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeBootstrap turns Envoy's YAML into a Bootstrap the way Envoy does:
// YAML to JSON, then proto JSON with unknown fields rejected. The Any
// fields resolve through the extension packages imported above.
func decodeBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(j, b); err != nil {
		return nil, fmt.Errorf("proto json: %w", err)
	}
	return b, nil
}

// validateDeep runs the protoc-gen-validate rules of m and of every message
// packed in an Any below it. ValidateAll alone stops at an Any: it checks
// the type URL, not the packed typed_config.
func validateDeep(m proto.Message) error {
	var errs []error
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err))
		}
	}
	for _, a := range anys(m.ProtoReflect()) {
		inner, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("unpacking %s: %w", a.GetTypeUrl(), err))
			continue
		}
		if err := validateDeep(inner); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// anys lists the Any messages directly or indirectly in m, without
// descending into them.
func anys(m protoreflect.Message) []*anypb.Any {
	var out []*anypb.Any
	var visit func(protoreflect.Message)
	visit = func(m protoreflect.Message) {
		if a, ok := m.Interface().(*anypb.Any); ok {
			out = append(out, a)
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					visit(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					visit(mv.Message())
					return true
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				visit(v.Message())
			}
			return true
		})
	}
	visit(m)
	return out
}

// unpacked returns every message of type T packed in an Any in b.
func unpacked[T proto.Message](t testing.TB, m proto.Message) []T {
	t.Helper()
	var out []T
	for _, a := range anys(m.ProtoReflect()) {
		inner, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if x, ok := inner.(T); ok {
			out = append(out, x)
		}
		out = append(out, unpacked[T](t, inner)...)
	}
	return out
}

func clusterByName(b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// endpoint returns the only address of a static cluster.
func endpoint(t testing.TB, c *clusterv3.Cluster) string {
	t.Helper()
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("cluster %s: want one endpoint, got %v", c.GetName(), eps)
	}
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	return fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
}

func TestEnvoyBootstrapsAreValid(t *testing.T) {
	tests := []struct {
		name         string
		file         string
		wantEndpoint string
		grpc         bool
	}{
		{name: "The gRPC variant checks with the sidecar's gRPC server on loopback.", file: "envoy/envoy-grpc.yaml", wantEndpoint: "127.0.0.1:9001", grpc: true},
		{name: "The HTTP variant checks with the sidecar's HTTP server on loopback.", file: "envoy/envoy-http.yaml", wantEndpoint: "127.0.0.1:9002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := decodeBootstrap(read(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if err := validateDeep(b); err != nil {
				t.Fatalf("Envoy would reject %s: %v", tt.file, err)
			}

			hcms := unpacked[*hcmv3.HttpConnectionManager](t, b)
			if len(hcms) != 1 {
				t.Fatalf("want one HTTP connection manager, got %d", len(hcms))
			}
			hcm := hcms[0]
			if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() || hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
				t.Errorf("normalize_path=%v merge_slashes=%v path_with_escaped_slashes_action=%v: Envoy and the sidecar would not see one path",
					hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes(), hcm.GetPathWithEscapedSlashesAction())
			}
			filters := hcms[0].GetHttpFilters()
			if len(filters) != 2 || filters[0].GetName() != "envoy.filters.http.ext_authz" || filters[1].GetName() != "envoy.filters.http.router" {
				t.Fatalf("http_filters = %v, want ext_authz then the router", filters)
			}
			if len(unpacked[*routerv3.Router](t, b)) != 1 {
				t.Error("the router's typed_config is not a Router")
			}
			for _, vh := range hcms[0].GetRouteConfig().GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if clusterByName(b, r.GetRoute().GetCluster()) == nil {
						t.Errorf("route %v names a cluster that does not exist", r.GetMatch())
					}
				}
			}

			authz := unpacked[*extauthzv3.ExtAuthz](t, b)
			if len(authz) != 1 {
				t.Fatalf("want one ext_authz filter, got %d", len(authz))
			}
			a := authz[0]
			if a.GetFailureModeAllow() {
				t.Error("failure_mode_allow is true: Envoy would let requests through when the sidecar is down")
			}
			if a.GetStatusOnError().GetCode() != typev3.StatusCode_ServiceUnavailable {
				t.Errorf("status_on_error = %v, want 503", a.GetStatusOnError().GetCode())
			}
			if a.GetTransportApiVersion().String() != "V3" {
				t.Errorf("transport_api_version = %v", a.GetTransportApiVersion())
			}
			if !a.GetIncludePeerCertificate() {
				t.Error("include_peer_certificate is not set")
			}
			var allowed []string
			for _, p := range a.GetAllowedHeaders().GetPatterns() {
				allowed = append(allowed, p.GetExact())
			}
			for _, h := range []string{"authorization", "x-api-key"} {
				if !contains(allowed, h) {
					t.Errorf("allowed_headers %v lack the credential header %q", allowed, h)
				}
			}

			var cluster string
			if tt.grpc {
				cluster = a.GetGrpcService().GetEnvoyGrpc().GetClusterName()
				if a.GetGrpcService().GetTimeout().AsDuration() <= 0 {
					t.Error("the gRPC service has no timeout")
				}
			} else {
				cluster = a.GetHttpService().GetServerUri().GetCluster()
				if up := a.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders().GetPatterns(); len(up) != 1 || up[0].GetPrefix() != "x-gatehouse-" {
					t.Errorf("allowed_upstream_headers = %v, want the x-gatehouse- identity headers", up)
				}
			}
			c := clusterByName(b, cluster)
			if c == nil {
				t.Fatalf("the ext_authz filter uses cluster %q, which does not exist", cluster)
			}
			if got := endpoint(t, c); got != tt.wantEndpoint {
				t.Errorf("the ext_authz cluster points at %s, want %s", got, tt.wantEndpoint)
			}
			opts := unpacked[*upstreamhttpv3.HttpProtocolOptions](t, c)
			if tt.grpc && (len(opts) != 1 || opts[0].GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil) {
				t.Error("the gRPC ext_authz cluster does not speak HTTP/2")
			}
			if admin := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); admin != "127.0.0.1" {
				t.Errorf("the admin interface listens on %q, want loopback only", admin)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestEnvoyValidationCatchesMistakes proves the validation above can fail,
// including inside a typed_config.
func TestEnvoyValidationCatchesMistakes(t *testing.T) {
	good := string(read(t, "envoy/envoy-grpc.yaml"))
	tests := []struct {
		name    string
		from    string
		to      string
		wantErr string
	}{
		{name: "An unknown field is rejected.", from: "failure_mode_allow: false", to: "failure_mode_alow: false", wantErr: "failure_mode_alow"},
		{name: "An invalid status code inside the ext_authz typed_config is rejected.", from: "code: ServiceUnavailable", to: "code: 42", wantErr: "StatusOnError"},
		{name: "An unknown escaped-slashes action is rejected.", from: "path_with_escaped_slashes_action: REJECT_REQUEST", to: "path_with_escaped_slashes_action: REJECT", wantErr: "REJECT"},
		{name: "A cluster with a negative connect timeout is rejected.", from: "connect_timeout: 1s", to: "connect_timeout: -1s", wantErr: "ConnectTimeout"},
		{name: "An unknown typed_config type is rejected.", from: "v3.Router", to: "v3.Routerr", wantErr: "Routerr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(good, tt.from) {
				t.Fatalf("the example no longer contains %q", tt.from)
			}
			b, err := decodeBootstrap([]byte(strings.Replace(good, tt.from, tt.to, 1)))
			if err == nil {
				err = validateDeep(b)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("want an error mentioning %q, got %v", tt.wantErr, err)
			}
		})
	}
}

// objects decodes a multi-document YAML file of Kubernetes objects.
func objects(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// strictProto decodes v (YAML-shaped data) into m, rejecting unknown fields.
func strictProto(v any, m proto.Message) error {
	j, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	if j, err = yaml.YAMLToJSON(j); err != nil {
		return err
	}
	return protojson.Unmarshal(j, m)
}

type istioExamples struct {
	mesh   *meshv1alpha1.MeshConfig
	se     *networkingv1.ServiceEntry
	ap     *securityv1.AuthorizationPolicy
	seObj  *unstructured.Unstructured
	apObj  *unstructured.Unstructured
	errors []error
}

func decodeIstio(t testing.TB, meshYAML, seYAML, apYAML []byte) istioExamples {
	t.Helper()
	var x istioExamples
	var values map[string]any
	if err := yaml.Unmarshal(meshYAML, &values); err != nil {
		t.Fatal(err)
	}
	x.mesh = &meshv1alpha1.MeshConfig{}
	if err := strictProto(values["meshConfig"], x.mesh); err != nil {
		x.errors = append(x.errors, fmt.Errorf("meshConfig: %w", err))
	}
	for _, o := range append(objects(t, seYAML), objects(t, apYAML)...) {
		switch o.GroupVersionKind().String() {
		case "networking.istio.io/v1, Kind=ServiceEntry":
			x.seObj, x.se = o, &networkingv1.ServiceEntry{}
			if err := strictProto(o.Object["spec"], x.se); err != nil {
				x.errors = append(x.errors, fmt.Errorf("ServiceEntry: %w", err))
			}
		case "security.istio.io/v1, Kind=AuthorizationPolicy":
			x.apObj, x.ap = o, &securityv1.AuthorizationPolicy{}
			if err := strictProto(o.Object["spec"], x.ap); err != nil {
				x.errors = append(x.errors, fmt.Errorf("AuthorizationPolicy: %w", err))
			}
		default:
			x.errors = append(x.errors, fmt.Errorf("unexpected object %s", o.GroupVersionKind()))
		}
	}
	return x
}

func TestIstioObjectsMatchIstioAPI(t *testing.T) {
	x := decodeIstio(t, read(t, "istio/meshconfig.yaml"), read(t, "istio/serviceentry.yaml"), read(t, "istio/authorizationpolicy.yaml"))
	if err := errors.Join(x.errors...); err != nil {
		t.Fatal(err)
	}
	if x.se == nil || x.ap == nil {
		t.Fatal("want a ServiceEntry and an AuthorizationPolicy")
	}

	providers := map[string]*meshv1alpha1.MeshConfig_ExtensionProvider{}
	for _, p := range x.mesh.GetExtensionProviders() {
		providers[p.GetName()] = p
	}
	ports := map[uint32]string{}
	for _, p := range x.se.GetPorts() {
		ports[p.GetNumber()] = p.GetProtocol()
	}

	t.Run("The mesh normalises paths and merges slashes, so that Envoy and the sidecar see one path.", func(t *testing.T) {
		if got := x.mesh.GetPathNormalization().GetNormalization(); got != meshv1alpha1.MeshConfig_ProxyPathNormalization_MERGE_SLASHES {
			t.Errorf("pathNormalization.normalization = %v, want MERGE_SLASHES", got)
		}
	})
	t.Run("The gRPC provider reaches the sidecar's gRPC port through the ServiceEntry, failing closed with 503.", func(t *testing.T) {
		g := providers["gatehouse-grpc"].GetEnvoyExtAuthzGrpc()
		if g == nil {
			t.Fatal("no envoyExtAuthzGrpc provider named gatehouse-grpc")
		}
		if !contains(x.se.GetHosts(), g.GetService()) || g.GetPort() != 9001 || ports[9001] != "GRPC" {
			t.Errorf("provider %s:%d, ServiceEntry hosts %v ports %v", g.GetService(), g.GetPort(), x.se.GetHosts(), ports)
		}
		if g.GetFailOpen() || g.GetStatusOnError() != "503" {
			t.Errorf("failOpen=%v statusOnError=%q", g.GetFailOpen(), g.GetStatusOnError())
		}
	})
	t.Run("The HTTP provider reaches the sidecar's HTTP port and forwards the credentials and identity headers.", func(t *testing.T) {
		h := providers["gatehouse-http"].GetEnvoyExtAuthzHttp()
		if h == nil {
			t.Fatal("no envoyExtAuthzHttp provider named gatehouse-http")
		}
		if !contains(x.se.GetHosts(), h.GetService()) || h.GetPort() != 9002 || ports[9002] != "HTTP" {
			t.Errorf("provider %s:%d, ServiceEntry hosts %v ports %v", h.GetService(), h.GetPort(), x.se.GetHosts(), ports)
		}
		if h.GetFailOpen() || h.GetStatusOnError() != "503" {
			t.Errorf("failOpen=%v statusOnError=%q", h.GetFailOpen(), h.GetStatusOnError())
		}
		for _, want := range []string{"authorization", "x-api-key"} {
			if !contains(h.GetIncludeRequestHeadersInCheck(), want) {
				t.Errorf("includeRequestHeadersInCheck %v lacks %q", h.GetIncludeRequestHeadersInCheck(), want)
			}
		}
		if !contains(h.GetHeadersToUpstreamOnAllow(), "x-gatehouse-*") || !contains(h.GetHeadersToDownstreamOnDeny(), "www-authenticate") {
			t.Errorf("headers on allow %v / on deny %v", h.GetHeadersToUpstreamOnAllow(), h.GetHeadersToDownstreamOnDeny())
		}
	})
	t.Run("The ServiceEntry resolves to the pod's loopback.", func(t *testing.T) {
		eps := x.se.GetEndpoints()
		if len(eps) != 1 || eps[0].GetAddress() != "127.0.0.1" || x.se.GetResolution().String() != "STATIC" {
			t.Errorf("endpoints %v resolution %v", eps, x.se.GetResolution())
		}
	})
	t.Run("The AuthorizationPolicy sends the injected pods' requests to a declared provider with action CUSTOM.", func(t *testing.T) {
		if x.ap.GetAction() != securityv1.AuthorizationPolicy_CUSTOM {
			t.Errorf("action = %v", x.ap.GetAction())
		}
		if providers[x.ap.GetProvider().GetName()] == nil {
			t.Errorf("provider %q is not declared in meshconfig.yaml", x.ap.GetProvider().GetName())
		}
		if got := x.ap.GetSelector().GetMatchLabels(); len(got) != 1 || got["auth.gatehouse.dev/inject"] != "true" {
			t.Errorf("selector = %v, want the injection label", got)
		}
		if len(x.ap.GetRules()) == 0 {
			t.Error("no rules: a CUSTOM policy without rules never calls the provider")
		}
		if x.apObj.GetNamespace() != x.seObj.GetNamespace() {
			t.Errorf("the policy (%s) and the ServiceEntry (%s) are in different namespaces", x.apObj.GetNamespace(), x.seObj.GetNamespace())
		}
	})
}

func TestIstioDecodingCatchesMistakes(t *testing.T) {
	mesh, se, ap := read(t, "istio/meshconfig.yaml"), read(t, "istio/serviceentry.yaml"), read(t, "istio/authorizationpolicy.yaml")
	tests := []struct {
		name       string
		mesh       []byte
		se, ap     []byte
		from, to   string
		wantErrSub string
	}{
		{name: "A misspelt provider field is rejected.", from: "failOpen: false", to: "failopen: false", wantErrSub: "failopen"},
		{name: "An unknown AuthorizationPolicy action is rejected.", from: "action: CUSTOM", to: "action: CUSTOMISED", wantErrSub: "CUSTOMISED"},
		{name: "An unknown ServiceEntry resolution is rejected.", from: "resolution: STATIC", to: "resolution: STATICALLY", wantErrSub: "STATICALLY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, s, a := string(mesh), string(se), string(ap)
			switch {
			case strings.Contains(m, tt.from):
				m = strings.Replace(m, tt.from, tt.to, 1)
			case strings.Contains(a, tt.from):
				a = strings.Replace(a, tt.from, tt.to, 1)
			case strings.Contains(s, tt.from):
				s = strings.Replace(s, tt.from, tt.to, 1)
			default:
				t.Fatalf("no example contains %q", tt.from)
			}
			x := decodeIstio(t, []byte(m), []byte(s), []byte(a))
			if err := errors.Join(x.errors...); err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
				t.Fatalf("want an error mentioning %q, got %v", tt.wantErrSub, err)
			}
		})
	}
}

// istioCRDs returns Istio's CRDs for ServiceEntry and AuthorizationPolicy
// from the istio.io/api module, the same schemas istiod's chart installs.
func istioCRDs(t testing.TB) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locating istio.io/api: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := d.Decode(crd); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatal(err)
		}
		if crd.Name == "serviceentries.networking.istio.io" || crd.Name == "authorizationpolicies.security.istio.io" {
			crds = append(crds, crd)
		}
	}
	if len(crds) != 2 {
		t.Fatalf("found %d of the 2 Istio CRDs", len(crds))
	}
	return crds
}

func TestIntegrationIstioObjectsAreAcceptedByIstioCRDs(t *testing.T) {
	env, ns := testenv.Start(t)
	crds := istioCRDs(t)
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{CRDs: crds, MaxTime: 30 * time.Second}); err != nil {
		t.Fatalf("installing Istio's CRDs: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var objs []*unstructured.Unstructured
	for _, f := range []string{"istio/serviceentry.yaml", "istio/authorizationpolicy.yaml"} {
		objs = append(objs, objects(t, read(t, f))...)
	}
	for _, o := range objs {
		t.Run(o.GetKind()+" is accepted by the API server.", func(t *testing.T) {
			o.SetNamespace(ns)
			if err := env.Client.Create(ctx, o); err != nil {
				t.Fatalf("the API server rejected %s: %v", o.GetKind(), err)
			}
		})
	}
	t.Run("The CRD validation can reject: a ServiceEntry without hosts is refused.", func(t *testing.T) {
		bad := objs[0].DeepCopy()
		bad.SetName("no-hosts")
		bad.SetResourceVersion("")
		unstructured.RemoveNestedField(bad.Object, "spec", "hosts")
		if err := env.Client.Create(ctx, bad, client.DryRunAll); err == nil {
			t.Fatal("a ServiceEntry without hosts was accepted: the schema does not validate")
		}
	})
}
