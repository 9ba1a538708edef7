// Package app assembles the Gatehouse operator: the APIKey, SigningKey
// and AuthPolicy controllers, the OIDC discovery / JWKS server with the
// OAuth 2.0 token endpoint on the same listener, the sidecar-injection
// webhook and the delta xDS server, all in one controller-runtime manager.
//
// `gatehouse operator` runs it from flags; the demo and the end-to-end test
// run the very same assembly in process.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"gatehouse.dev/gatehouse/controllers/apikeys"
	"gatehouse.dev/gatehouse/controllers/authpolicies"
	"gatehouse.dev/gatehouse/controllers/signingkeys"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/internal/owned"
	"gatehouse.dev/gatehouse/internal/scheme"
	"gatehouse.dev/gatehouse/operator/discovery"
	"gatehouse.dev/gatehouse/operator/tokenendpoint"
	"gatehouse.dev/gatehouse/operator/webhook"
	"gatehouse.dev/gatehouse/operator/xds"
)

// LeaderElectionID names the Lease the replicas elect a leader with.
const LeaderElectionID = "gatehouse-operator.auth.gatehouse.dev"

// Options configure the operator. BindFlags binds them to flags; the
// chart sets them.
type Options struct {
	// Webhook configures the sidecar-injection webhook and its
	// certificates.
	Webhook webhook.Options

	MetricsAddr string
	ProbeAddr   string
	// PprofAddr serves Go's /debug/pprof endpoints; "0" or empty: off.
	PprofAddr               string
	LeaderElect             bool
	LeaderElectionNamespace string

	// APIKeyWorkers is the APIKey controller's MaxConcurrentReconciles.
	APIKeyWorkers int

	// IssuerPrefix, when set, confines the issuers of each namespace's
	// SigningKeys to a URL prefix containing "{namespace}"; the controller,
	// discovery and the token endpoint check it.
	IssuerPrefix string

	// KeepLegacyRecords makes the APIKey and SigningKey controllers keep
	// writing the record and JWKS ConfigMaps that sidecars of earlier
	// versions read, mirrored from status, instead of deleting them: for
	// the rollout that replaces those sidecars (docs/apikeys.md, "Upgrade
	// from record ConfigMaps"). Nothing of this version reads them.
	KeepLegacyRecords bool

	// DiscoveryAddr serves OIDC discovery, the JWKS of every SigningKey
	// and the token endpoint ("0" disables all three); DiscoveryListener,
	// when set, is served instead (tests and the demo listen on :0).
	DiscoveryAddr     string
	DiscoveryListener net.Listener
	// DiscoveryMaxAge bounds the Cache-Control of discovery responses.
	DiscoveryMaxAge time.Duration
	// TokenEndpoint enables POST /oauth2/token on the discovery server.
	TokenEndpoint bool
	// TokenMaxLifetime caps the lifetime of every issued token (0: the
	// APIKey's and the SigningKey's caps only).
	TokenMaxLifetime time.Duration
	// TokenTrustedProxies are CIDRs or addresses of the proxies whose
	// X-Forwarded-For names the client that token endpoint failures count
	// against (none: the TCP peer is the client).
	TokenTrustedProxies []string

	// XDSAddr serves delta xDS to sidecars ("0" disables it); XDSListener,
	// when set, is served instead. The server presents the webhook's
	// certificate, which then also names XDSServiceName.
	XDSAddr        string
	XDSListener    net.Listener
	XDSServiceName string
	// XDSAudience is the audience of the ServiceAccount tokens sidecars
	// present.
	XDSAudience string
	// XDSMaxStreamsPerPod bounds the xDS streams one pod holds open on a
	// replica (xds.DefaultMaxStreamsPerPod when 0).
	XDSMaxStreamsPerPod int

	// Logger, when set, is the manager's logger (default: ctrl.Log). It
	// is capped below the verbosity at which client-go logs bodies.
	Logger logr.Logger

	// SkipControllerNameValidation lets several operators run in one
	// process (tests starting one stack each); controller-runtime refuses
	// a second controller of the same name otherwise.
	SkipControllerNameValidation bool
}

