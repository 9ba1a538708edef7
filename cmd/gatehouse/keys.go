package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newKeysCommand() *cobra.Command {
	keys := &cobra.Command{
		Use:   "keys",
		Short: "Offline key tools: mint an API key, inspect a JWKS",
	}
	keys.AddCommand(&cobra.Command{
		Use:   "mint",
		Short: "Generate an API key locally (not implemented yet)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("keys mint: not implemented yet")
		},
	})
	return keys
}
