package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

func xdsConfig() *InjectionConfig {
	c := testConfig()
	c.XDS = &XDSInjection{Address: "dns:///gh-gatehouse-xds.gatehouse-system.svc:15010", ServerName: "gh-gatehouse-xds.gatehouse-system.svc"}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// testCA is a PEM CA bundle as the CertStore holds it.
func testCA(t *testing.T) []byte {
	t.Helper()
	ca, err := newCA(time.Now(), time.Hour, "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM
}

func TestInjectedSidecarOnXDS(t *testing.T) {
	ca := testCA(t)
	p := pod(optIn, map[string]string{AnnotationXDSCABundle: "a bundle the pod brought"})
	if out, err := xdsConfig().Mutate(p, ca); out != Injected || err != nil {
		t.Fatalf("%v %v", out, err)
	}
	c := sidecars(p)[0]
	vols := map[string]corev1.Volume{}
	for _, v := range p.Spec.Volumes {
		vols[v.Name] = v
	}

	t.Run("It takes its state from the xDS Service, trusting the injected CA file and presenting the xDS token.", func(t *testing.T) {
		want := []string{"--source=xds", "--xds-address=dns:///gh-gatehouse-xds.gatehouse-system.svc:15010",
			"--xds-server-name=gh-gatehouse-xds.gatehouse-system.svc", "--xds-ca-file=/etc/podinfo/xds-ca.crt",
			"--xds-token-file=/var/run/secrets/gatehouse/xds/token", "--namespace=$(POD_NAMESPACE)"}
		if !slices.Equal(c.Args[:len(want)], want) {
			t.Fatalf("args = %q, want them to start with %q", c.Args, want)
		}
		if slices.Contains(c.Args, "--source=kubernetes") {
			t.Fatalf("args = %q name two sources", c.Args)
		}
	})
	t.Run("The operator's CA bundle replaces whatever the pod's annotation held, and the downward API projects it.", func(t *testing.T) {
		if p.Annotations[AnnotationXDSCABundle] != string(ca) {
			t.Fatalf("annotation = %q", p.Annotations[AnnotationXDSCABundle])
		}
		items := vols[PodInfoVolume].DownwardAPI.Items
		if len(items) != 2 || items[1].Path != "xds-ca.crt" || items[1].FieldRef.FieldPath != "metadata.annotations['auth.gatehouse.dev/xds-ca-bundle']" {
			t.Fatalf("podinfo items = %+v", items)
		}
	})
	t.Run("Its token is bound to the xDS audience, short-lived, and it gets no token for the API server.", func(t *testing.T) {
		if _, ok := vols[TokenVolume]; ok {
			t.Fatal("a sidecar on xDS got an API server token")
		}
		src := vols[XDSTokenVolume].Projected
		if src == nil || len(src.Sources) != 1 || src.Sources[0].ServiceAccountToken == nil {
			t.Fatalf("xds token volume = %+v", vols[XDSTokenVolume])
		}
		tok := src.Sources[0].ServiceAccountToken
		if tok.Audience != "gatehouse-xds" || tok.ExpirationSeconds == nil || *tok.ExpirationSeconds != 3600 || tok.Path != "token" {
			t.Fatalf("token projection = %+v", tok)
		}
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = m.MountPath
		}
		if mounts[XDSTokenVolume] != "/var/run/secrets/gatehouse/xds" || mounts[PodInfoVolume] != "/etc/podinfo" || len(mounts) != 2 {
			t.Fatalf("mounts = %v", mounts)
		}
	})
	t.Run("A second injection changes nothing, not even the CA bundle after a rotation.", func(t *testing.T) {
		once := p.DeepCopy()
		if out, err := xdsConfig().Mutate(p, testCA(t)); out != AlreadyInjected || err != nil {
			t.Fatalf("%v %v", out, err)
		}
		if p.Annotations[AnnotationXDSCABundle] != once.Annotations[AnnotationXDSCABundle] || len(p.Spec.Volumes) != len(once.Spec.Volumes) {
			t.Fatal("a second injection changed the pod")
		}
	})
}

func TestMutateOnXDSWithoutACABundleRefusesThePod(t *testing.T) {
	p := pod(optIn, nil)
	before := p.DeepCopy()
	out, err := xdsConfig().Mutate(p, nil)
	if out != NoXDSTrust || err == nil {
		t.Fatalf("%v %v", out, err)
	}
	if len(sidecars(p)) != 0 || len(p.Annotations) != len(before.Annotations) || len(p.Spec.Volumes) != len(before.Spec.Volumes) {
		t.Fatal("a refused pod was changed")
	}
	if out, _ := xdsConfig().Mutate(pod(nil, nil), nil); out != NotOptedIn {
		t.Fatalf("a pod that did not opt in is %v, want NotOptedIn whatever the CA", out)
	}
}

func TestInjectorOnXDSAsksForTheCABundleAtEachAdmission(t *testing.T) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	review := func(trust func() ([]byte, error)) admission.Response {
		raw, err := json.Marshal(pod(optIn, nil))
		if err != nil {
			t.Fatal(err)
		}
		inj := &Injector{Config: xdsConfig(), XDSTrust: trust, Decoder: admission.NewDecoder(s), Log: logr.Discard()}
		return inj.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Namespace: "shop",
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		}})
	}
	ca := testCA(t)
	resp := review(func() ([]byte, error) { return ca, nil })
	annotated := false
	for _, op := range resp.Patches {
		annotated = annotated || strings.Contains(op.Path, "annotations")
	}
	if !resp.Allowed || !annotated {
		t.Fatalf("allowed %v, patches %+v: want the CA bundle annotated", resp.Allowed, resp.Patches)
	}
	resp = review(func() ([]byte, error) { return nil, errors.New("no CA bundle loaded yet") })
	if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "CA bundle") {
		t.Fatalf("without a CA bundle the pod is allowed (%+v): it would run a sidecar that can never connect", resp.Result)
	}
}

