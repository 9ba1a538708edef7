package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"gatehouse.dev/gatehouse/internal/kubeconfig"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/remotejwks"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/source"
)

// Default addresses of the listeners that are not ext_authz.
const (
	// DefaultMetricsAddr keeps /metrics on loopback: who may scrape the
	// pod IP is the chart's (and the operator's webhook's) explicit choice.
	DefaultMetricsAddr = "127.0.0.1:9003"
	// DefaultHealthProbeAddr listens on the pod's interfaces: the kubelet
	// probes through the pod IP, and a pod's network namespace has no
	// other interface than loopback to keep it off. /healthz and /readyz
	// say only "up" and "ready".
	DefaultHealthProbeAddr = ":9004"
)

// serviceAccountNamespaceFile holds the pod's namespace inside a pod.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Flags are the sidecar's command-line flags. BindFlags registers them;
// Config turns them into a Config.
type Flags struct {
	namespace       string
	podLabelsFile   string
	podLabels       string
	source          string
	configDir       string
	pollInterval    time.Duration
	kubeconfig      string
	xdsTarget       string
	xdsCAFile       string
	xdsServerName   string
	xdsTokenFile    string
	grpcAddr        string
	httpAddr        string
	metricsAddr     string
	probeAddr       string
	headerPrefix    string
	stripCredential bool
	httpPathPrefix  string
	trustForwarded  bool
	maxTokenBytes   int
	maxHeaders      int
	cacheSize       int
	decisionLogRate float64
	remoteIssuers   bool
	drainDelay      time.Duration
	shutdownTimeout time.Duration
	gcPercent       int
	memoryLimit     string

	// Zap are the logging flags (--zap-log-level and friends).
	Zap zap.Options
}

// BindFlags registers the sidecar's flags.
func (o *Flags) BindFlags(f *pflag.FlagSet) {
	f.StringVar(&o.namespace, "namespace", "", "Namespace whose records and AuthPolicies apply (default: $POD_NAMESPACE, then the service account's namespace).")
	f.StringVar(&o.podLabelsFile, "pod-labels-file", "", "Downward-API file of the pod's labels (key=\"value\" lines), matched against AuthPolicy selectors.")
	f.StringVar(&o.podLabels, "pod-labels", "", "The pod's labels as k=v,k2=v2 (added to --pod-labels-file).")
	f.StringVar(&o.source, "source", "kubernetes", "Where the state comes from: kubernetes (informers), files (--config-dir) or xds (the operator pushes it, --xds-address).")
	f.StringVar(&o.xdsTarget, "xds-address", "", "With --source=xds: gRPC target of the operator's xDS Service, e.g. dns:///gatehouse-xds.gatehouse.svc:15010.")
	f.StringVar(&o.xdsCAFile, "xds-ca-file", "", "With --source=xds: PEM bundle of the CAs that sign the operator's xDS certificate.")
	f.StringVar(&o.xdsServerName, "xds-server-name", "", "With --source=xds: name the operator's certificate must hold (default: the host of --xds-address).")
	f.StringVar(&o.xdsTokenFile, "xds-token-file", DefaultXDSTokenFile, "With --source=xds: projected ServiceAccount token for the gatehouse-xds audience, re-read on every connection.")
	f.StringVar(&o.configDir, "config-dir", "", "With --source=files: directory of YAML APIKeys, SigningKeys, ConfigMaps and AuthPolicies, reloaded on change.")
	f.DurationVar(&o.pollInterval, "config-poll-interval", source.DefaultPollInterval, "With --source=files: how often the directory is checked for changes.")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubeconfig file (default: in-cluster configuration, then $KUBECONFIG).")
	f.StringVar(&o.grpcAddr, "grpc-bind-address", "127.0.0.1:9001", "Address of the gRPC ext_authz and gRPC health server.")
	f.StringVar(&o.httpAddr, "http-bind-address", "127.0.0.1:9002", "Address of the HTTP ext_authz server; empty disables it.")
	f.StringVar(&o.metricsAddr, "metrics-bind-address", DefaultMetricsAddr, "Address of the Prometheus /metrics endpoint (\":9003\" to let Prometheus scrape the pod IP); empty disables it.")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", DefaultHealthProbeAddr, "Address of /healthz and /readyz, probed by the kubelet through the pod IP; empty disables it.")
	f.StringVar(&o.headerPrefix, "identity-header-prefix", server.DefaultHeaderPrefix, "Prefix of the identity headers sent upstream (subject, scopes, credential, key-id, issuer, token-id).")
	f.BoolVar(&o.stripCredential, "strip-credential", true, "Remove the credential header (Authorization or the API key header) from allowed requests.")
	f.StringVar(&o.httpPathPrefix, "http-path-prefix", "", "Prefix removed from HTTP check paths (Envoy http_service path_prefix).")
	f.BoolVar(&o.trustForwarded, "http-trust-forwarded-headers", false, "Take the original method, host and URI of HTTP checks from X-Forwarded-Method/-Host/-Uri (nginx auth_request, Traefik forwardAuth). Only when the proxy overwrites them.")
	f.IntVar(&o.maxTokenBytes, "max-token-bytes", authz.DefaultMaxTokenBytes, "Largest bearer token accepted.")
	f.IntVar(&o.maxHeaders, "max-request-headers", authz.DefaultMaxHeaders, "Most request header fields accepted.")
	f.IntVar(&o.cacheSize, "token-cache-size", authz.DefaultCacheSize, "Verified tokens kept in memory; 0 or less disables the cache.")
	f.Float64Var(&o.decisionLogRate, "decision-logs-per-second", 10, "Sampled decision logs per second; 0 disables them.")
	f.BoolVar(&o.remoteIssuers, "remote-issuers", true, "Fetch keys of AuthPolicy issuers with discovery or jwksURI over HTTPS.")
	f.DurationVar(&o.drainDelay, "drain-delay", 2*time.Second, "On SIGTERM, report not ready for this long before stopping.")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout, "Longest graceful stop.")
	f.IntVar(&o.gcPercent, "gc-percent", 0, "GOGC once the first state is loaded; 0: $GOGC if set, else 50; negative: no garbage collection.")
	f.StringVar(&o.memoryLimit, "memory-limit", "auto", "Soft memory limit of the Go runtime, as a quantity (96Mi); auto: $GOMEMLIMIT if set, else 75% of the container's memory limit; none: no limit.")
	zfs := flag.NewFlagSet("zap", flag.ContinueOnError)
	o.Zap.BindFlags(zfs)
	f.AddGoFlagSet(zfs)
}

