package webhook

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// InjectPath is the URL path of the sidecar-injection webhook.
const InjectPath = "/inject-sidecar"

// Options configure the webhook. BindFlags binds them to the operator's
// flags; the chart sets every one of them.
type Options struct {
	// BindAddress is host:port of the HTTPS server; "0" or "" disables the
	// webhook and the certificate management.
	BindAddress string
	// CertDir, when set, holds tls.crt and tls.key issued by someone else
	// (cert-manager), reloaded when they change; the operator then manages
	// no certificate.
	CertDir string
	// Namespace of the webhook Service and the certificate Secret.
	Namespace string
	// SecretName is the Secret holding the operator's own certificates.
	SecretName string
	// ServiceName is the webhook Service: the certificate's DNS names.
	ServiceName string
	// ClusterDomain completes the Service's fully qualified name.
	ClusterDomain string
	// IPAddresses are extra IP SANs, for a webhook reached by IP (tests
	// use 127.0.0.1 with a url client config).
	IPAddresses []net.IP
	// ExtraServiceNames are more Services of the operator, in Namespace,
	// whose names the serving certificate holds: the xDS server presents
	// the same certificate, so sidecars trust one CA.
	ExtraServiceNames []string
	// Store, when set, receives the operator's own serving certificate,
	// for other servers of the operator to present (the xDS server).
	Store *CertStore
	// ConfigurationName is the MutatingWebhookConfiguration whose caBundle
	// the operator writes.
	ConfigurationName string
	// CAValidity and CertValidity are the certificates' lifetimes.
	CAValidity, CertValidity time.Duration
	// InjectionConfigPath is the file of the InjectionConfig; Injection,
	// when set, is used instead.
	InjectionConfigPath string
	Injection           *InjectionConfig
	// Resync bounds the time between two certificate checks (default 10
	// minutes).
	Resync time.Duration
	// Clock is a seam for tests (default: the real clock).
	Clock clock.Clock
}

// BindFlags registers the webhook's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.BindAddress, "webhook-bind-address", "0", "Address of the sidecar-injection webhook's HTTPS server; \"0\" disables the webhook.")
	fs.StringVar(&o.CertDir, "webhook-cert-dir", "", "Directory with tls.crt and tls.key from cert-manager; empty: the operator issues and rotates its own certificates.")
	fs.StringVar(&o.Namespace, "webhook-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the webhook Service and certificate Secret (default: $POD_NAMESPACE).")
	fs.StringVar(&o.SecretName, "webhook-cert-secret", "gatehouse-webhook-tls", "Secret holding the operator's own webhook CA and serving certificate.")
	fs.StringVar(&o.ServiceName, "webhook-service-name", "gatehouse-webhook", "Service through which the API server calls the webhook; names the certificate.")
	fs.StringVar(&o.ClusterDomain, "webhook-cluster-domain", "cluster.local", "Cluster DNS domain, for the certificate's fully qualified Service name.")
	fs.StringVar(&o.ConfigurationName, "webhook-configuration-name", "gatehouse-sidecar-injector", "MutatingWebhookConfiguration whose caBundle the operator writes.")
	fs.DurationVar(&o.CAValidity, "webhook-ca-validity", 5*365*24*time.Hour, "Lifetime of the webhook CA; replaced when a third is left.")
	fs.DurationVar(&o.CertValidity, "webhook-cert-validity", 365*24*time.Hour, "Lifetime of the webhook serving certificate; reissued when a third is left.")
	fs.StringVar(&o.InjectionConfigPath, "sidecar-injection-config", "", "File describing the injected sidecar (image, resources, arguments).")
}

func (o *Options) enabled() bool { return o.BindAddress != "" && o.BindAddress != "0" }

// dnsNames are the names clients may use for the Services: the API
// server for the webhook's, sidecars for the extra ones.
func (o *Options) dnsNames() []string {
	var names []string
	for _, svc := range append([]string{o.ServiceName}, o.ExtraServiceNames...) {
		names = append(names,
			svc,
			svc+"."+o.Namespace,
			svc+"."+o.Namespace+".svc",
			svc+"."+o.Namespace+".svc."+o.ClusterDomain,
		)
	}
	return names
}

// Enabled reports whether the webhook runs.
func (o *Options) Enabled() bool { return o.enabled() }

