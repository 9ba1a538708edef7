package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/test/xdssim"
)

// runXDSFleet connects --sidecars simulated sidecars at once and measures
// the operator and the API server before and after, the revocation
// fan-out, and one sidecar's reconnection after a change.
func (s *sim) runXDSFleet(ctx context.Context) error {
	f := &s.rep.Fleet
	f.Ran = true
	fleet, held, err := s.newFleet(ctx)
	if err != nil {
		return err
	}
	if f.Before, f.APIBefore, err = s.settledReadings(ctx); err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); fleet.Wait() }()
	s.logf("starting %d simulated sidecars", s.o.Sidecars)
	fleet.Start(fctx)
	if err := s.waitFleetReady(ctx, fleet); err != nil {
		return err
	}
	defer s.collectViolations(fleet)
	if f.After, f.APIAfter, err = s.settledReadings(ctx); err != nil {
		return err
	}
	f.Measured = true
	if err := s.fleetRevocation(ctx, fleet); err != nil {
		return err
	}
	s.checkFullSidecars(ctx)
	return s.reconnectAfterOneChange(ctx, fleet, held)
}

// newFleet makes the fleet: sidecar i presents a token of its own (one pod
// each), trusts the operator's CA, and accepts only resources of its
// namespace. Sidecar 0's token requests go through held, which the
// reconnection measurement closes to keep it away while a key changes.
func (s *sim) newFleet(ctx context.Context) (*xdssim.Fleet, *gate, error) {
	tokens, err := s.cluster.tokens(ctx, simNS, xds.DefaultAudience, "sim-sidecar", s.o.Sidecars)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.op.caPEM) {
		return nil, nil, errors.New("no CA certificate to trust")
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: s.op.serverName}
	held := &gate{}
	fleet := xdssim.NewFleet(s.o.Sidecars, func(i int) xdssim.Target {
		return xdssim.Target{
			Addresses: []string{s.op.xdsAddr}, TLS: tlsConfig, Namespace: simNS, Belongs: belongsTo(simNS),
			Token: func(ctx context.Context) (string, error) {
				if i == 0 {
					if err := held.pass(ctx); err != nil {
						return "", err
					}
				}
				return tokens[i], nil
			},
		}
	})
	return fleet, held, nil
}

// belongsTo accepts only resources of namespace ns: every name the
// simulation creates starts with its namespace, and an API key entry's
// subject names its APIKey.
func belongsTo(ns string) func(typeURL, name string, msg proto.Message) bool {
	return func(_, name string, msg proto.Message) bool {
		if !strings.HasPrefix(name, ns+"-") {
			return false
		}
		if e, ok := msg.(*xdsv1alpha1.APIKeyEntry); ok {
			return e.GetSubject() == subjectOf(name)
		}
		return true
	}
}

// waitFleetReady waits until every sidecar holds every type, the K API key
// entries and the policy.
func (s *sim) waitFleetReady(ctx context.Context, fleet *xdssim.Fleet) error {
	f := &s.rep.Fleet
	ready := func(sc *xdssim.Sidecar) bool {
		return sc.Complete() && sc.Count(xds.APIKeyEntryType) == s.o.Keys && sc.Count(xds.AuthPolicyType) == 1
	}
	var err error
	if f.Ready, err = fleet.WaitReady(ctx, ready); err != nil {
		return fmt.Errorf("the fleet did not converge: %w", err)
	}
	var total int64
	for i := range fleet.Len() {
		total += fleet.Sidecar(i).BytesReceived()
	}
	f.InitialBytes = float64(total) / float64(fleet.Len())
	s.logf("all %d sidecars ready %v after the start", fleet.Len(), f.Ready.Round(time.Millisecond))
	return nil
}

func notActive(e *xdsv1alpha1.APIKeyEntry) bool {
	return e == nil || e.GetState() != xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE
}

// fleetRevocation disables one key and takes, for every sidecar, the time
// from the update to the response that made it hold the key not ACTIVE.
// WaitAll is started half a second before the update, so that every
// sidecar is watched when it comes.
func (s *sim) fleetRevocation(ctx context.Context, fleet *xdssim.Fleet) error {
	type result struct {
		times []time.Time
		err   error
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		times, err := fleet.WaitAll(wctx, s.revoked, notActive)
		done <- result{times, err}
	}()
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	if err := disableKey(ctx, s.cluster.client, s.revoked); err != nil {
		return err
	}
	r := <-done
	if r.err != nil {
		return fmt.Errorf("revocation: %w", r.err)
	}
	for _, t := range r.times {
		s.rep.Fleet.Revocation = append(s.rep.Fleet.Revocation, t.Sub(t0))
	}
	s.logf("xDS revocation fan-out: %s", fanOut(s.rep.Fleet.Revocation))
	return nil
}

// reconnectAfterOneChange keeps sidecar 0 away (its next token request
// held) while one key changes and every other sidecar receives it, then
// lets it reconnect with the versions it holds, and counts the bytes it
// receives until it holds the change and every type has answered.
func (s *sim) reconnectAfterOneChange(ctx context.Context, fleet *xdssim.Fleet, held *gate) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sc := fleet.Sidecar(0)
	away := held.shut()
	sc.Reconnect()
	select {
	case <-away:
	case <-wctx.Done():
		held.open()
		return fmt.Errorf("sidecar 0 did not come back for a token: %w", wctx.Err())
	}
	before := sc.BytesReceived()
	if err := disableKey(ctx, s.cluster.client, s.changed); err != nil {
		held.open()
		return err
	}
	err := poll(wctx, func() bool {
		for i := 1; i < fleet.Len(); i++ {
			if !notActive(fleet.Sidecar(i).Entry(s.changed)) {
				return false
			}
		}
		return true
	})
	held.open()
	if err != nil {
		return fmt.Errorf("the other sidecars did not receive the change: %w", err)
	}
	if err := poll(wctx, func() bool { return notActive(sc.Entry(s.changed)) }); err != nil {
		return fmt.Errorf("sidecar 0 did not receive the change on reconnecting: %w", err)
	}
	if err := s.settle(ctx); err != nil {
		return err
	}
	s.rep.Fleet.ReconnectBytes = sc.BytesReceived() - before
	s.logf("sidecar 0 received %d bytes reconnecting after one change", s.rep.Fleet.ReconnectBytes)
	return nil
}

// collectViolations records the fleet's violations, and the removals of
// the valid key (a valid key must never be lost).
func (s *sim) collectViolations(fleet *xdssim.Fleet) {
	v := fleet.Violations()
	s.rep.Fleet.Violations = len(v)
	for i, msg := range v {
		if i == 20 {
			s.rep.fail(fmt.Sprintf("and %d more violations", len(v)-20))
			break
		}
		s.rep.fail("violation: " + msg)
	}
	for i := range fleet.Len() {
		s.rep.Fleet.ValidKeyRemovals += fleet.Sidecar(i).Removals(s.valid)
	}
	if s.rep.Fleet.ValidKeyRemovals > 0 {
		s.rep.fail(fmt.Sprintf("the valid key %s was removed or made not ACTIVE %d times", s.valid, s.rep.Fleet.ValidKeyRemovals))
	}
}

// poll checks cond every 10 ms until it holds or ctx ends.
func poll(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
