package main

import (
	"context"
	"errors"
)

// runXDSFleet is wired to test/xdssim's fleet once that package is in
// main; until then only --sidecars 0 runs.
func (s *sim) runXDSFleet(context.Context) error {
	return errors.New("the simulated sidecars (test/xdssim) are not wired yet: run with --sidecars 0")
}
