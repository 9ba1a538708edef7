package xdssim

import (
	"context"
	"fmt"
	"sync"
	"time"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
)

// maxViolations bounds the violations a fleet keeps; the rest are counted.
const maxViolations = 1000

// Fleet is a set of simulated sidecars.
type Fleet struct {
	sidecars []*Sidecar
	started  time.Time
	wg       sync.WaitGroup

	mu         sync.Mutex
	violations []string
	more       int
}

// NewFleet makes n sidecars, sidecar i connecting to target(i).
func NewFleet(n int, target func(i int) Target) *Fleet {
	f := &Fleet{sidecars: make([]*Sidecar, n)}
	for i := range f.sidecars {
		f.sidecars[i] = newSidecar(i, target(i), f.report)
	}
	return f
}

func (f *Fleet) report(v string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.violations) < maxViolations {
		f.violations = append(f.violations, v)
	} else {
		f.more++
	}
}

// Len is the number of sidecars.
func (f *Fleet) Len() int { return len(f.sidecars) }

// Sidecar is sidecar i.
func (f *Fleet) Sidecar(i int) *Sidecar { return f.sidecars[i] }

// Start starts every sidecar at once, each on a connection of its own,
// and returns; they run until ctx ends (Wait waits for that).
func (f *Fleet) Start(ctx context.Context) {
	f.started = time.Now()
	for _, s := range f.sidecars {
		f.wg.Go(func() { s.run(ctx) })
	}
}

// Wait waits until every sidecar has stopped, after Start's ctx ended.
func (f *Fleet) Wait() { f.wg.Wait() }

// Violations are the violations recorded so far (the first 1,000, and a
// count of the others); they name sidecars, types and resources, never
// values.
func (f *Fleet) Violations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.violations...)
	if f.more > 0 {
		out = append(out, fmt.Sprintf("and %d more", f.more))
	}
	return out
}

// readyPoll is how often WaitReady asks each sidecar.
const readyPoll = 10 * time.Millisecond

// WaitReady waits until ready holds for every sidecar, and returns the
// time from Start until the last became ready. A sidecar's time is that of
// the last response it applied before the poll (every 10 ms) that found
// it ready: its state changes only when it applies one.
func (f *Fleet) WaitReady(ctx context.Context, ready func(s *Sidecar) bool) (time.Duration, error) {
	pending := make(map[*Sidecar]bool, len(f.sidecars))
	for _, s := range f.sidecars {
		pending[s] = true
	}
	var last time.Time
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		for s := range pending {
			if ready(s) {
				last = later(last, s.lastApplied())
				delete(pending, s)
			}
		}
		if len(pending) == 0 {
			return last.Sub(f.started), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d sidecars not ready: %w", len(pending), len(f.sidecars), ctx.Err())
		case <-t.C:
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// WaitAll waits until, on every sidecar, the API key entry name satisfies
// cond (given nil while the entry is absent; it must not change the
// entry), and returns for each sidecar the time it applied the response
// with which the entry first did (or when WaitAll was called, for a
// sidecar where it already did). When ctx ends first it returns the times
// it has (zero for the others) and an error.
func (f *Fleet) WaitAll(ctx context.Context, name string, cond func(*xdsv1alpha1.APIKeyEntry) bool) ([]time.Time, error) {
	waiters := make([]*waiter, len(f.sidecars))
	for i, s := range f.sidecars {
		waiters[i] = &waiter{name: name, cond: cond, done: make(chan struct{})}
		s.watch(waiters[i])
	}
	times := make([]time.Time, len(f.sidecars))
	missing := 0
	for i, w := range waiters {
		select {
		case <-w.done:
			times[i] = w.at
		case <-ctx.Done():
			f.sidecars[i].unwatch(w)
			select {
			case <-w.done: // settled meanwhile
				times[i] = w.at
			default:
				missing++
			}
		}
	}
	if missing > 0 {
		return times, fmt.Errorf("%s: %d of %d sidecars never saw the condition: %w", name, missing, len(f.sidecars), ctx.Err())
	}
	return times, nil
}
