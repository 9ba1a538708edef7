package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	operatorapp "gatehouse.dev/gatehouse/operator/app"
	"gatehouse.dev/gatehouse/operator/webhook"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/stack"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// xdsState is what one delta xDS stream has received, by type and name.
type xdsState struct {
	mu   sync.Mutex
	msgs map[string]map[string]proto.Message
	err  error
}

func (s *xdsState) get(typeURL, name string) proto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[typeURL][name]
}

// subscribeAll opens one ADS delta stream and subscribes to every type,
// ACKing each response.
func subscribeAll(t *testing.T, conn *grpc.ClientConn, token string) *xdsState {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token))
	t.Cleanup(cancel)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range xds.Types {
		if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
	}
	s := &xdsState{msgs: map[string]map[string]proto.Message{}}
	go func() {
		for {
			r, err := st.Recv()
			s.mu.Lock()
			if err != nil {
				s.err = err
				s.mu.Unlock()
				return
			}
			if s.msgs[r.GetTypeUrl()] == nil {
				s.msgs[r.GetTypeUrl()] = map[string]proto.Message{}
			}
			for _, res := range r.GetResources() {
				m, err := res.GetResource().UnmarshalNew()
				if err == nil {
					s.msgs[r.GetTypeUrl()][res.GetName()] = m
				}
			}
			for _, name := range r.GetRemovedResources() {
				delete(s.msgs[r.GetTypeUrl()], name)
			}
			s.mu.Unlock()
			if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
				return
			}
		}
	}()
	return s
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// TestIntegrationXDSServesTheOperatorsStateOverTLS runs the whole operator
// with the webhook's own certificates and the xDS server: a sidecar that
// trusts only the operator's CA and presents its ServiceAccount token
// receives the APIKey the operator issued, the SigningKey's key set and the
// compiled AuthPolicy, and then the key's revocation.
func TestIntegrationXDSServesTheOperatorsStateOverTLS(t *testing.T) {
	env, ns := testenv.Start(t)
	releaseNS := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-xds-" + ns}}
	if err := env.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), mwc) })
	xdsLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &stack.LogBuffer{}
	s, err := stack.Start(ctx, stack.Options{
		OperatorConfig: env.Config,
		SidecarConfig:  env.ServiceAccountConfig(t, ns, "sidecar", testenv.SidecarRules),
		Namespace:      ns,
		OperatorLog:    logs.Logger("operator"),
		SidecarLog:     logs.Logger("sidecar"),
		Operator: func(o *operatorapp.Options) {
			o.SkipControllerNameValidation = true
			o.Webhook = webhook.Options{
				BindAddress: freeAddr(t), Namespace: releaseNS, SecretName: "gatehouse-webhook-tls",
				ServiceName: "gatehouse-webhook", ClusterDomain: "cluster.local", ConfigurationName: mwc.Name,
				CAValidity: 365 * 24 * time.Hour, CertValidity: 90 * 24 * time.Hour,
				Injection: &webhook.InjectionConfig{Image: "example.com/gatehouse:test"},
			}
			o.XDSListener = xdsLn
			o.XDSServiceName = "gatehouse-xds"
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the stack: %v", err)
		}
	})

	objs := []client.Object{
		&gatehousev1.SigningKey{
			ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: ns},
			Spec:       gatehousev1.SigningKeySpec{Algorithm: gatehousev1.ES256, Issuer: "https://issuer.example/" + ns},
		},
		testfixture.Policy(ns, "orders", time.Time{}, []gatehousev1.TrustedIssuer{
			{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}},
		}, gatehousev1.Rule{Name: "all", Match: gatehousev1.RuleMatch{Paths: []string{"/*"}}}),
		&gatehousev1.APIKey{
			ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: ns},
			Spec:       gatehousev1.APIKeySpec{Subject: "service:billing", SecretName: "billing-key"},
		},
	}
	for _, o := range objs {
		o.SetResourceVersion("")
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T: %v", o, err)
		}
	}

	// The sidecar trusts the CA in the operator's Secret, and nothing else.
	var pool *x509.CertPool
	framework.Eventually(t, "the operator to issue its CA", 30*time.Second, func() (bool, string) {
		sec := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "gatehouse-webhook-tls"}, sec); err != nil {
			return false, err.Error()
		}
		pool = x509.NewCertPool()
		return pool.AppendCertsFromPEM(sec.Data[webhook.SecretCAKey]), "no CA in the Secret"
	})
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "gatehouse-xds." + releaseNS + ".svc", MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient("passthrough:///"+xdsLn.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	state := subscribeAll(t, conn, sidecarToken(t, env, ns))

	var keyID string
	framework.Eventually(t, "the issued key, the key set and the policy over xDS", 60*time.Second, func() (bool, string) {
		ak := &gatehousev1.APIKey{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "billing"}, ak); err != nil {
			return false, err.Error()
		}
		keyID = ak.Status.KeyID
		sk := &gatehousev1.SigningKey{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "platform"}, sk); err != nil {
			return false, err.Error()
		}
		e, _ := state.get(xds.APIKeyEntryType, "billing").(*xdsv1alpha1.APIKeyEntry)
		ks, _ := state.get(xds.IssuerKeySetType, "platform").(*xdsv1alpha1.IssuerKeySet)
		p, _ := state.get(xds.AuthPolicyType, "orders").(*xdsv1alpha1.AuthPolicy)
		ok := keyID != "" && len(e.GetKeys()) == 1 && e.GetKeys()[0].GetKeyId() == keyID &&
			e.GetState() == xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE &&
			ks.GetIssuer() == "https://issuer.example/"+ns && sk.Status.ActiveKeyID != "" && strings.Contains(string(ks.GetJwks()), sk.Status.ActiveKeyID) &&
			len(p.GetIssuers()) == 1 && p.GetIssuers()[0].GetSigningKey() == "platform"
		state.mu.Lock()
		defer state.mu.Unlock()
		return ok, "status key " + keyID + "; received " + describe(state.msgs) + errString(state.err)
	})

	env.DisableAPIKey(t, ns, "billing")
	framework.Eventually(t, "the revocation over xDS", 30*time.Second, func() (bool, string) {
		e, _ := state.get(xds.APIKeyEntryType, "billing").(*xdsv1alpha1.APIKeyEntry)
		return e.GetState() == xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED, "state " + e.GetState().String()
	})
}

func sidecarToken(t *testing.T, env *testenv.Env, ns string) string {
	t.Helper()
	return env.SidecarToken(t, ns, "sidecar", xds.DefaultAudience)
}

func describe(msgs map[string]map[string]proto.Message) string {
	var b strings.Builder
	for typ, byName := range msgs {
		b.WriteString(typ[strings.LastIndex(typ, ".")+1:] + ":")
		for name := range byName {
			b.WriteString(" " + name)
		}
		b.WriteString("; ")
	}
	return b.String()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return " (stream: " + err.Error() + ")"
}
