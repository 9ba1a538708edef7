package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Workload is a named set of prebuilt requests, sent round robin.
type Workload struct {
	Name string
	// Shape is the request shape (ShapeCompact, ShapeEnvoy).
	Shape    string
	Requests []*Request
}

// maxErrorSamples bounds the distinct error messages kept for a report.
const maxErrorSamples = 5

// callGrace is how long calls still in flight at the end of a run may take
// before they are cancelled.
const callGrace = 5 * time.Second

// Result is the outcome of one run.
type Result struct {
	Target string `json:"target"`
	// Protocol is "grpc" or "http", from the target's scheme.
	Protocol string `json:"protocol"`
	Label    string `json:"label,omitempty"`
	// Round numbers repeated runs, so that each run is compared with the
	// baseline run of the same round.
	Round    int    `json:"round,omitempty"`
	Workload string `json:"workload"`
	// Shape is the request shape (compact, envoy); empty means compact.
	Shape string `json:"shape,omitempty"`
	// Conns is the number of gRPC connections the client used.
	Conns int `json:"conns,omitempty"`
	// Mode is "closed" or "open".
	Mode string `json:"mode"`
	// Concurrency is the number of workers (closed) or the in-flight limit (open).
	Concurrency int `json:"concurrency"`
	// Rate is the requested rate of an open-loop run.
	Rate float64 `json:"rate,omitempty"`
	// Elapsed is the measured window.
	Elapsed time.Duration `json:"elapsed"`
	// Issued counts requests sent in the measured window (open loop: every
	// scheduled request).
	Issued uint64 `json:"issued"`
	// Completed counts requests that got a verdict or an error.
	Completed uint64 `json:"completed"`
	// Wrong counts verdicts that differ from the expected one.
	Wrong uint64 `json:"wrong"`
	// Errors counts requests without a verdict.
	Errors uint64 `json:"errors"`
	// ErrorSamples holds a few distinct error messages.
	ErrorSamples []string `json:"errorSamples,omitempty"`
	// Throughput is completed requests per second over the window.
	Throughput float64 `json:"throughput"`
	// Latency is the response time: from the actual send (closed loop) or
	// from the scheduled send time (open loop).
	Latency Summary `json:"latency"`
	// ServiceTime is the time from the actual send to the verdict (open loop).
	ServiceTime *Summary `json:"serviceTime,omitempty"`
	// SendLag is how late each request left after its scheduled time (open
	// loop): the client's own pacing error plus any backlog.
	SendLag *Summary `json:"sendLag,omitempty"`
	// LatencyHistogram is every latency of an open-loop run, so that the
	// table can pool runs: one run's p99 is its few slowest requests.
	LatencyHistogram *Histogram `json:"latencyHistogram,omitempty"`
	// ClientCPU is the load client's CPU time over the window divided by
	// the window: 1.0 is one core fully busy, so the client is the limit.
	ClientCPU float64 `json:"clientCPU,omitempty"`
	// ServerCPU is the same for the server, when its CPU clock was given.
	ServerCPU float64 `json:"serverCPU,omitempty"`
}

// workerStats is one worker's private tally, merged after the run.
type workerStats struct {
	latency   *Histogram
	service   *Histogram
	lag       *Histogram
	completed uint64
	wrong     uint64
	errors    uint64
	samples   []string
}

func newWorkerStats(open bool) *workerStats {
	s := &workerStats{latency: NewHistogram()}
	if open {
		s.service, s.lag = NewHistogram(), NewHistogram()
	}
	return s
}

func (s *workerStats) observe(o Outcome, err error, want Expect) {
	s.completed++
	switch {
	case err != nil:
		s.errors++
		if len(s.samples) < maxErrorSamples {
			s.samples = append(s.samples, err.Error())
		}
	case !want.Matches(o):
		s.wrong++
	}
}

