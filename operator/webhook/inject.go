package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

const (
	// LabelInject opts a pod in (api/v1.LabelInject).
	LabelInject = gatehousev1.LabelInject
	// AnnotationInject set to "false" opts a pod out again
	// (api/v1.AnnotationInject).
	AnnotationInject = gatehousev1.AnnotationInject

	// SidecarName is the name of the injected container; a pod that has a
	// container of that name is never injected again.
	SidecarName = "gatehouse-sidecar"
	// SidecarCommand is the sidecar's binary in the Gatehouse image
	// (cmd/gatehouse-sidecar; the Dockerfile copies it there).
	SidecarCommand = "/gatehouse-sidecar"
	// PodInfoVolume holds the pod's labels from the downward API.
	PodInfoVolume = "gatehouse-podinfo"
	// TokenVolume holds the sidecar's ServiceAccount token for the API
	// server (the kubernetes source).
	TokenVolume = "gatehouse-kube-api-access"
	// XDSTokenVolume holds the sidecar's ServiceAccount token for the
	// operator's xDS server (the xds source), bound to its audience.
	XDSTokenVolume = "gatehouse-xds-token"
	// AnnotationXDSCABundle carries the xDS CA bundle to the sidecar
	// (api/v1.AnnotationXDSCABundle).
	AnnotationXDSCABundle = gatehousev1.AnnotationXDSCABundle
	// AnnotationSource chooses a pod's sidecar source
	// (api/v1.AnnotationSidecarSource).
	AnnotationSource = gatehousev1.AnnotationSidecarSource

	podInfoDir  = "/etc/podinfo"
	tokenDir    = "/var/run/secrets/kubernetes.io/serviceaccount"
	xdsTokenDir = "/var/run/secrets/gatehouse/xds"
	// xdsCAFile is the downward-API file of AnnotationXDSCABundle, in the
	// pod-info volume.
	xdsCAFile   = "xds-ca.crt"
	nonRootUser = 65532

	// DefaultHealthProbePort is where the sidecar serves /healthz and
	// /readyz by default (its --health-probe-bind-address).
	DefaultHealthProbePort = 9004
	// DefaultMetricsBindAddress keeps the sidecar's /metrics on loopback:
	// only a cluster that scrapes sidecars asks for the pod IP (":9003").
	DefaultMetricsBindAddress = "127.0.0.1:9003"
)

// InjectionConfig is what the webhook injects, read from the file the chart
// renders from its sidecar.* values.
type InjectionConfig struct {
	// Image of the sidecar: the Gatehouse image.
	Image string `json:"image"`
	// ImagePullPolicy of the sidecar (default IfNotPresent).
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// HealthProbePort is the sidecar's /healthz and /readyz port, bound on
	// every interface so that the kubelet can probe it through the pod IP.
	// The ext_authz ports stay on 127.0.0.1. Default DefaultHealthProbePort.
	HealthProbePort int32 `json:"healthProbePort,omitempty"`
	// MetricsBindAddress is the sidecar's --metrics-bind-address: ":9003"
	// lets Prometheus scrape it through the pod IP, "0" turns metrics off.
	// Default DefaultMetricsBindAddress (loopback, not scrapable).
	MetricsBindAddress string `json:"metricsBindAddress,omitempty"`
	// LogLevel of the sidecar (zap): debug, info, error or an integer.
	LogLevel string `json:"logLevel,omitempty"`
	// Resources of the sidecar container.
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// ExtraArgs are appended to the sidecar's arguments.
	ExtraArgs []string `json:"extraArgs,omitempty"`
	// XDS, when set, makes injected sidecars take their state from the
	// operator's xDS server (--source=xds) instead of the API server.
	XDS *XDSInjection `json:"xds,omitempty"`
}

// XDSInjection says how an injected sidecar reaches the operator's xDS
// server. The CA bundle is not here: the injector takes the operator's
// current one at admission (Injector.XDSTrust).
type XDSInjection struct {
	// Address is the sidecar's --xds-address, the gRPC target of the xDS
	// Service: dns:///<service>.<namespace>.svc:<port> of a headless
	// Service, so that the resolver returns every ready replica.
	Address string `json:"address"`
	// ServerName is the name the operator's certificate must hold
	// (--xds-server-name), <service>.<namespace>.svc.
	ServerName string `json:"serverName"`
	// Audience of the projected token: the operator's --xds-audience.
	// Default DefaultXDSAudience.
	Audience string `json:"audience,omitempty"`
	// TokenExpirationSeconds is the projected token's lifetime; the
	// kubelet renews it at 80%. Default DefaultXDSTokenExpirationSeconds,
	// at least 600 (the API server's minimum).
	TokenExpirationSeconds int64 `json:"tokenExpirationSeconds,omitempty"`
}

