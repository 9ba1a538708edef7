// Package version holds the version stamped into every Gatehouse binary and
// the `version` subcommand that prints it.
package version

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is set at build time with
// -ldflags "-X gatehouse.dev/gatehouse/internal/version.Version=v1.2.3".
var Version = "dev"

// String is Version, or the module version of a `go install`ed build.
func String() string {
	if info, ok := debug.ReadBuildInfo(); ok && Version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return Version
}

// NewCommand is the `version` subcommand of the binary named binary.
func NewCommand(binary string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), binary, String())
			return err
		},
	}
}