func TestXDSTrustSources(t *testing.T) {
	t.Run("The operator's own CA: nothing before the Secret is loaded, then its ca.crt.", func(t *testing.T) {
		store := &CertStore{}
		trust := trustSource(Options{Store: store})
		if _, err := trust(); err == nil {
			t.Fatal("want an error before any CA is loaded")
		}
		store.SetTrust([]byte("bundle"))
		if got, err := trust(); err != nil || string(got) != "bundle" {
			t.Fatalf("%q %v", got, err)
		}
	})
	t.Run("cert-manager's ca.crt is read at each call, and refused when it holds no certificate.", func(t *testing.T) {
		dir := t.TempDir()
		trust := trustSource(Options{CertDir: dir})
		if _, err := trust(); err == nil {
			t.Fatal("want an error without ca.crt")
		}
		if err := os.WriteFile(filepath.Join(dir, "ca.crt"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := trust(); err == nil || !strings.Contains(err.Error(), "CA issuer") {
			t.Fatalf("an empty ca.crt (an ACME issuer) gave %v", err)
		}
		ca := testCA(t)
		if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := trust(); err != nil || string(got) != string(ca) {
			t.Fatalf("%q %v", got, err)
		}
	})
}

func TestLoadInjectionConfigWithXDS(t *testing.T) {
	tests := []struct {
		name, file, wantErr string
	}{
		{name: "The audience and the token lifetime default to the operator's.", file: "image: x\nxds:\n  address: dns:///a.b.svc:15010\n  serverName: a.b.svc\n"},
		{name: "The server name is required.", file: "image: x\nxds:\n  address: dns:///a.b.svc:15010\n", wantErr: "serverName"},
		{name: "A token lifetime below the API server's minimum is an error.", file: "image: x\nxds:\n  address: a:1\n  serverName: a\n  tokenExpirationSeconds: 60\n", wantErr: "600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := loadConfigText(t, tt.file, tt.wantErr)
			if c == nil {
				return
			}
			if c.XDS.Audience != DefaultXDSAudience || c.XDS.TokenExpirationSeconds != 3600 {
				t.Fatalf("xds = %+v", c.XDS)
			}
		})
	}
}

func TestAPodChoosesItsSidecarSource(t *testing.T) {
	ca := testCA(t)
	tests := []struct {
		name       string
		cfg        *InjectionConfig
		annotation string
		wantOut    Outcome
		wantSource string
	}{
		{name: "Without the annotation a pod gets the installation's default, xDS.", cfg: xdsConfig(), wantOut: Injected, wantSource: "--source=xds"},
		{name: "A pod that asks for the kubernetes source gets it where xDS is the default.", cfg: xdsConfig(), annotation: "kubernetes", wantOut: Injected, wantSource: "--source=kubernetes"},
		{name: "A pod that asks for xDS gets it where it is served.", cfg: xdsConfig(), annotation: "xds", wantOut: Injected, wantSource: "--source=xds"},
		{name: "A pod that asks for xDS where none is served is refused, not given a sidecar that cannot connect.", cfg: testConfig(), annotation: "xds", wantOut: UnknownSource},
		{name: "A misspelt source is refused.", cfg: xdsConfig(), annotation: "kube", wantOut: UnknownSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var annotations map[string]string
			if tt.annotation != "" {
				annotations = map[string]string{AnnotationSource: tt.annotation}
			}
			p := pod(optIn, annotations)
			out, err := tt.cfg.Mutate(p, ca)
			if out != tt.wantOut || (err != nil) != (tt.wantOut != Injected) {
				t.Fatalf("%v %v, want %v", out, err, tt.wantOut)
			}
			if tt.wantOut != Injected {
				if len(sidecars(p)) != 0 {
					t.Fatal("a refused pod got a sidecar")
				}
				return
			}
			c := sidecars(p)[0]
			if !slices.Contains(c.Args, tt.wantSource) {
				t.Fatalf("args %q lack %s", c.Args, tt.wantSource)
			}
			_, annotated := p.Annotations[AnnotationXDSCABundle]
			onXDS := tt.wantSource == "--source=xds"
			if annotated != onXDS {
				t.Errorf("CA bundle annotated = %v on the %s source", annotated, tt.wantSource)
			}
			if onXDS == slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == TokenVolume }) {
				t.Errorf("volumes %v: an API server token must come with the kubernetes source only", p.Spec.Volumes)
			}
		})
	}
}
