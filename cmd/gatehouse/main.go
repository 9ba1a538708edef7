// Command gatehouse is the single Gatehouse binary. One image serves every
// role through subcommands:
//
//	gatehouse operator  the controllers, webhook, token endpoint and JWKS serving
//	gatehouse sidecar   the Envoy ext_authz server that runs beside each workload
//	gatehouse demo      a local run: API server, operator, sidecar, samples, requests
//	gatehouse keys      offline tools: mint an API key, inspect a JWKS
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "gatehouse",
		Short:         "Kubernetes-native API key and JWT validation for Envoy ext_authz",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newOperatorCommand(),
		newSidecarCommand(),
		newDemoCommand(),
		newKeysCommand(),
		newVersionCommand(),
	)
	return root
}
