// Package framework is the one way tests start a controller-runtime
// manager and wait for a condition: StartManager, Eventually (which prints
// the last state it saw on timeout) and Poll, its form for code that
// returns errors (the demo and the stack). It starts no API server
// (test/testenv does), so unit tests use it too.
package framework

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// PollInterval is how often Eventually and Poll check their condition.
const PollInterval = 10 * time.Millisecond

// managerStartTimeout bounds the wait for a manager's caches, and for its
// stop at the end of the test.
const managerStartTimeout = 30 * time.Second

// StartManager starts mgr for the rest of the test: in a goroutine bound
// to a context cancelled when the test ends (the cleanup waits for the
// manager to stop). It returns once the manager's caches have synced, and
// fails the test if the manager does not start, or returns an error at any
// time.
func StartManager(t testing.TB, mgr manager.Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(managerStartTimeout):
			t.Error("the manager did not stop within 30s")
		}
	})
	syncCtx, stopSync := context.WithTimeout(ctx, managerStartTimeout)
	defer stopSync()
	synced := make(chan bool, 1)
	go func() { synced <- mgr.GetCache().WaitForCacheSync(syncCtx) }()
	select {
	case <-done:
		t.Fatal("the manager stopped before its caches synced")
	case ok := <-synced:
		if !ok {
			t.Fatal("the manager's caches did not sync within 30s")
		}
	}
}

// Eventually checks cond every PollInterval until it reports ok, and fails
// the test if that takes longer than timeout, naming what it waited for
// and the last state cond described.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() (ok bool, state string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Poll(ctx, what, cond); err != nil {
		t.Fatal(err)
	}
}

// Poll is Eventually for code that returns errors instead of failing a
// test (the demo, the stack): it checks cond every PollInterval until it
// reports ok, or returns an error naming what it waited for and the last
// state cond described once ctx ends.
func Poll(ctx context.Context, what string, cond func() (ok bool, state string)) error {
	ticker := time.NewTicker(PollInterval)
	defer ticker.Stop()
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s (last state: %s): %w", what, state, ctx.Err())
		case <-ticker.C:
		}
	}
}

// NoError adapts a condition that returns an error (nil when it holds) to
// Eventually and Poll: the last error is the state they print.
func NoError(cond func() error) func() (ok bool, state string) {
	return func() (bool, string) {
		if err := cond(); err != nil {
			return false, err.Error()
		}
		return true, ""
	}
}
