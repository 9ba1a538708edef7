package webhook

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

func testConfig() *InjectionConfig {
	c := &InjectionConfig{
		Image:    "example.com/gatehouse:v1",
		LogLevel: "debug",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		ExtraArgs: []string{"--drain-delay=5s"},
	}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

func pod(labels, annotations map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "shop", Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "migrate", Image: "app:1"}},
			Containers:     []corev1.Container{{Name: "app", Image: "app:1"}},
			Volumes:        []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

var optIn = map[string]string{LabelInject: "true"}

// handle runs the injector on an admission request for p and returns the
// response and the pod with the response's patch applied.
func handle(t *testing.T, op admissionv1.Operation, p *corev1.Pod) (admission.Response, *corev1.Pod) {
	t.Helper()
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	inj := &Injector{Config: testConfig(), Decoder: admission.NewDecoder(s), Log: logr.Discard()}
	resp := inj.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "shop",
		Operation: op,
		Object:    runtime.RawExtension{Raw: raw},
	}})
	patched := raw
	if len(resp.Patches) > 0 {
		ops, err := json.Marshal(resp.Patches)
		if err != nil {
			t.Fatal(err)
		}
		patch, err := jsonpatch.DecodePatch(ops)
		if err != nil {
			t.Fatal(err)
		}
		if patched, err = patch.Apply(raw); err != nil {
			t.Fatalf("the response's patch does not apply: %v", err)
		}
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(patched, out); err != nil {
		t.Fatal(err)
	}
	return resp, out
}

func sidecars(p *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name == SidecarName {
			out = append(out, c)
		}
	}
	return out
}

func TestInjectorHandle(t *testing.T) {
	tests := []struct {
		name        string
		op          admissionv1.Operation
		pod         *corev1.Pod
		wantAllowed bool
		wantInject  bool
		wantReason  string
	}{
		{name: "A pod labelled for injection gets the sidecar.", op: admissionv1.Create, pod: pod(optIn, nil), wantAllowed: true, wantInject: true},
		{name: "A pod without the label is left untouched.", op: admissionv1.Create, pod: pod(map[string]string{"app": "x"}, nil), wantAllowed: true, wantReason: string(NotOptedIn)},
		{name: "A label value other than true does not opt in.", op: admissionv1.Create, pod: pod(map[string]string{LabelInject: "yes"}, nil), wantAllowed: true, wantReason: string(NotOptedIn)},
		{name: "The opt-out annotation wins over the label.", op: admissionv1.Create, pod: pod(optIn, map[string]string{AnnotationInject: "false"}), wantAllowed: true, wantReason: string(OptedOut)},
		{name: "A pod that has the sidecar already is not injected twice.", op: admissionv1.Create, pod: pod(optIn, nil, func(p *corev1.Pod) {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: SidecarName, Image: "old"})
		}), wantAllowed: true, wantReason: string(AlreadyInjected)},
		{name: "A pod whose volume names collide with the sidecar's is refused with a reason.", op: admissionv1.Create, pod: pod(optIn, nil, func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: PodInfoVolume})
		}), wantAllowed: false, wantReason: PodInfoVolume},
		{name: "Updates are never mutated.", op: admissionv1.Update, pod: pod(optIn, nil), wantAllowed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, got := handle(t, tt.op, tt.pod)
			if resp.Allowed != tt.wantAllowed {
				t.Fatalf("allowed = %v, want %v (%+v)", resp.Allowed, tt.wantAllowed, resp.Result)
			}
			if tt.wantReason != "" && (resp.Result == nil || !strings.Contains(resp.Result.Message, tt.wantReason)) {
				t.Errorf("result %+v does not mention %q", resp.Result, tt.wantReason)
			}
			n := len(sidecars(got))
			switch {
			case tt.wantInject && (n != 1 || len(resp.Patches) == 0):
				t.Fatalf("want exactly one sidecar through a patch, got %d sidecars and %d patch operations", n, len(resp.Patches))
			case !tt.wantInject && len(resp.Patches) != 0:
				t.Fatalf("want no patch, got %v", resp.Patches)
			}
		})
	}
}

