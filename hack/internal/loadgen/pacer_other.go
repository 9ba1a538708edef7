//go:build !linux

package loadgen

import "time"

// stdTicker wakes through a time.Ticker, as precise as the Go runtime's
// timers on this platform.
type stdTicker struct{ t *time.Ticker }

func newTicker(interval time.Duration) (ticker, error) {
	return &stdTicker{t: time.NewTicker(interval)}, nil
}

func (t *stdTicker) Wait() error { <-t.t.C; return nil }

func (t *stdTicker) Stop() { t.t.Stop() }