func mergeStats(r *Result, all []*workerStats) {
	lat, svc, lag := NewHistogram(), NewHistogram(), NewHistogram()
	seen := map[string]bool{}
	for _, s := range all {
		lat.Merge(s.latency)
		if s.service != nil {
			svc.Merge(s.service)
			lag.Merge(s.lag)
		}
		r.Completed += s.completed
		r.Wrong += s.wrong
		r.Errors += s.errors
		for _, e := range s.samples {
			if !seen[e] && len(r.ErrorSamples) < maxErrorSamples {
				seen[e] = true
				r.ErrorSamples = append(r.ErrorSamples, e)
			}
		}
	}
	r.Latency = lat.Summary()
	if svc.Count() > 0 {
		s, l := svc.Summary(), lag.Summary()
		r.ServiceTime, r.SendLag, r.LatencyHistogram = &s, &l, lat
	}
	if r.Elapsed > 0 {
		r.Throughput = float64(r.Completed) / r.Elapsed.Seconds()
	}
}

// ClosedConfig configures a closed-loop run.
type ClosedConfig struct {
	// Concurrency is the number of workers, each with one request in flight.
	Concurrency int
	// Warmup runs before the measured window and is not recorded.
	Warmup time.Duration
	// Duration is the measured window.
	Duration time.Duration
	// ServerCPU, if set, reads the server's CPU time, for Result.ServerCPU.
	ServerCPU CPUClock
}

// RunClosed keeps cfg.Concurrency requests in flight, each worker sending
// its next request as soon as the previous one is answered, and measures the
// saturation throughput and the latency of every call completed inside the
// measured window.
func RunClosed(ctx context.Context, t Target, w *Workload, cfg ClosedConfig) (*Result, error) {
	if err := validate(w, cfg.Concurrency, cfg.Duration); err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, cfg.Warmup+cfg.Duration+callGrace)
	defer cancel()

	var recording, stopping atomic.Bool
	stats := make([]*workerStats, cfg.Concurrency)
	var issued atomic.Uint64
	var wg sync.WaitGroup
	for i := range cfg.Concurrency {
		s := newWorkerStats(false)
		stats[i] = s
		caller := t.NewCaller()
		wg.Go(func() {
			n := len(w.Requests)
			for j := i % n; !stopping.Load() && callCtx.Err() == nil; j = (j + 1) % n {
				req := w.Requests[j]
				rec := recording.Load()
				start := time.Now()
				o, err := caller.Call(callCtx, req)
				end := time.Now()
				if !rec || !recording.Load() {
					continue // started or finished outside the window
				}
				issued.Add(1)
				s.latency.Record(end.Sub(start))
				s.observe(o, err, req.expect)
			}
		})
	}

	var res *Result
	cpu := cpuWindow{server: cfg.ServerCPU}
	if sleepCtx(ctx, cfg.Warmup) {
		cpu.start()
		recording.Store(true)
		begin := time.Now()
		sleepCtx(ctx, cfg.Duration)
		recording.Store(false)
		res = &Result{Elapsed: time.Since(begin)}
		cpu.stop(res, res.Elapsed, res.Elapsed)
	}
	stopping.Store(true)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("closed-loop run interrupted: %w", err)
	}
	res.Target, res.Protocol, res.Workload, res.Shape, res.Mode, res.Concurrency = t.String(), protocolOf(t), w.Name, w.Shape, "closed", cfg.Concurrency
	mergeStats(res, stats)
	res.Issued = issued.Load()
	return res, nil
}

func validate(w *Workload, workers int, d time.Duration) error {
	if w == nil || len(w.Requests) == 0 {
		return errors.New("workload has no requests")
	}
	if workers < 1 {
		return errors.New("need at least one worker")
	}
	if d <= 0 {
		return errors.New("duration must be positive")
	}
	return nil
}

// sleepCtx sleeps for d and reports whether it did so without ctx ending.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// protocolOf names the protocol a target speaks.
func protocolOf(t Target) string {
	if _, ok := t.(*HTTPTarget); ok {
		return "http"
	}
	return "grpc"
}
