package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"gatehouse.dev/gatehouse/controllers/apikeys"
	"gatehouse.dev/gatehouse/controllers/signingkeys"
	"gatehouse.dev/gatehouse/internal/discovery"
	"gatehouse.dev/gatehouse/internal/scheme"
	"gatehouse.dev/gatehouse/internal/webhook"
)

// operatorOptions are the operator's flags.
type operatorOptions struct {
	// webhook configures the sidecar-injection webhook and its certificates.
	webhook webhook.Options

	metricsAddr   string
	probeAddr     string
	leaderElect   bool
	leaderElectNS string
	zap           zap.Options

	// apiKeyWorkers is the APIKey controller's MaxConcurrentReconciles.
	apiKeyWorkers int
	// kubeQPS and kubeBurst bound the client's request rate; the defaults
	// of client-go (5/10) would take minutes to issue thousands of keys.
	kubeQPS   float32
	kubeBurst int

	// discoveryAddr serves OIDC discovery and the JWKS of every
	// SigningKey ("0" disables); discoveryMaxAge bounds its Cache-Control.
	discoveryAddr   string
	discoveryMaxAge time.Duration
}

func newOperatorCommand() *cobra.Command {
	o := &operatorOptions{}
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Run the controllers that turn APIKeys and SigningKeys into key material",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOperator(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; \"0\" disables it.")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	f.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	f.StringVar(&o.leaderElectNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	f.IntVar(&o.apiKeyWorkers, "apikey-workers", 8, "APIKeys reconciled concurrently.")
	f.Float32Var(&o.kubeQPS, "kube-api-qps", 100, "Sustained requests per second to the API server.")
	f.IntVar(&o.kubeBurst, "kube-api-burst", 200, "Request burst to the API server.")
	f.StringVar(&o.discoveryAddr, "discovery-bind-address", ":8082", "Address serving <issuer>/.well-known/openid-configuration and jwks.json for every SigningKey (plain HTTP: terminate TLS in front); \"0\" disables it.")
	f.DurationVar(&o.discoveryMaxAge, "discovery-max-age", discovery.DefaultMaxAge, "Upper bound of the Cache-Control max-age of discovery responses (never more than half a SigningKey's propagation interval).")
	o.webhook.BindFlags(f)
	zfs := flag.NewFlagSet("zap", flag.ContinueOnError)
	o.zap.BindFlags(zfs)
	f.AddGoFlagSet(zfs)
	return cmd
}

func runOperator(o *operatorOptions) error {
	// SafeLogger: client-go logs request bodies (delivery Secrets included)
	// at V(8)+, so no log level flag may reach that far.
	ctrl.SetLogger(apikeys.SafeLogger(zap.New(zap.UseFlagOptions(&o.zap))))
	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = o.kubeQPS, o.kubeBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme.New(),
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "gatehouse-operator.auth.gatehouse.dev",
		LeaderElectionNamespace: o.leaderElectNS,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := setupControllers(mgr, o); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	ctrl.Log.WithName("operator").Info("starting")
	return mgr.Start(ctrl.SetupSignalHandler())
}

// setupControllers registers every controller of the operator.
func setupControllers(mgr ctrl.Manager, o *operatorOptions) error {
	if err := (&apikeys.Reconciler{}).SetupWithManager(context.Background(), mgr, o.apiKeyWorkers); err != nil {
		return fmt.Errorf("setting up the apikey controller: %w", err)
	}
	if err := (&signingkeys.Reconciler{}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the signingkey controller: %w", err)
	}
	if o.discoveryAddr != "0" {
		if err := discovery.IndexIssuer(context.Background(), mgr.GetFieldIndexer()); err != nil {
			return err
		}
		if err := mgr.Add(&discovery.Server{Addr: o.discoveryAddr, Reader: mgr.GetClient(), Log: ctrl.Log.WithName("discovery"), MaxAge: o.discoveryMaxAge}); err != nil {
			return fmt.Errorf("adding the discovery server: %w", err)
		}
	}
	if err := webhook.Setup(mgr, o.webhook); err != nil {
		return fmt.Errorf("setting up the sidecar-injection webhook: %w", err)
	}
	return nil
}
