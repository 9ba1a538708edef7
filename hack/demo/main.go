// Command demo runs Gatehouse for real on one machine: etcd and
// kube-apiserver on 127.0.0.1, the CRDs, the operator and a sidecar in this
// process, the samples, and real requests that must be allowed or denied.
// `make demo` runs it. It is tooling: nothing here ships in an image.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"gatehouse.dev/gatehouse/test/demo"
)

func main() {
	if err := newDemoCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newDemoCommand() *cobra.Command {
	o := demo.Options{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run Gatehouse locally: API server, samples, operator, sidecar and real requests",
		Long: "Starts etcd and kube-apiserver on 127.0.0.1 (binaries from --assets, built by\n" +
			"hack/build-apiserver.sh; `make demo` does all of it), installs the CRDs, runs the\n" +
			"operator and a sidecar in this process, applies the samples and sends real\n" +
			"requests: allowed with the API key and with a token from the token endpoint,\n" +
			"denied without credentials, without scope and after the key is disabled.\n" +
			"It exits non-zero if any answer is wrong. Everything started is stopped on\n" +
			"exit or Ctrl-C.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Out = cmd.OutOrStdout()
			return demo.Run(ctx, o)
		},
	}
	cmd.Flags().StringVar(&o.AssetsDir, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "Directory holding the kube-apiserver and etcd binaries.")
	cmd.Flags().BoolVar(&o.Wait, "wait", false, "Keep running after the script until Ctrl-C, to explore with kubectl.")
	return cmd
}