func TestInjectedSidecar(t *testing.T) {
	_, got := handle(t, admissionv1.Create, pod(optIn, nil))
	if got.Spec.InitContainers[0].Name != "migrate" || got.Spec.InitContainers[len(got.Spec.InitContainers)-1].Name != SidecarName {
		t.Fatalf("init containers %v: want the pod's own first and the sidecar appended", got.Spec.InitContainers)
	}
	if len(got.Spec.Containers) != 1 || got.Spec.Containers[0].Name != "app" {
		t.Fatalf("app containers changed: %v", got.Spec.Containers)
	}
	c := sidecars(got)[0]

	t.Run("It is a native sidecar.", func(t *testing.T) {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("restartPolicy = %v, want Always", c.RestartPolicy)
		}
	})
	t.Run("It runs the sidecar from the configured image with the namespace, the pod's labels and a probe port reachable by the kubelet.", func(t *testing.T) {
		if c.Image != "example.com/gatehouse:v1" || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("image %q pull %q", c.Image, c.ImagePullPolicy)
		}
		if !slices.Equal(c.Command, []string{"/gatehouse-sidecar"}) {
			t.Errorf("command = %q, want the sidecar binary", c.Command)
		}
		want := []string{"--source=kubernetes", "--namespace=$(POD_NAMESPACE)", "--pod-labels-file=/etc/podinfo/labels",
			"--health-probe-bind-address=:9004", "--metrics-bind-address=127.0.0.1:9003", "--zap-log-level=debug", "--drain-delay=5s"}
		if !slices.Equal(c.Args, want) {
			t.Errorf("args = %q, want %q", c.Args, want)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				env[e.Name] = e.ValueFrom.FieldRef.FieldPath
			}
		}
		if env["POD_NAMESPACE"] != "metadata.namespace" || env["POD_NAME"] != "metadata.name" {
			t.Errorf("env = %v", env)
		}
	})
	t.Run("Its probes hit /healthz and /readyz on the health port.", func(t *testing.T) {
		for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 9004 {
				t.Errorf("%s probe = %+v", name, p)
			}
		}
		if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("readiness %s liveness %s", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
		}
	})
	t.Run("It is hardened: non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp.", func(t *testing.T) {
		sc := c.SecurityContext
		if sc == nil || !*sc.RunAsNonRoot || *sc.RunAsUser != 65532 || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
			*sc.Privileged || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
			sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Fatalf("securityContext = %+v", sc)
		}
	})
	t.Run("It gets the configured resources.", func(t *testing.T) {
		if c.Resources.Requests.Cpu().String() != "50m" || c.Resources.Limits.Memory().String() != "128Mi" {
			t.Fatalf("resources = %+v", c.Resources)
		}
	})
	t.Run("It mounts the downward-API labels and its own ServiceAccount token; the app's volumes stay.", func(t *testing.T) {
		vols := map[string]corev1.Volume{}
		for _, v := range got.Spec.Volumes {
			vols[v.Name] = v
		}
		if _, ok := vols["data"]; !ok {
			t.Error("the pod's own volume is gone")
		}
		labels := vols[PodInfoVolume].DownwardAPI
		if labels == nil || len(labels.Items) != 1 || labels.Items[0].Path != "labels" || labels.Items[0].FieldRef.FieldPath != "metadata.labels" {
			t.Errorf("podinfo volume = %+v", vols[PodInfoVolume])
		}
		token := vols[TokenVolume].Projected
		if token == nil || token.Sources[0].ServiceAccountToken == nil || token.Sources[1].ConfigMap.Name != "kube-root-ca.crt" {
			t.Errorf("token volume = %+v", vols[TokenVolume])
		}
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			if !m.ReadOnly {
				t.Errorf("mount %s is writable", m.Name)
			}
			mounts[m.Name] = m.MountPath
		}
		if mounts[PodInfoVolume] != "/etc/podinfo" || mounts[TokenVolume] != "/var/run/secrets/kubernetes.io/serviceaccount" {
			t.Errorf("mounts = %v", mounts)
		}
		for _, app := range got.Spec.Containers {
			if len(app.VolumeMounts) != 0 {
				t.Errorf("the app container %s got mounts %v", app.Name, app.VolumeMounts)
			}
		}
	})
}

