package main

import (
	"context"
	"fmt"
	"time"
)

// runFleet runs the xDS part: the simulated sidecars when there are any,
// and in every case the revocation the full sidecars must follow.
func (s *sim) runFleet(ctx context.Context) error {
	if s.o.Sidecars > 0 {
		return s.runXDSFleet(ctx)
	}
	if err := disableKey(ctx, s.cluster.client, s.revoked); err != nil {
		return err
	}
	s.checkFullSidecars(ctx)
	return nil
}

// runInformers starts --informers informer sidecars at once, reads the API
// server's figures before and after they synced, and times a revocation
// through them.
func (s *sim) runInformers(ctx context.Context) error {
	if s.o.Informers == 0 {
		return nil
	}
	in := &s.rep.Informers
	in.Ran = true
	var err error
	if in.APIBefore, err = s.readAPI(ctx); err != nil {
		return err
	}
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	sidecars, started, err := startInformers(ictx, s.cluster, simNS, s.o.Informers)
	if err != nil {
		return err
	}
	if in.Ready, err = waitInformers(ctx, sidecars, s.o.Keys, started); err != nil {
		return err
	}
	s.logf("%d informer sidecars synced in %v", len(sidecars), in.Ready.Round(time.Millisecond))
	if err := s.settle(ctx); err != nil {
		return err
	}
	if in.APIAfter, err = s.readAPI(ctx); err != nil {
		return err
	}
	in.Measured = true
	for _, sc := range sidecars {
		sc.watchDisabled(s.informerRevoked)
	}
	t0 := time.Now()
	if err := disableKey(ctx, s.cluster.client, s.informerRevoked); err != nil {
		return err
	}
	for i, sc := range sidecars {
		at, err := waitDisabledAt(ctx, sc, s.informerRevoked)
		if err != nil {
			return fmt.Errorf("informer sidecar %d: %w", i, err)
		}
		in.Revocation = append(in.Revocation, at.Sub(t0))
	}
	s.logf("informer revocation fan-out: %s", fanOut(in.Revocation))
	return nil
}

// waitDisabledAt waits (up to a minute) until sc has seen name disabled.
func waitDisabledAt(ctx context.Context, sc *informerSidecar, name string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if at, ok := sc.disabledAt(name); ok {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("never saw %s disabled: %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
