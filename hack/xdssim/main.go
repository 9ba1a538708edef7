// Command xdssim is the scale simulation of the operator's delta xDS
// (issue 13, docs/xds.md "Scale simulation"). On one machine it starts a
// real kube-apiserver and etcd on 127.0.0.1, puts --keys APIKeys in a
// namespace, runs the operator (cmd/gatehouse, built into a temporary
// directory) as a process of its own with xDS on loopback, and connects
// --sidecars simulated sidecars (test/xdssim: real delta-ADS clients, each
// with its own ServiceAccount token) all at once, beside --full-sidecars
// real gatehouse-sidecar processes on --source=xds. It reports the time
// until every sidecar holds the namespace, the operator's CPU and memory
// per connected sidecar, the API server's watches and LIST traffic before
// and after, the revocation fan-out, and the bytes a reconnecting sidecar
// receives after one change; --informers M then runs M informer sidecars
// (source.Kubernetes, in this process) against the same API server for
// comparison.
//
//	go run ./hack/xdssim --sidecars 1000 --keys 10000 [--informers 300]
//
// It exits non-zero when a simulated sidecar reports a violation, does not
// converge or does not see the revocation, or a full sidecar does not deny
// the revoked key or allow a valid one. Everything started is stopped, and
// every temporary directory removed, on exit, on --timeout and on Ctrl-C.
// It is tooling: nothing here ships in an image.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	// The informer sidecars' caches log through controller-runtime; their
	// failures are collected and reported instead.
	ctrllog.SetLogger(logr.Discard())
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xdssim:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	o := options{}
	cmd := &cobra.Command{
		Use:   "xdssim",
		Short: "Scale simulation: a real API server, the operator and N simulated xDS sidecars",
		Long: "Starts kube-apiserver and etcd on 127.0.0.1 (binaries from --assets, built by\n" +
			"hack/build-apiserver.sh when unset), creates --keys APIKeys, runs the operator as a\n" +
			"process with xDS on loopback, connects --sidecars simulated sidecars at once and\n" +
			"--full-sidecars real ones, revokes a key, and prints one summary table.\n" +
			"--informers M adds M informer sidecars for comparison. See docs/xds.md.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, o.Timeout)
			defer cancel()
			o.Out = cmd.OutOrStdout()
			o.Log = cmd.ErrOrStderr()
			return run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Sidecars, "sidecars", 50, "Simulated sidecars (real delta-ADS clients in this process).")
	f.IntVar(&o.Keys, "keys", 2000, "APIKeys in the simulated sidecars' namespace.")
	f.IntVar(&o.OtherKeys, "other-keys", 20, "APIKeys in a second namespace, which no simulated sidecar may receive.")
	f.IntVar(&o.FullSidecars, "full-sidecars", 2, "Real gatehouse-sidecar processes on --source=xds beside the simulated ones.")
	f.IntVar(&o.Informers, "informers", 0, "Informer sidecars (source.Kubernetes, in this process) to compare with, after the xDS part.")
	f.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "Bound of the whole run.")
	f.StringVar(&o.Assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "Directory of kube-apiserver and etcd (default: built by hack/build-apiserver.sh).")
	f.IntVar(&o.APIKeyWorkers, "apikey-workers", 8, "The operator's --apikey-workers.")
	f.Float32Var(&o.OperatorQPS, "operator-qps", 500, "The operator's --kube-api-qps (and burst), so that reconciling --keys is not throttled by the client.")
	f.IntVar(&o.CreateWorkers, "create-workers", 16, "Concurrent creates of APIKeys.")
	f.DurationVar(&o.Settle, "settle", 3*time.Second, "Wait before each CPU and memory reading, for work in flight to end.")
	return cmd
}