func (o *Options) complete() error {
	if o.Injection == nil {
		if o.InjectionConfigPath == "" {
			return errors.New("--sidecar-injection-config is required when the webhook is enabled")
		}
		c, err := LoadInjectionConfig(o.InjectionConfigPath)
		if err != nil {
			return err
		}
		o.Injection = c
	} else if err := o.Injection.Validate(); err != nil {
		return fmt.Errorf("sidecar injection config: %w", err)
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Minute
	}
	if o.CertDir != "" {
		return nil
	}
	switch {
	case o.Namespace == "":
		return errors.New("--webhook-namespace (or $POD_NAMESPACE) is required for the operator's own certificates")
	case o.SecretName == "" || o.ServiceName == "" || o.ConfigurationName == "":
		return errors.New("--webhook-cert-secret, --webhook-service-name and --webhook-configuration-name are required")
	case o.CertValidity < time.Hour || o.CAValidity < 3*o.CertValidity/2:
		// The CA is replaced when a third of its life is left; a serving
		// certificate longer than that would be cut short at every turn.
		return fmt.Errorf("--webhook-cert-validity %s must be at least 1h and --webhook-ca-validity %s at least 1.5 times it", o.CertValidity, o.CAValidity)
	}
	return nil
}

// Setup adds the webhook server, serving the sidecar injector, to mgr, and
// unless certificates come from CertDir, the certificate manager (leader
// only) and the certificate watcher (every replica). It also registers
// readiness checks: a replica is ready once its webhook serves TLS.
func Setup(mgr ctrl.Manager, o Options) error {
	if !o.enabled() {
		return nil
	}
	if err := o.complete(); err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(o.BindAddress)
	if err != nil {
		return fmt.Errorf("--webhook-bind-address %q: %w", o.BindAddress, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("--webhook-bind-address %q: %w", o.BindAddress, err)
	}
	log := mgr.GetLogger().WithName("webhook")

	srvOpts := ctrlwebhook.Options{
		Host: host,
		Port: port,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS12
			// HTTP/1.1 only: HTTP/2 Rapid Reset (CVE-2023-44487) and the
			// API server needs nothing more.
			c.NextProtos = []string{"http/1.1"}
		}},
	}
	if o.CertDir != "" {
		srvOpts.CertDir = o.CertDir
	} else {
		store := o.Store
		if store == nil {
			store = &CertStore{}
			o.Store = store
		}
		srvOpts.TLSOpts = append(srvOpts.TLSOpts, func(c *tls.Config) { c.GetCertificate = store.GetCertificate })
		cs, err := kubernetes.NewForConfig(mgr.GetConfig())
		if err != nil {
			return fmt.Errorf("creating clientset: %w", err)
		}
		if err := mgr.Add(&CertWatcher{Clientset: cs, Namespace: o.Namespace, Name: o.SecretName, Store: store, Log: log.WithName("certwatcher")}); err != nil {
			return fmt.Errorf("adding certificate watcher: %w", err)
		}
		if err := mgr.Add(&CertManager{
			Client:            mgr.GetClient(),
			Reader:            mgr.GetAPIReader(),
			Namespace:         o.Namespace,
			SecretName:        o.SecretName,
			ConfigurationName: o.ConfigurationName,
			Spec:              certSpec{DNSNames: o.dnsNames(), IPAddresses: o.IPAddresses, CAValidity: o.CAValidity, CertValidity: o.CertValidity},
			Store:             store,
			Resync:            o.Resync,
			Clock:             o.Clock,
			Log:               log.WithName("certmanager"),
		}); err != nil {
			return fmt.Errorf("adding certificate manager: %w", err)
		}
		if err := mgr.AddReadyzCheck("webhook-certificate", store.Checker); err != nil {
			return fmt.Errorf("adding readiness check: %w", err)
		}
	}
	srv := ctrlwebhook.NewServer(srvOpts)
	srv.Register(InjectPath, &ctrlwebhook.Admission{Handler: &Injector{
		Config:   o.Injection,
		XDSTrust: trustSource(o),
		Decoder:  admission.NewDecoder(mgr.GetScheme()),
		Log:      log.WithName("injector"),
	}})
	if err := mgr.Add(srv); err != nil {
		return fmt.Errorf("adding webhook server: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}
	return nil
}

// trustSource is where injected sidecars' xDS CA bundle comes from: the
// ca.crt cert-manager writes beside the certificate, read at every
// injection so that a renewed one is given out at once, or the operator's
// own CA bundle.
func trustSource(o Options) func() ([]byte, error) {
	if o.CertDir == "" {
		return o.Store.Trust
	}
	path := filepath.Join(o.CertDir, SecretCAKey)
	return func() ([]byte, error) {
		data, err := os.ReadFile(path) //nolint:gosec // the path is the operator's own flag.
		if err != nil {
			return nil, fmt.Errorf("reading the CA bundle: %w", err)
		}
		if len(parseCerts(data)) == 0 {
			return nil, fmt.Errorf("%s holds no certificate: the issuer must be a CA issuer that writes ca.crt", path)
		}
		return data, nil
	}
}
