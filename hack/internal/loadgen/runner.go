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

// ticker wakes a pacer at a fixed interval.
type ticker interface {
	Wait() error
	Stop()
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
		r.ServiceTime, r.SendLag = &s, &l
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
		cpu.stop(res, res.Elapsed)
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

// OpenConfig configures an open-loop run.
type OpenConfig struct {
	// Rate is the number of requests per second to issue.
	Rate float64
	// MaxInFlight bounds the requests outstanding at once. When every slot
	// is busy, later requests leave late and their lateness counts in
	// their latency.
	MaxInFlight int
	// Warmup is issued at the same rate before the measured window and
	// not recorded.
	Warmup time.Duration
	// Duration is the measured window; Rate*Duration requests are issued
	// in it.
	Duration time.Duration
	// ServerCPU, if set, reads the server's CPU time, for Result.ServerCPU.
	ServerCPU CPUClock
}

// RunOpen issues requests at cfg.Rate whatever the server's latency and
// measures each request's latency from its scheduled send time, so that
// time a request spent waiting to be sent counts against the server that
// kept the client busy (no coordinated omission).
func RunOpen(ctx context.Context, t Target, w *Workload, cfg OpenConfig) (*Result, error) {
	if err := validate(w, cfg.MaxInFlight, cfg.Duration); err != nil {
		return nil, err
	}
	if cfg.Rate <= 0 {
		return nil, errors.New("open loop needs a positive rate")
	}
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	if interval <= 0 {
		return nil, fmt.Errorf("rate %v is too high", cfg.Rate)
	}
	warmupN := int64(cfg.Rate * cfg.Warmup.Seconds())
	measuredN := int64(cfg.Rate * cfg.Duration.Seconds())
	if measuredN < 1 {
		return nil, errors.New("open loop: rate × duration is less than one request")
	}
	total := warmupN + measuredN

	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	start, tick, err := startSchedule(interval)
	if err != nil {
		return nil, err
	}
	sched := func(i int64) time.Time { return start.Add(time.Duration(i) * interval) }
	queue := make(chan int64, cfg.MaxInFlight)
	stats := make([]*workerStats, cfg.MaxInFlight)
	lastDone := make([]time.Time, cfg.MaxInFlight)
	var wg sync.WaitGroup
	for k := range cfg.MaxInFlight {
		s := newWorkerStats(true)
		stats[k] = s
		caller := t.NewCaller()
		wg.Go(func() {
			for i := range queue {
				req := w.Requests[int(i)%len(w.Requests)]
				at := sched(i)
				sent := time.Now()
				o, err := caller.Call(callCtx, req)
				done := time.Now()
				if i < warmupN {
					continue
				}
				s.latency.Record(done.Sub(at))
				s.service.Record(done.Sub(sent))
				s.lag.Record(sent.Sub(at))
				s.observe(o, err, req.expect)
				lastDone[k] = done
			}
		})
	}

	// The pacer: after each wake, hand out every request whose scheduled
	// time has come. A late wake releases several at once; their latency
	// still counts from their own scheduled times.
	var issued int64
	var pacerErr error
	cpu := cpuWindow{server: cfg.ServerCPU}
	if warmupN == 0 {
		cpu.start()
	}
	for next := int64(0); next < total; {
		due := min(total, int64(time.Since(start)/interval)+1)
		for ; next < due; next++ {
			select {
			case queue <- next:
			case <-ctx.Done():
				pacerErr = ctx.Err()
			}
			if pacerErr != nil {
				break
			}
			if next == warmupN && warmupN > 0 {
				cpu.start()
			}
			if next >= warmupN {
				issued++
			}
		}
		if pacerErr != nil || next >= total {
			break
		}
		if err := tick.Wait(); err != nil {
			pacerErr = err
			break
		}
	}
	tick.Stop()
	close(queue)
	// Bound the wait for answers still in flight.
	timer := time.AfterFunc(callGrace, cancel)
	wg.Wait()
	timer.Stop()
	if pacerErr != nil {
		return nil, fmt.Errorf("open-loop run interrupted: %w", pacerErr)
	}

	end := sched(total - 1)
	for _, d := range lastDone {
		if d.After(end) {
			end = d
		}
	}
	res := &Result{
		Target: t.String(), Protocol: protocolOf(t), Workload: w.Name, Shape: w.Shape, Mode: "open",
		Concurrency: cfg.MaxInFlight, Rate: cfg.Rate,
		Elapsed: end.Sub(sched(warmupN)),
		Issued:  uint64(issued),
	}
	cpu.stop(res, time.Since(sched(warmupN)))
	mergeStats(res, stats)
	return res, nil
}

// startSchedule takes the open loop's time origin and only then arms the
// ticker, so that its k-th wake (k ≥ 1) never comes before the k-th
// request's scheduled time, start + k × interval: timers fire late, never
// early, and the pacer releases every request due at a wake. Armed before
// the origin was taken, the ticker ran ahead of the schedule by the time
// between the two (the timerfd's registration with the poller, a few to
// tens of microseconds); every wake that came sooner than that after its
// expiry found its request not yet due and left it to the next wake, one
// interval later: up to 1 ms of latency at 1,000 requests/s that the
// server never caused, for a share of the requests that changed from run
// to run.
func startSchedule(interval time.Duration) (time.Time, ticker, error) {
	start := time.Now()
	tick, err := newTicker(interval)
	if err != nil {
		return time.Time{}, nil, err
	}
	return start, tick, nil
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