// Defaults of XDSInjection.
const (
	// DefaultXDSAudience is the operator's default --xds-audience.
	DefaultXDSAudience = "gatehouse-xds"
	// DefaultXDSTokenExpirationSeconds is an hour: a stolen token is
	// short-lived, and the xDS server checks it when a stream opens (at
	// least every 30 minutes, its MaxConnectionAge).
	DefaultXDSTokenExpirationSeconds = 3600
)

func (x *XDSInjection) validate() error {
	if x.Address == "" || x.ServerName == "" {
		return errors.New("xds.address and xds.serverName are required")
	}
	if x.Audience == "" {
		x.Audience = DefaultXDSAudience
	}
	if x.TokenExpirationSeconds == 0 {
		x.TokenExpirationSeconds = DefaultXDSTokenExpirationSeconds
	}
	if x.TokenExpirationSeconds < 600 {
		return fmt.Errorf("xds.tokenExpirationSeconds %d is below 600, the API server's minimum", x.TokenExpirationSeconds)
	}
	return nil
}

// LoadInjectionConfig reads and validates an InjectionConfig file. Unknown
// keys are errors, so that a typo in the chart cannot go unnoticed.
func LoadInjectionConfig(path string) (*InjectionConfig, error) {
	data, err := os.ReadFile(path) //nolint:gosec // the path is the operator's own flag.
	if err != nil {
		return nil, fmt.Errorf("reading sidecar injection config: %w", err)
	}
	c := &InjectionConfig{}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("parsing sidecar injection config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("sidecar injection config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks c and fills in defaults.
func (c *InjectionConfig) Validate() error {
	if c.Image == "" {
		return errors.New("image is required")
	}
	if c.HealthProbePort == 0 {
		c.HealthProbePort = DefaultHealthProbePort
	}
	if c.HealthProbePort < 1 || c.HealthProbePort > 65535 {
		return fmt.Errorf("healthProbePort %d is not a port", c.HealthProbePort)
	}
	if c.MetricsBindAddress == "" {
		c.MetricsBindAddress = DefaultMetricsBindAddress
	}
	if c.MetricsBindAddress != "0" {
		if _, port, err := net.SplitHostPort(c.MetricsBindAddress); err != nil || port == "" {
			return fmt.Errorf("metricsBindAddress %q is not host:port or \"0\"", c.MetricsBindAddress)
		}
	}
	if c.XDS != nil {
		if err := c.XDS.validate(); err != nil {
			return err
		}
	}
	switch c.ImagePullPolicy {
	case "":
		c.ImagePullPolicy = corev1.PullIfNotPresent
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("imagePullPolicy %q is not Always, IfNotPresent or Never", c.ImagePullPolicy)
	}
	return nil
}

// Outcome says what Mutate did to a pod, for the admission response and
// the log.
type Outcome string

// Outcomes of Mutate.
const (
	Injected         Outcome = "Injected"
	NotOptedIn       Outcome = "NotOptedIn"
	OptedOut         Outcome = "OptedOut"
	AlreadyInjected  Outcome = "AlreadyInjected"
	ConflictingNames Outcome = "ConflictingNames"
	NoXDSTrust       Outcome = "NoXDSTrust"
	UnknownSource    Outcome = "UnknownSource"
)

// Values of AnnotationSource.
const (
	SourceKubernetes = "kubernetes"
	SourceXDS        = "xds"
)

// Mutate adds the sidecar to pod when it opted in and does not have it yet.
// xdsTrust is the PEM bundle the sidecar must trust for the xDS server;
// it is needed (and used) only when c.XDS is set. Mutate changes pod only
// when it returns Injected; ConflictingNames, UnknownSource and NoXDSTrust
// come with an error saying what is wrong.
func (c *InjectionConfig) Mutate(pod *corev1.Pod, xdsTrust []byte) (Outcome, error) {
	if out, err := leftAlone(pod); out != "" {
		return out, err
	}
	cfg, err := c.forPod(pod)
	if err != nil {
		return UnknownSource, err
	}
	if cfg.XDS != nil {
		// Fail closed: a sidecar without the CA could never connect.
		if len(xdsTrust) == 0 {
			return NoXDSTrust, errors.New("the operator has no xDS CA bundle to give the sidecar yet; retry shortly")
		}
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[AnnotationXDSCABundle] = string(xdsTrust)
	}
	// A projected token needs a named ServiceAccount. The API server's
	// ServiceAccount admission sets "default" before webhooks run; doing the
	// same here keeps the pod valid where that plugin is off.
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = "default"
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, cfg.volumes()...)
	// Appended: the pod's own init containers run first, as before; being
	// a native sidecar, ours then keeps running beside the app containers,
	// which start only after it has started.
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, cfg.container())
	return Injected, nil
}

