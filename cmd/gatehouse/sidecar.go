package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newSidecarCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "sidecar",
		Short: "Run the sidecar (not implemented yet)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("sidecar: not implemented yet")
		},
	}
}