// BindFlags registers the operator's flags.
func (o *Options) BindFlags(f *pflag.FlagSet) {
	f.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; \"0\" disables it.")
	f.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	f.StringVar(&o.PprofAddr, "pprof-bind-address", "0", "Address of Go's /debug/pprof profiling endpoints, for diagnosis (bind it to loopback and port-forward); \"0\", the default, disables it.")
	f.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time (every replica serves the webhook, discovery and the token endpoint).")
	f.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	f.IntVar(&o.APIKeyWorkers, "apikey-workers", 8, "APIKeys reconciled concurrently.")
	f.StringVar(&o.IssuerPrefix, "issuer-prefix", "", "When set, every SigningKey's spec.issuer must start with this https URL prefix, {namespace} replaced by the SigningKey's namespace (e.g. https://auth.example.com/{namespace}/); others are Ready=False IssuerOutsidePrefix, never served or signed with.")
	f.BoolVar(&o.KeepLegacyRecords, "keep-legacy-records", false, "Keep writing, mirrored from status, the API key record and JWKS ConfigMaps that sidecars of earlier versions read, until every workload runs a new sidecar; off (the default) deletes them. This version never reads them.")
	f.StringVar(&o.DiscoveryAddr, "discovery-bind-address", ":8082", "Address serving <issuer>/.well-known/openid-configuration, jwks.json and the token endpoint for every SigningKey (plain HTTP: terminate TLS in front); \"0\" disables it.")
	f.DurationVar(&o.DiscoveryMaxAge, "discovery-max-age", discovery.DefaultMaxAge, "Upper bound of the Cache-Control max-age of discovery responses (never more than half a SigningKey's propagation interval).")
	f.BoolVar(&o.TokenEndpoint, "token-endpoint", true, "Serve the OAuth 2.0 token endpoint (POST /oauth2/token and <issuer>/oauth2/token) on the discovery address.")
	f.DurationVar(&o.TokenMaxLifetime, "token-max-lifetime", time.Hour, "Upper bound of the lifetime of every issued token, whatever an APIKey allows.")
	f.StringSliceVar(&o.TokenTrustedProxies, "token-endpoint-trusted-proxies", nil, "CIDRs or addresses of the proxies (ingress, load balancer) whose X-Forwarded-For names the token endpoint's client, by the rightmost-untrusted rule; none by default.")
	f.StringVar(&o.XDSAddr, "xds-bind-address", "0", "Address of the delta xDS server pushing each namespace's state to its sidecars, over TLS with the webhook's certificate, self-managed or from --webhook-cert-dir (the webhook must be enabled); \"0\" disables it.")
	f.StringVar(&o.XDSServiceName, "xds-service-name", "gatehouse-xds", "Service through which sidecars reach the xDS server; names the certificate.")
	f.StringVar(&o.XDSAudience, "xds-audience", xds.DefaultAudience, "Audience of the ServiceAccount tokens sidecars present to the xDS server.")
	f.IntVar(&o.XDSMaxStreamsPerPod, "xds-max-streams-per-pod", xds.DefaultMaxStreamsPerPod, "xDS streams one pod (the pod its token is bound to) may hold open on one replica; one more ends the pod's oldest.")
	o.Webhook.BindFlags(f)
}

func (o *Options) xdsEnabled() bool {
	return o.XDSListener != nil || (o.XDSAddr != "" && o.XDSAddr != "0")
}

// New returns a manager running every part of the operator on cfg. Start
// it with mgr.Start; it stops everything when its context ends. ctx bounds
// the setup only.
func New(ctx context.Context, cfg *rest.Config, o Options) (ctrl.Manager, error) {
	log := o.Logger
	if log.GetSink() == nil {
		log = ctrl.Log
	}
	// client-go logs request bodies (delivery Secrets included) at V(8)+.
	log = apikeys.SafeLogger(log)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme.New(),
		Logger:                  log,
		Cache:                   owned.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		PprofBindAddress:        o.PprofAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		Controller:              config.Controller{SkipNameValidation: &o.SkipControllerNameValidation},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := setup(ctx, mgr, o, log); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("adding ready check: %w", err)
	}
	return mgr, nil
}