// leftAlone says why pod gets no sidecar, or "" when it is to be injected.
func leftAlone(pod *corev1.Pod) (Outcome, error) {
	if pod.Labels[LabelInject] != "true" {
		return NotOptedIn, nil
	}
	if v, ok := pod.Annotations[AnnotationInject]; ok && v != "true" {
		return OptedOut, nil
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, ct := range list {
			if ct.Name == SidecarName {
				return AlreadyInjected, nil
			}
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == PodInfoVolume || v.Name == TokenVolume || v.Name == XDSTokenVolume {
			return ConflictingNames, fmt.Errorf("the pod already has a volume named %q, which the Gatehouse sidecar needs", v.Name)
		}
	}
	return "", nil
}

// forPod is the configuration for pod: c, unless the pod's AnnotationSource
// asks for the kubernetes source where c injects xDS sidecars. A pod that
// asks for xDS where the operator serves none, or for a source that does
// not exist, is refused rather than given a sidecar that cannot work.
func (c *InjectionConfig) forPod(pod *corev1.Pod) (*InjectionConfig, error) {
	switch v, ok := pod.Annotations[AnnotationSource]; {
	case !ok:
		return c, nil
	case v == SourceKubernetes:
		k := *c
		k.XDS = nil
		return &k, nil
	case v == SourceXDS && c.XDS != nil:
		return c, nil
	case v == SourceXDS:
		return nil, fmt.Errorf("the pod's annotation %s asks for the xds source, which this installation does not serve (the chart's xds.enabled)", AnnotationSource)
	default:
		return nil, fmt.Errorf("the pod's annotation %s is %q; want %q or %q", AnnotationSource, v, SourceKubernetes, SourceXDS)
	}
}

func (c *InjectionConfig) container() corev1.Container {
	health := func(path string) *corev1.ProbeHandler {
		return &corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(c.HealthProbePort)}}
	}
	args := append(c.sourceArgs(),
		"--namespace=$(POD_NAMESPACE)",
		"--pod-labels-file="+podInfoDir+"/labels",
		"--health-probe-bind-address=:"+strconv.Itoa(int(c.HealthProbePort)),
		"--metrics-bind-address="+c.MetricsBindAddress,
	)
	if c.LogLevel != "" {
		args = append(args, "--zap-log-level="+c.LogLevel)
	}
	args = append(args, c.ExtraArgs...)
	return corev1.Container{
		Name:            SidecarName,
		Image:           c.Image,
		ImagePullPolicy: c.ImagePullPolicy,
		// The image's entrypoint is the operator; the sidecar is the
		// binary beside it that links none of the operator's code.
		Command: []string{SidecarCommand},
		Args:    args,
		// Always makes this init container a native sidecar: it starts
		// before the app containers, runs beside them, and stops after
		// them (also in Jobs, which it does not keep from completing).
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Env: []corev1.EnvVar{
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		},
		Resources: *c.Resources.DeepCopy(),
		// The app containers start once the sidecar listens, so Envoy's
		// first checks find it.
		StartupProbe:  &corev1.Probe{ProbeHandler: *health("/healthz"), PeriodSeconds: 1, FailureThreshold: 30, TimeoutSeconds: 1},
		LivenessProbe: &corev1.Probe{ProbeHandler: *health("/healthz"), PeriodSeconds: 10, FailureThreshold: 3, TimeoutSeconds: 1},
		// Not ready until the sidecar has loaded its namespace's state; it
		// denies everything until then.
		ReadinessProbe: &corev1.Probe{ProbeHandler: *health("/readyz"), PeriodSeconds: 5, FailureThreshold: 3, TimeoutSeconds: 1},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](nonRootUser),
			RunAsGroup:               ptr.To[int64](nonRootUser),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: PodInfoVolume, MountPath: podInfoDir, ReadOnly: true},
			c.tokenMount(),
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// sourceArgs say where the sidecar takes its state from.
func (c *InjectionConfig) sourceArgs() []string {
	if c.XDS == nil {
		return []string{"--source=kubernetes"}
	}
	return []string{
		"--source=xds",
		"--xds-address=" + c.XDS.Address,
		"--xds-server-name=" + c.XDS.ServerName,
		"--xds-ca-file=" + podInfoDir + "/" + xdsCAFile,
		"--xds-token-file=" + xdsTokenDir + "/token",
	}
}

