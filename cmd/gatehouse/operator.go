package main

import (
	"flag"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"gatehouse.dev/gatehouse/controllers/apikeys"
	"gatehouse.dev/gatehouse/internal/kubeconfig"
	operatorapp "gatehouse.dev/gatehouse/operator/app"
)

// operatorFlags are the operator's flags beyond operatorapp.Options.
type operatorFlags struct {
	operator operatorapp.Options
	zap      zap.Options

	kubeconfig string
	// kubeQPS and kubeBurst bound the client's request rate; the defaults
	// of client-go (5/10) would take minutes to issue thousands of keys.
	kubeQPS   float32
	kubeBurst int
}

func newOperatorCommand() *cobra.Command {
	o := &operatorFlags{}
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Run the controllers, the token endpoint, JWKS serving and the injection webhook",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOperator(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubeconfig file (default: in-cluster configuration, then $KUBECONFIG).")
	f.Float32Var(&o.kubeQPS, "kube-api-qps", 100, "Sustained requests per second to the API server.")
	f.IntVar(&o.kubeBurst, "kube-api-burst", 200, "Request burst to the API server.")
	o.operator.BindFlags(f)
	zfs := flag.NewFlagSet("zap", flag.ContinueOnError)
	o.zap.BindFlags(zfs)
	f.AddGoFlagSet(zfs)
	return cmd
}

func runOperator(o *operatorFlags) error {
	// SafeLogger: client-go logs request bodies (delivery Secrets included)
	// at V(8)+, so no log level flag may reach that far.
	ctrl.SetLogger(apikeys.SafeLogger(zap.New(zap.UseFlagOptions(&o.zap))))
	cfg, err := kubeconfig.Load(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = o.kubeQPS, o.kubeBurst
	ctx := ctrl.SetupSignalHandler()
	mgr, err := operatorapp.New(ctx, cfg, o.operator)
	if err != nil {
		return err
	}
	ctrl.Log.WithName("operator").Info("starting")
	return mgr.Start(ctx)
}
