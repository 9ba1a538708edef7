package chart

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"gatehouse.dev/gatehouse/operator/webhook"
)

// injectionConfig loads the chart's injection ConfigMap as the operator
// does.
func injectionConfig(t *testing.T, objs rendered) *webhook.InjectionConfig {
	t.Helper()
	cm := into[corev1.ConfigMap](t, objs.find(t, "ConfigMap", "gh-gatehouse-sidecar-injection"))
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := webhook.LoadInjectionConfig(p)
	if err != nil {
		t.Fatalf("the operator cannot load the chart's injection config: %v", err)
	}
	return cfg
}

// injectedSidecar injects an opted-in pod with the chart's injection
// config (and, for xDS, a CA bundle) and returns the sidecar container.
func injectedSidecar(t *testing.T, objs rendered) corev1.Container {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{webhook.LabelInject: "true"}}}
	if out, err := injectionConfig(t, objs).Mutate(pod, []byte("a CA bundle")); out != webhook.Injected || err != nil {
		t.Fatalf("injection: %v %v", out, err)
	}
	return pod.Spec.InitContainers[0]
}

func operatorArgs(t *testing.T, objs rendered) []string {
	t.Helper()
	return into[appsv1.Deployment](t, objs.find(t, "Deployment", "gh-gatehouse")).Spec.Template.Spec.Containers[0].Args
}

func TestXDSIsOffByDefault(t *testing.T) {
	objs := render(t)
	if objs.has("Service", "gh-gatehouse-xds") {
		t.Error("an xDS Service is rendered by default")
	}
	for _, a := range operatorArgs(t, objs) {
		if strings.HasPrefix(a, "--xds-") {
			t.Errorf("the operator gets %s by default", a)
		}
	}
	if cfg := injectionConfig(t, objs); cfg.XDS != nil {
		t.Errorf("the injection config has xds %+v by default", cfg.XDS)
	}
	if c := injectedSidecar(t, objs); !slices.Contains(c.Args, "--source=kubernetes") {
		t.Errorf("injected args %q: want the kubernetes source by default", c.Args)
	}
}

func TestXDSEnabledWiresTheOperatorTheServiceAndInjection(t *testing.T) {
	objs := render(t, "xds.enabled=true", "xds.port=15999", "xds.audience=gh-xds")
	d := into[appsv1.Deployment](t, objs.find(t, "Deployment", "gh-gatehouse"))
	op := d.Spec.Template.Spec.Containers[0]

	t.Run("The operator serves xDS on the port, names the Service in its certificate and checks tokens for the audience.", func(t *testing.T) {
		for _, want := range []string{"--xds-bind-address=:15999", "--xds-service-name=gh-gatehouse-xds", "--xds-audience=gh-xds"} {
			if !slices.Contains(op.Args, want) {
				t.Errorf("operator args %q lack %s", op.Args, want)
			}
		}
	})
	t.Run("The Service is headless, so that DNS gives sidecars every replica, on the container's own port.", func(t *testing.T) {
		svc := into[corev1.Service](t, objs.find(t, "Service", "gh-gatehouse-xds"))
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("clusterIP = %q, want None", svc.Spec.ClusterIP)
		}
		// Clients of a headless Service dial the pod IPs on the Service's
		// port: it must be the container port itself.
		var containerPort int32
		for _, p := range op.Ports {
			if p.Name == "xds" {
				containerPort = p.ContainerPort
			}
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 15999 || containerPort != 15999 || svc.Spec.Ports[0].TargetPort.StrVal != "xds" {
			t.Errorf("service ports %+v, container port %d", svc.Spec.Ports, containerPort)
		}
	})
	t.Run("Injected sidecars dial that Service by DNS, check the name the operator's certificate holds, and present a token for the audience.", func(t *testing.T) {
		cfg := injectionConfig(t, objs)
		want := webhook.XDSInjection{Address: "dns:///gh-gatehouse-xds.gatehouse-system.svc:15999", ServerName: "gh-gatehouse-xds.gatehouse-system.svc", Audience: "gh-xds", TokenExpirationSeconds: 3600}
		if cfg.XDS == nil || *cfg.XDS != want {
			t.Fatalf("injection xds = %+v, want %+v", cfg.XDS, want)
		}
		// The self-managed certificate holds <service>.<namespace>.svc for
		// every name in --xds-service-name (operator/webhook dnsNames).
		if !strings.HasPrefix(want.ServerName, "gh-gatehouse-xds.gatehouse-system.") {
			t.Fatal("the server name is not the Service the operator names")
		}
		c := injectedSidecar(t, objs)
		if !slices.Contains(c.Args, "--source=xds") || !slices.Contains(c.Args, "--xds-address="+want.Address) {
			t.Errorf("injected args %q", c.Args)
		}
	})
}

func TestXDSWithCertManagerNamesTheServiceInAChartCASignedCertificate(t *testing.T) {
	objs := render(t, "xds.enabled=true", "webhook.certManager.enabled=true")
	cert := objs.find(t, "Certificate", "gh-gatehouse-webhook-tls")
	names, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	server := injectionConfig(t, objs).XDS.ServerName
	if !slices.Contains(names, server) {
		t.Errorf("the certificate names %q, not the sidecars' server name %s", names, server)
	}
	issuer, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
	caIssuer := objs.find(t, "Issuer", issuer)
	caSecret, _, _ := unstructured.NestedString(caIssuer.Object, "spec", "ca", "secretName")
	ca := objs.find(t, "Certificate", "gh-gatehouse-ca")
	isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA")
	secret, _, _ := unstructured.NestedString(ca.Object, "spec", "secretName")
	if !isCA || secret != caSecret {
		t.Errorf("the webhook certificate's issuer %s signs with %q, not the chart's CA (isCA %v, secret %q): a renewal would change what sidecars trust", issuer, caSecret, isCA, secret)
	}
	if !slices.Contains(operatorArgs(t, objs), "--webhook-cert-dir=/etc/gatehouse/webhook-tls") {
		t.Error("the operator does not serve the mounted certificate")
	}

	objs = render(t, "webhook.certManager.enabled=true")
	names, _, _ = unstructured.NestedStringSlice(objs.find(t, "Certificate", "gh-gatehouse-webhook-tls").Object, "spec", "dnsNames")
	if slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "-xds") }) {
		t.Errorf("without xDS the certificate names %q", names)
	}
}