func (c *InjectionConfig) tokenMount() corev1.VolumeMount {
	if c.XDS != nil {
		return corev1.VolumeMount{Name: XDSTokenVolume, MountPath: xdsTokenDir, ReadOnly: true}
	}
	return corev1.VolumeMount{Name: TokenVolume, MountPath: tokenDir, ReadOnly: true}
}

// volumes are the sidecar's own: the pod's labels (and, for xDS, the CA
// bundle from the pod's annotation), and a ServiceAccount token. The token
// is projected here because the API server's ServiceAccount admission,
// which mounts tokens into containers, ran before this webhook and never
// sees the sidecar; and because the sidecar needs it even when the app
// opted out of token automounting. A sidecar on xDS gets a token for the
// xDS audience only: it has no use for the API server.
func (c *InjectionConfig) volumes() []corev1.Volume {
	podInfo := []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}
	if c.XDS != nil {
		podInfo = append(podInfo, corev1.DownwardAPIVolumeFile{
			Path: xdsCAFile, FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + AnnotationXDSCABundle + "']"},
		})
	}
	return []corev1.Volume{
		{Name: PodInfoVolume, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: podInfo}}},
		c.tokenVolume(),
	}
}

func (c *InjectionConfig) tokenVolume() corev1.Volume {
	if c.XDS != nil {
		return corev1.Volume{Name: XDSTokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: c.XDS.Audience, ExpirationSeconds: ptr.To(c.XDS.TokenExpirationSeconds), Path: "token",
			}}},
		}}}
	}
	return corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
			}}},
		},
	}}}
}

// Injector is the admission handler of pod creations.
type Injector struct {
	Config *InjectionConfig
	// XDSTrust returns the CA bundle of the operator's xDS certificate,
	// current at the time of the call; needed when Config.XDS is set.
	XDSTrust func() ([]byte, error)
	Decoder  admission.Decoder
	Log      logr.Logger
}

var _ admission.Handler = (*Injector)(nil)

// Handle injects the sidecar into an opted-in pod. It never fails open on
// its own: a pod it cannot decode, or whose names conflict, is refused.
func (i *Injector) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create || req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return admission.Allowed("only pod creations are mutated")
	}
	pod := &corev1.Pod{}
	if err := i.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding pod: %w", err))
	}
	log := i.Log.WithValues("namespace", req.Namespace, "name", pod.Name, "generateName", pod.GenerateName)
	trust, err := i.xdsTrust()
	if err != nil {
		log.Error(err, "reading the xDS CA bundle")
	}
	outcome, err := i.Config.Mutate(pod, trust)
	if err != nil {
		log.Info("refusing pod", "outcome", outcome, "reason", err.Error())
		return admission.Denied(err.Error())
	}
	if outcome != Injected {
		log.V(1).Info("pod left as is", "outcome", outcome)
		return admission.Allowed(string(outcome))
	}
	mutated, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding pod: %w", err))
	}
	log.V(1).Info("injected the sidecar")
	return admission.PatchResponseFromRaw(req.Object.Raw, mutated)
}

// xdsTrust is the CA bundle for an injected sidecar on xDS: none when
// injected sidecars do not use xDS.
func (i *Injector) xdsTrust() ([]byte, error) {
	if i.Config.XDS == nil {
		return nil, nil
	}
	if i.XDSTrust == nil {
		return nil, errors.New("no source of the xDS CA bundle")
	}
	return i.XDSTrust()
}