// Config resolves the flags (namespace, pod labels, the state source) into
// a Config that logs to log. The caller calls release once the sidecar has
// stopped: it stops the remote issuers' fetchers.
func (o *Flags) Config(log logr.Logger) (cfg Config, release func(), err error) {
	ns, err := sidecarNamespace(o.namespace)
	if err != nil {
		return Config{}, nil, err
	}
	labels, err := podLabels(o.podLabelsFile, o.podLabels)
	if err != nil {
		return Config{}, nil, err
	}
	cfg = Config{
		Namespace:   ns,
		PodLabels:   labels,
		GRPCAddr:    o.grpcAddr,
		HTTPAddr:    disabledIfZero(o.httpAddr),
		HealthAddr:  disabledIfZero(o.probeAddr),
		MetricsAddr: disabledIfZero(o.metricsAddr),
		HTTP:        server.HTTPOptions{PathPrefix: o.httpPathPrefix, TrustForwardedHeaders: o.trustForwarded},
		Core: server.Options{
			Headers:               server.HeaderNamesWithPrefix(o.headerPrefix),
			StripCredential:       o.stripCredential,
			DecisionLogsPerSecond: o.decisionLogRate,
		},
		Engine:          authz.Options{MaxTokenBytes: o.maxTokenBytes, MaxHeaders: o.maxHeaders, CacheSize: o.cacheSize},
		DrainDelay:      o.drainDelay,
		ShutdownTimeout: o.shutdownTimeout,
		GCPercent:       o.gcPercent,
		Log:             log,
	}
	if cfg.MemoryLimit, err = ParseMemoryLimit(o.memoryLimit); err != nil {
		return Config{}, nil, err
	}
	if o.cacheSize <= 0 {
		cfg.Engine.CacheSize = -1
	}
	if cfg.Source, err = o.stateSource(ns, log); err != nil {
		return Config{}, nil, err
	}
	release = func() {}
	if o.remoteIssuers {
		remote := remotejwks.NewRegistry(remotejwks.Options{Log: log.WithName("remotejwks")})
		cfg.Remote, release = remote, remote.Close
	}
	return cfg, release, nil
}

