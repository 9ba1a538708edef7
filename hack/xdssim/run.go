package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
)

type options struct {
	Sidecars, Keys, OtherKeys, FullSidecars, Informers int
	Timeout, Settle                                    time.Duration
	Assets                                             string
	APIKeyWorkers, CreateWorkers                       int
	OperatorQPS                                        float32
	Out, Log                                           io.Writer
}

// sim is one run: what it started and what it measured.
type sim struct {
	o       options
	dir     string
	cluster *cluster
	op      *operatorProcess
	full    []*fullSidecar
	rep     *report
	// The keys the run revokes, changes while a sidecar is away, and
	// keeps valid, and the plaintexts of the first and last (in memory
	// only, for the full sidecars' checks).
	revoked, changed, valid, informerRevoked string
	revokedKey, validKey                     apikeyformat.Key
}

func (s *sim) logf(format string, args ...any) {
	fmt.Fprintf(s.o.Log, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, o options) (err error) {
	if o.Keys < 4 {
		return errors.New("--keys must be at least 4 (a revoked, a changed, a valid key and one the informers see revoked)")
	}
	s := &sim{o: o, rep: newReport(o)}
	s.revoked, s.changed, s.valid, s.informerRevoked = keyName(simNS, 0), keyName(simNS, 1), keyName(simNS, 2), keyName(simNS, 3)
	if s.dir, err = os.MkdirTemp("", "gatehouse-xdssim-"); err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(s.dir) }()
	defer s.stopAll()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"start the API server and the operator", s.setUp},
		{"start the full sidecars", s.startFullSidecars},
		{"the xDS fleet", s.runFleet},
		{"the informer sidecars", s.runInformers},
	}
	for _, st := range steps {
		if err := st.run(ctx); err != nil {
			s.rep.fail(fmt.Sprintf("%s: %v", st.name, err))
			break
		}
	}
	s.rep.finish()
	s.rep.print(s.o.Out)
	if len(s.rep.Failures) > 0 {
		return fmt.Errorf("%d failures:\n  %s", len(s.rep.Failures), strings.Join(s.rep.Failures, "\n  "))
	}
	return nil
}

// stopAll stops every process started, the API server last.
func (s *sim) stopAll() {
	for _, f := range s.full {
		f.stop()
	}
	if s.op != nil {
		s.op.stop()
	}
	if s.cluster != nil {
		if err := s.cluster.stop(); err != nil {
			s.logf("stopping the API server: %v", err)
		}
	}
}

// setUp builds the binaries, starts the API server, creates the state and
// the operator, and waits until the operator has reconciled every APIKey.
func (s *sim) setUp(ctx context.Context) error {
	s.logf("building cmd/gatehouse and cmd/gatehouse-sidecar into %s", s.dir)
	opBin, _, err := buildBinaries(ctx, s.dir)
	if err != nil {
		return err
	}
	assets, err := assetsDir(ctx, s.o.Assets)
	if err != nil {
		return err
	}
	s.logf("starting kube-apiserver and etcd from %s", assets)
	if s.cluster, err = startCluster(assets); err != nil {
		return err
	}
	for _, ns := range []string{simNS, otherNS} {
		if err := s.cluster.createNamespace(ctx, ns); err != nil {
			return err
		}
	}
	t0 := time.Now()
	if err := createState(ctx, s.cluster.client, simNS, s.o.Keys, s.o.CreateWorkers); err != nil {
		return err
	}
	if err := createState(ctx, s.cluster.client, otherNS, s.o.OtherKeys, s.o.CreateWorkers); err != nil {
		return err
	}
	s.rep.Created = time.Since(t0)
	s.logf("created %d + %d APIKeys in %v", s.o.Keys, s.o.OtherKeys, s.rep.Created.Round(time.Millisecond))
	if s.op, err = startOperator(ctx, s.o, s.dir, opBin, s.cluster.cp.KubeconfigPath); err != nil {
		return err
	}
	t0 = time.Now()
	if err := waitReconciled(ctx, s.op, s.cluster.client, s.o.Keys+s.o.OtherKeys, s.logf); err != nil {
		return err
	}
	s.rep.Reconciled = time.Since(t0)
	s.logf("the operator reconciled them in %v", s.rep.Reconciled.Round(time.Millisecond))
	if err := waitListening(ctx, s.op.process, s.op.xdsAddr); err != nil {
		return err
	}
	if s.revokedKey, err = deliveredKey(ctx, s.cluster.client, simNS, s.revoked); err != nil {
		return err
	}
	s.validKey, err = deliveredKey(ctx, s.cluster.client, simNS, s.valid)
	return err
}

// startFullSidecars starts the real sidecars and checks that they allow
// both the key to be revoked and the valid one.
func (s *sim) startFullSidecars(ctx context.Context) error {
	tokens, err := s.cluster.tokens(ctx, simNS, xds.DefaultAudience, "full-sidecar", s.o.FullSidecars)
	if err != nil {
		return err
	}
	bin := s.dir + "/gatehouse-sidecar"
	for i, tok := range tokens {
		f, err := startFullSidecar(ctx, i, s.dir, bin, s.op, tok, simNS)
		if err != nil {
			return err
		}
		s.full = append(s.full, f)
	}
	for _, f := range s.full {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := f.waitReady(wctx)
		if err == nil {
			err = f.waitVerdict(wctx, s.validKey, true)
		}
		if err == nil {
			err = f.waitVerdict(wctx, s.revokedKey, true)
		}
		cancel()
		if err != nil {
			return err
		}
	}
	s.logf("%d full sidecars ready, allowing the keys", len(s.full))
	return nil
}

// checkFullSidecars: every full sidecar denies the revoked key (within
// 30 s) and allows the valid one.
func (s *sim) checkFullSidecars(ctx context.Context) {
	for _, f := range s.full {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := f.waitVerdict(wctx, s.revokedKey, false); err != nil {
			s.rep.fail(fmt.Sprintf("%s did not deny the revoked key: %v", f.name, err))
		}
		cancel()
		if ok, err := f.allows(ctx, s.validKey); err != nil || !ok {
			s.rep.fail(fmt.Sprintf("%s did not allow the valid key (allowed=%v, %v)", f.name, ok, err))
		}
	}
	s.rep.FullChecked = len(s.full)
}

// settle waits --settle so that work in flight ends before a reading.
func (s *sim) settle(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.o.Settle):
		return nil
	}
}

// settledReadings waits --settle, then reads the operator's resource use
// and the API server's figures.
func (s *sim) settledReadings(ctx context.Context) (operatorReading, apiTraffic, error) {
	if err := s.settle(ctx); err != nil {
		return operatorReading{}, apiTraffic{}, err
	}
	op, err := s.op.read(ctx)
	if err != nil {
		return operatorReading{}, apiTraffic{}, err
	}
	api, err := s.readAPI(ctx)
	return op, api, err
}

// readAPI scrapes the API server's figures for the sidecars' resources.
func (s *sim) readAPI(ctx context.Context) (apiTraffic, error) {
	m, err := scrapeAPIServer(ctx, s.cluster.cs)
	if err != nil {
		return apiTraffic{}, err
	}
	return readAPITraffic(m), nil
}
