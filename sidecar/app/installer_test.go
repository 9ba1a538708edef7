package app

import (
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// countingRemote gives remote issuers no keys and counts sweeps.
type countingRemote struct{ sweeps int }

func (*countingRemote) Discovery(string) snapshot.KeySet { return snapshot.EmptyKeySet }
func (*countingRemote) URI(string) snapshot.KeySet       { return snapshot.EmptyKeySet }
func (c *countingRemote) Sweep()                         { c.sweeps++ }

// A sweep retires every remote issuer the last build did not ask for, and
// only a build that compiles the policy asks: a delta of API keys alone
// must not sweep, or each key change would stop the fetching of every
// remote issuer's keys.
func TestAppliedDeltasSweepRemoteIssuersOnlyWhenThePolicyIsCompiled(t *testing.T) {
	gc := debug.SetGCPercent(100)
	debug.SetGCPercent(gc)
	store := &snapshot.Store{}
	remote := &countingRemote{}
	in := &installer{
		log: logr.Discard(), clock: time.Now, store: store, metrics: metrics.New(store, time.Now), engine: authz.New(store, authz.Options{}),
		draining: &atomic.Bool{}, remote: remote, setServing: func(bool) {}, normalGC: gc,
		builder: snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "ns", Remote: remote}),
	}
	key := testfixture.NewAPIKey(t, "ns", "billing", "svc")
	in.apply(snapshot.Delta{Policy: &snapshot.PolicyInputs{}})
	in.apply(snapshot.Delta{Records: []*apikeyformat.Record{key.Record}})
	if _, ok := store.Load().Record(key.Key.ID()); !ok {
		t.Fatal("the applied key is not served")
	}
	if remote.sweeps != 1 {
		t.Fatalf("%d sweeps after a policy and a key change, want 1", remote.sweeps)
	}
	in.apply(snapshot.Delta{Removed: []string{"billing"}, Policy: &snapshot.PolicyInputs{}})
	if _, ok := store.Load().Record(key.Key.ID()); ok || remote.sweeps != 2 {
		t.Fatalf("after a removal and a policy change: key served %v, %d sweeps (want false, 2)", ok, remote.sweeps)
	}
}