// SourceName is the --source flag's value, for the start-up log line.
func (o *Flags) SourceName() string { return o.source }

func (o *Flags) stateSource(ns string, log logr.Logger) (source.Source, error) {
	switch o.source {
	case "files":
		if o.configDir == "" {
			return nil, errors.New("--source=files needs --config-dir")
		}
		return &source.Files{Dir: o.configDir, PollInterval: o.pollInterval, Log: log.WithName("files")}, nil
	case "xds":
		return o.xdsSource(ns, log)
	case "kubernetes":
		rc, err := kubeconfig.Load(o.kubeconfig)
		if err != nil {
			return nil, err
		}
		return &source.Kubernetes{Config: rc, Namespace: ns, Log: log.WithName("kubernetes")}, nil
	default:
		return nil, fmt.Errorf("--source must be kubernetes, files or xds, not %q", o.source)
	}
}

// DefaultXDSTokenFile is where the injected sidecar's projected token for
// the xDS audience is mounted.
const DefaultXDSTokenFile = "/var/run/secrets/gatehouse/xds/token"

// xdsSource builds the xDS source: TLS trusting --xds-ca-file alone.
func (o *Flags) xdsSource(ns string, log logr.Logger) (source.Source, error) {
	if o.xdsTarget == "" || o.xdsCAFile == "" {
		return nil, errors.New("--source=xds needs --xds-address and --xds-ca-file")
	}
	pem, err := os.ReadFile(o.xdsCAFile)
	if err != nil {
		return nil, fmt.Errorf("reading --xds-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--xds-ca-file %s holds no PEM certificate", o.xdsCAFile)
	}
	name := o.xdsServerName
	if name == "" {
		// dns:///host:port, host:port: the host names the certificate.
		target := o.xdsTarget[strings.LastIndex(o.xdsTarget, "/")+1:]
		if name, _, err = net.SplitHostPort(target); err != nil {
			return nil, fmt.Errorf("--xds-address %q: %w (or set --xds-server-name)", o.xdsTarget, err)
		}
	}
	return &source.XDS{
		Target:    o.xdsTarget,
		TLS:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name},
		TokenFile: o.xdsTokenFile,
		Namespace: ns,
		Log:       log.WithName("xds"),
	}, nil
}

func disabledIfZero(addr string) string {
	if addr == "0" {
		return ""
	}
	return addr
}

func sidecarNamespace(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns, nil
	}
	if data, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
		if ns := strings.TrimSpace(string(data)); ns != "" {
			return ns, nil
		}
	}
	return "", errors.New("no namespace: set --namespace or $POD_NAMESPACE")
}

func podLabels(file, inline string) (map[string]string, error) {
	out := map[string]string{}
	if file != "" {
		data, err := os.ReadFile(file) //nolint:gosec // an operator-chosen path
		if err != nil {
			return nil, fmt.Errorf("reading --pod-labels-file: %w", err)
		}
		fromFile, err := ParseLabelsFile(data)
		if err != nil {
			return nil, fmt.Errorf("parsing --pod-labels-file %s: %w", file, err)
		}
		maps.Copy(out, fromFile)
	}
	fromFlag, err := ParseLabels(inline)
	if err != nil {
		return nil, fmt.Errorf("parsing --pod-labels: %w", err)
	}
	maps.Copy(out, fromFlag)
	return out, nil
}

// ParseMemoryLimit reads the --memory-limit flag into Config.MemoryLimit:
// "auto" (or empty) is 0, "none" is -1, anything else a positive quantity
// such as 96Mi or 100M.
func ParseMemoryLimit(v string) (int64, error) {
	switch v {
	case "", "auto":
		return 0, nil
	case "none":
		return -1, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit must be auto, none or a quantity such as 96Mi: %w", err)
	}
	n, ok := q.AsInt64()
	if !ok || n <= 0 {
		return 0, fmt.Errorf("--memory-limit must be a positive number of bytes, not %q", v)
	}
	return n, nil
}