func TestMutateNamesTheDefaultServiceAccountWhenNoneIsSet(t *testing.T) {
	tests := []struct {
		name, sa, want string
	}{
		{name: "An unnamed ServiceAccount becomes default, as the API server's admission would make it.", want: "default"},
		{name: "A named ServiceAccount is kept.", sa: "checkout", want: "checkout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod(optIn, nil, func(p *corev1.Pod) { p.Spec.ServiceAccountName = tt.sa })
			if out, err := testConfig().Mutate(p, nil); out != Injected || err != nil {
				t.Fatalf("%v %v", out, err)
			}
			if p.Spec.ServiceAccountName != tt.want {
				t.Fatalf("serviceAccountName = %q, want %q", p.Spec.ServiceAccountName, tt.want)
			}
		})
	}
}

func TestMutateIsIdempotent(t *testing.T) {
	c := testConfig()
	p := pod(optIn, nil)
	if out, err := c.Mutate(p, nil); out != Injected || err != nil {
		t.Fatalf("first injection: %v, %v", out, err)
	}
	once := p.DeepCopy()
	if out, err := c.Mutate(p, nil); out != AlreadyInjected || err != nil {
		t.Fatalf("second injection: %v, %v", out, err)
	}
	if len(p.Spec.InitContainers) != len(once.Spec.InitContainers) || len(p.Spec.Volumes) != len(once.Spec.Volumes) {
		t.Fatal("a second injection changed the pod")
	}
}

func TestLoadInjectionConfig(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		wantErr string
		check   func(*testing.T, *InjectionConfig)
	}{
		{name: "The chart's file loads, with defaults filled in.", file: "image: \"x:1\"\nresources:\n  limits:\n    memory: 64Mi\n", check: func(t *testing.T, c *InjectionConfig) {
			if c.HealthProbePort != DefaultHealthProbePort || c.ImagePullPolicy != corev1.PullIfNotPresent || c.Resources.Limits.Memory().String() != "64Mi" ||
				c.MetricsBindAddress != "127.0.0.1:9003" {
				t.Fatalf("got %+v", c)
			}
		}},
		{name: "An unknown key is an error.", file: "image: x\nimagePullPolcy: Always\n", wantErr: "imagePullPolcy"},
		{name: "A missing image is an error.", file: "logLevel: info\n", wantErr: "image is required"},
		{name: "An unknown pull policy is an error.", file: "image: x\nimagePullPolicy: Sometimes\n", wantErr: "Sometimes"},
		{name: "A port out of range is an error.", file: "image: x\nhealthProbePort: 70000\n", wantErr: "70000"},
		{name: "Metrics on the pod IP are kept as asked.", file: "image: x\nmetricsBindAddress: \":9003\"\n", check: func(t *testing.T, c *InjectionConfig) {
			if c.MetricsBindAddress != ":9003" {
				t.Fatalf("metricsBindAddress = %q, want :9003", c.MetricsBindAddress)
			}
		}},
		{name: "A metrics address without a port is an error.", file: "image: x\nmetricsBindAddress: 0.0.0.0\n", wantErr: "metricsBindAddress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := loadConfigText(t, tt.file, tt.wantErr)
			if c == nil {
				return
			}
			tt.check(t, c)
		})
	}
}

// loadConfigText loads file as an injection configuration. With wantErr
// it requires an error mentioning it and returns nil; otherwise it
// requires none.
func loadConfigText(t *testing.T, file, wantErr string) *InjectionConfig {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadInjectionConfig(p)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("want an error mentioning %q, got %v", wantErr, err)
		}
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}