// setup registers every controller and server of the operator.
func setup(ctx context.Context, mgr ctrl.Manager, o Options, log logr.Logger) error {
	workers := o.APIKeyWorkers
	if workers <= 0 {
		workers = 1
	}
	if err := (&apikeys.Reconciler{KeepLegacyRecords: o.KeepLegacyRecords}).SetupWithManager(ctx, mgr, workers); err != nil {
		return fmt.Errorf("setting up the apikey controller: %w", err)
	}
	prefix := keyring.IssuerPrefix(o.IssuerPrefix)
	if err := prefix.Validate(); err != nil {
		return fmt.Errorf("--issuer-prefix: %w", err)
	}
	if err := (&signingkeys.Reconciler{IssuerPrefix: prefix, KeepLegacyRecords: o.KeepLegacyRecords}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the signingkey controller: %w", err)
	}
	if err := (&authpolicies.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the authpolicy controller: %w", err)
	}
	if o.DiscoveryListener != nil || (o.DiscoveryAddr != "" && o.DiscoveryAddr != "0") {
		if err := addDiscovery(ctx, mgr, o, log); err != nil {
			return err
		}
	}
	xdsTLS, watcher, err := shareCertificateWithXDS(&o)
	if err != nil {
		return err
	}
	if watcher != nil {
		if err := mgr.Add(watcher); err != nil {
			return fmt.Errorf("adding the xds certificate watcher: %w", err)
		}
	}
	if err := webhook.Setup(mgr, o.Webhook); err != nil {
		return fmt.Errorf("setting up the sidecar-injection webhook: %w", err)
	}
	if xdsTLS != nil {
		if _, err := xds.Setup(ctx, mgr, xds.Options{
			Addr: o.XDSAddr, Listener: o.XDSListener, TLS: xdsTLS, Audience: o.XDSAudience, MaxStreamsPerPod: o.XDSMaxStreamsPerPod, Log: log.WithName("xds"),
		}); err != nil {
			return fmt.Errorf("setting up the xds server: %w", err)
		}
	}
	return nil
}

// shareCertificateWithXDS returns the xDS server's TLS configuration (nil
// when xDS is off): the webhook's serving certificate, which then also
// names the xDS Service, so that injected sidecars trust the webhook's CA
// bundle. With the operator's own CA the certificate is issued with the
// xDS Service's names; with cert-manager's (--webhook-cert-dir) the chart's
// Certificate lists them, and watcher, to run on every replica, reloads the
// files as cert-manager renews them. Bearer tokens cross the network: there
// is no xDS without TLS, nor without the webhook that hands out the CA.
func shareCertificateWithXDS(o *Options) (cfg *tls.Config, watcher *certwatcher.CertWatcher, err error) {
	if !o.xdsEnabled() {
		return nil, nil, nil
	}
	if !o.Webhook.Enabled() {
		return nil, nil, errors.New("--xds-bind-address needs the webhook enabled: it issues the certificate and gives sidecars its CA")
	}
	if o.Webhook.CertDir != "" {
		watcher, err = certwatcher.New(filepath.Join(o.Webhook.CertDir, "tls.crt"), filepath.Join(o.Webhook.CertDir, "tls.key"))
		if err != nil {
			return nil, nil, fmt.Errorf("loading the xds certificate from --webhook-cert-dir: %w", err)
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: watcher.GetCertificate}, watcher, nil
	}
	o.Webhook.Store = &webhook.CertStore{}
	o.Webhook.ExtraServiceNames = append(o.Webhook.ExtraServiceNames, o.XDSServiceName)
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: o.Webhook.Store.GetCertificate}, nil, nil
}

// addDiscovery adds the discovery server and, on the same listener, the
// token endpoint. Both read the manager's cache and run on every replica.
func addDiscovery(ctx context.Context, mgr ctrl.Manager, o Options, log logr.Logger) error {
	// The SigningKey controller registered keyring.IssuerIndex.
	prefix := keyring.IssuerPrefix(o.IssuerPrefix)
	srv := &discovery.Server{
		Addr:         o.DiscoveryAddr,
		Listener:     o.DiscoveryListener,
		Reader:       mgr.GetClient(),
		Log:          log.WithName("discovery"),
		MaxAge:       o.DiscoveryMaxAge,
		IssuerPrefix: prefix,
	}
	if o.TokenEndpoint {
		trusted, err := tokenendpoint.ParseTrustedProxies(o.TokenTrustedProxies)
		if err != nil {
			return fmt.Errorf("--token-endpoint-trusted-proxies: %w", err)
		}
		if err := tokenendpoint.RegisterIndex(ctx, mgr); err != nil {
			return fmt.Errorf("indexing api keys by key id: %w", err)
		}
		store := &tokenendpoint.KubeStore{Reader: mgr.GetClient(), Signer: tokenendpoint.SigningKeySignerFor(prefix)}
		te := tokenendpoint.NewServer(store, log.WithName("token-endpoint"), tokenendpoint.NewMetrics(ctrlmetrics.Registry))
		te.MaxLifetime = o.TokenMaxLifetime
		te.TrustedProxies = trusted
		srv.TokenEndpoint = te
	}
	if err := mgr.Add(srv); err != nil {
		return fmt.Errorf("adding the discovery server: %w", err)
	}
	return nil
}

var _ manager.LeaderElectionRunnable = &discovery.Server{}
