// Command gatehouse is the operator's binary and the offline tools:
//
//	gatehouse operator  the controllers, webhook, token endpoint and JWKS serving
//	gatehouse keys      offline tools: mint an API key, inspect a JWKS
//
// The sidecar is a binary of its own (cmd/gatehouse-sidecar) in the same
// image, so that the pod beside every workload maps none of this code.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"gatehouse.dev/gatehouse/internal/version"
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
		newKeysCommand(),
		version.NewCommand("gatehouse"),
	)
	return root
}
