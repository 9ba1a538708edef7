package server_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/server"
)

// countingClock is a clock at a fixed time that counts its readings.
type countingClock struct {
	at    time.Time
	reads atomic.Int64
}

func (c *countingClock) Now() time.Time {
	c.reads.Add(1)
	return c.at
}

func checkPrevious(t *testing.T, w *world, core *server.Core) string {
	t.Helper()
	req := benchRequest(map[string]string{"x-api-key": w.previous.Plaintext()})
	resp, err := server.NewAuthorizationServer(core).Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return grpcOutcome(t, resp).reason
}

// TestCheckReadsTheClockTwice: a check reads the Core's clock when it
// starts, decides at that reading, and reads it once more when it ends
// (latency, sampling); the engine does not read its own.
func TestCheckReadsTheClockTwice(t *testing.T) {
	w := newWorld(t)
	// The previous key of the rotated record is in grace for one hour.
	engineClock := &countingClock{at: w.clock.Now()}
	coreClock := &countingClock{at: w.clock.Now().Add(2 * time.Hour)}
	engine := authz.New(w.store, authz.Options{Clock: engineClock.Now})
	core := server.NewCore(engine, w.store, metrics.New(w.store, nil), server.Options{
		StripCredential: true, DecisionLogsPerSecond: 1000, Clock: coreClock.Now, Log: logr.Discard(),
	})
	if got := checkPrevious(t, w, core); got != string(authz.APIKeyGracePeriod) {
		t.Errorf("decided %q, want %q: the engine did not decide at the Core's reading", got, authz.APIKeyGracePeriod)
	}
	if n := coreClock.reads.Load(); n != 2 {
		t.Errorf("the Core's clock was read %d times, want 2", n)
	}
	if n := engineClock.reads.Load(); n != 0 {
		t.Errorf("the engine's clock was read %d times, want 0", n)
	}
}

// TestCoreDefaultsToTheEngineClock: without a clock of its own, a Core
// reads the engine's, so that a check decides at the engine's time.
func TestCoreDefaultsToTheEngineClock(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		after time.Duration
		want  string
	}{{0, ""}, {2 * time.Hour, string(authz.APIKeyGracePeriod)}} {
		clock := &countingClock{at: w.clock.Now().Add(tc.after)}
		engine := authz.New(w.store, authz.Options{Clock: clock.Now})
		core := server.NewCore(engine, w.store, nil, server.Options{Log: logr.Discard()})
		if got := checkPrevious(t, w, core); got != tc.want {
			t.Errorf("%v after the epoch: decided %q, want %q", tc.after, got, tc.want)
		}
		if n := clock.reads.Load(); n != 2 {
			t.Errorf("the engine's clock was read %d times, want 2", n)
		}
	}
}
