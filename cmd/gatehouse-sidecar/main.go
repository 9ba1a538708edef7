// Command gatehouse-sidecar is the Envoy ext_authz server that runs beside
// each workload (gRPC envoy.service.auth.v3 and the HTTP contract). It links
// nothing of the operator: it runs in every pod, so every MiB counts.
// See docs/sidecar.md.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"gatehouse.dev/gatehouse/internal/version"
	"gatehouse.dev/gatehouse/sidecar/app"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	f := &app.Flags{}
	root := &cobra.Command{
		Use:   "gatehouse-sidecar",
		Short: "Validate API keys and JWTs for Envoy ext_authz beside a workload",
		Long: `Run the sidecar: an Envoy ext_authz server (gRPC envoy.service.auth.v3 and the
HTTP contract) that decides each request locally from the API key records,
JWKS and AuthPolicy of its namespace. It denies everything until its first
complete state is loaded, and whenever no AuthPolicy selects its pod.
See docs/sidecar.md.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, f)
		},
	}
	f.BindFlags(root.Flags())
	root.AddCommand(version.NewCommand("gatehouse-sidecar"))
	return root
}

func run(cmd *cobra.Command, f *app.Flags) error {
	log := zap.New(zap.UseFlagOptions(&f.Zap)).WithName("sidecar")
	crlog.SetLogger(log)
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, release, err := f.Config(log)
	if err != nil {
		return err
	}
	defer release()
	log.Info("starting", "version", version.String(), "namespace", cfg.Namespace, "podLabels", cfg.PodLabels, "source", f.SourceName())
	return app.Run(ctx, cfg)
}
