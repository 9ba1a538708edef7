package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

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
	// ServerCPU, if set, reads the server's CPU time, for Result.ServerCPU
	// (RunOpen; RunOpenAlternating reads each Leg's).
	ServerCPU CPUClock
	// Block is how long each server's turn lasts in RunOpenAlternating.
	Block time.Duration
	// Seed draws the order of the turns in each round of turns
	// (RunOpenAlternating); zero draws a seed.
	Seed uint64
}

// Leg is one of the servers RunOpenAlternating takes turns with.
type Leg struct {
	Target   Target
	Workload *Workload
	// ServerCPU, if set, reads the server's CPU time, for Result.ServerCPU.
	ServerCPU CPUClock
}

// RunOpen issues requests at cfg.Rate whatever the server's latency and
// measures each request's latency from its scheduled send time, so that
// time a request spent waiting to be sent counts against the server that
// kept the client busy (no coordinated omission).
func RunOpen(ctx context.Context, t Target, w *Workload, cfg OpenConfig) (*Result, error) {
	res, err := RunOpenAlternating(ctx, []Leg{{Target: t, Workload: w, ServerCPU: cfg.ServerCPU}}, cfg)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// RunOpenAlternating is an open loop that takes turns between servers:
// one schedule at cfg.Rate, whose requests go to one leg for cfg.Block,
// then to another, until each has had a turn, and so on round after
// round, warm-up included, each round's order drawn at random (see
// turnOrders). Each leg gets cfg.Warmup and cfg.Duration of turns at
// cfg.Rate, so the run lasts len(legs) times as long as RunOpen's.
//
// Two servers measured one after the other each meet whatever the
// machine was doing in their own seconds; on a shared machine that
// changes from one five-second run to the next by more than the
// difference between the servers, most of all in the tail. Short turns
// give every leg its share of the same seconds. Only one leg is sent
// requests at a time, so neither pays for the other's work, except for
// what a server does while idle (its timers, its collector), which it
// does in every run anyway.
//
// The results come in the order of legs. Each result's Elapsed is the
// time of its leg's turns, its server CPU share is the server's CPU time
// over the whole run divided by that time (so its CPU per request counts
// what it spent idle during the other legs' turns), and its client CPU
// share is the client's over the whole run.
func RunOpenAlternating(ctx context.Context, legs []Leg, cfg OpenConfig) ([]*Result, error) {
	s, err := newOpenSchedule(legs, cfg)
	if err != nil {
		return nil, err
	}
	return s.run(ctx)
}

// openSchedule is one open-loop run: request i (warm-up first) is due at
// start + i×interval and goes to leg legOf(i).
type openSchedule struct {
	legs     []Leg
	cfg      OpenConfig
	interval time.Duration
	// blockN is the requests of one turn; warmupN and total count every
	// leg's requests.
	blockN, warmupN, total int64
	// order[r] is the order in which the legs take their turns in round
	// r of turns: drawn at random for every round.
	order [][]int

	start time.Time
	// stats[k][leg] is worker k's tally for a leg; lastDone likewise.
	stats    [][]*workerStats
	lastDone [][]time.Time
}

func newOpenSchedule(legs []Leg, cfg OpenConfig) (*openSchedule, error) {
	if len(legs) == 0 {
		return nil, errors.New("open loop needs a server")
	}
	for _, l := range legs {
		if err := validate(l.Workload, cfg.MaxInFlight, cfg.Duration); err != nil {
			return nil, err
		}
	}
	if cfg.Rate <= 0 {
		return nil, errors.New("open loop needs a positive rate")
	}
	s := &openSchedule{legs: legs, cfg: cfg, interval: time.Duration(float64(time.Second) / cfg.Rate)}
	if s.interval <= 0 {
		return nil, fmt.Errorf("rate %v is too high", cfg.Rate)
	}
	n := int64(len(legs))
	warmupN := int64(cfg.Rate * cfg.Warmup.Seconds())
	measuredN := int64(cfg.Rate * cfg.Duration.Seconds())
	if measuredN < 1 {
		return nil, errors.New("open loop: rate × duration is less than one request")
	}
	s.blockN = warmupN + measuredN // one leg: a single turn
	if n > 1 {
		s.blockN = int64(cfg.Rate * cfg.Block.Seconds())
		if s.blockN < 1 || warmupN%s.blockN != 0 || measuredN%s.blockN != 0 {
			return nil, fmt.Errorf("taking turns: the warm-up (%v) and the duration (%v) must be whole numbers of turns (%v) of at least one request", cfg.Warmup, cfg.Duration, cfg.Block)
		}
	}
	s.warmupN, s.total = warmupN*n, (warmupN+measuredN)*n
	s.order = turnOrders(int(s.total/s.blockN/n), len(legs), cfg.Seed)
	return s, nil
}

// turnOrders draws, for each of rounds rounds of turns, the order in
// which n legs take them. In a fixed order, anything on the machine that
// recurs with the period of a round of turns (one second with two legs
// and turns of 500 ms: a timer, a poll, a collector triggered every so
// many requests) would fall into the same leg's turn every time, and its
// p99 alone would pay for it; the runs of hack/load.sh showed one leg's
// p99 two or three times the other's, in the same direction in every run
// of a workload. Drawn at random, it falls into each leg's turns alike.
// A zero seed draws one.
func turnOrders(rounds, n int, seed uint64) [][]int {
	if seed == 0 {
		seed = rand.Uint64() //nolint:gosec // an order of turns, not a secret
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) //nolint:gosec // seeded, so that a test can repeat it
	out := make([][]int, rounds)
	for r := range out {
		out[r] = rng.Perm(n)
	}
	return out
}

// legOf is the leg request i goes to, and its place in that leg's own
// sequence (which picks the leg's request, so that every leg goes through
// its workload in order).
func (s *openSchedule) legOf(i int64) (leg int, seq int64) {
	n := int64(len(s.legs))
	turn := i / s.blockN
	round := turn / n
	return s.order[round][turn%n], round*s.blockN + i%s.blockN
}

func (s *openSchedule) sched(i int64) time.Time { return s.start.Add(time.Duration(i) * s.interval) }

func (s *openSchedule) run(ctx context.Context) ([]*Result, error) {
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	start, tick, err := startSchedule(s.interval)
	if err != nil {
		return nil, err
	}
	s.start = start
	queue := make(chan int64, s.cfg.MaxInFlight)
	var wg sync.WaitGroup
	s.startWorkers(callCtx, queue, &wg)

	cpus := make([]cpuWindow, len(s.legs))
	for k := range s.legs {
		cpus[k].server = s.legs[k].ServerCPU
	}
	issued, pacerErr := s.pace(ctx, tick, queue, cpus)
	tick.Stop()
	close(queue)
	// Bound the wait for answers still in flight.
	timer := time.AfterFunc(callGrace, cancel)
	wg.Wait()
	timer.Stop()
	if pacerErr != nil {
		return nil, fmt.Errorf("open-loop run interrupted: %w", pacerErr)
	}
	return s.results(issued, cpus), nil
}

// startWorkers starts cfg.MaxInFlight workers, each with a caller for
// every leg, that send the requests the pacer hands out.
func (s *openSchedule) startWorkers(ctx context.Context, queue <-chan int64, wg *sync.WaitGroup) {
	s.stats = make([][]*workerStats, s.cfg.MaxInFlight)
	s.lastDone = make([][]time.Time, s.cfg.MaxInFlight)
	for k := range s.cfg.MaxInFlight {
		stats, lastDone := make([]*workerStats, len(s.legs)), make([]time.Time, len(s.legs))
		callers := make([]Caller, len(s.legs))
		for l, leg := range s.legs {
			stats[l], callers[l] = newWorkerStats(true), leg.Target.NewCaller()
		}
		s.stats[k], s.lastDone[k] = stats, lastDone
		wg.Go(func() {
			for i := range queue {
				l, seq := s.legOf(i)
				reqs := s.legs[l].Workload.Requests
				req := reqs[int(seq%int64(len(reqs)))]
				at := s.sched(i)
				sent := time.Now()
				o, err := callers[l].Call(ctx, req)
				done := time.Now()
				if i < s.warmupN {
					continue
				}
				st := stats[l]
				st.latency.Record(done.Sub(at))
				st.service.Record(done.Sub(sent))
				st.lag.Record(sent.Sub(at))
				st.observe(o, err, req.expect)
				lastDone[l] = done
			}
		})
	}
}

// pace hands out, after each wake, every request whose scheduled time has
// come. A late wake releases several at once; their latency still counts
// from their own scheduled times. It starts the CPU windows when the
// first measured request is due and returns the measured requests issued
// to each leg.
func (s *openSchedule) pace(ctx context.Context, tick ticker, queue chan<- int64, cpus []cpuWindow) ([]uint64, error) {
	issued := make([]uint64, len(s.legs))
	startCPU := func() {
		for k := range cpus {
			cpus[k].start()
		}
	}
	if s.warmupN == 0 {
		startCPU()
	}
	for next := int64(0); next < s.total; {
		due := min(s.total, int64(time.Since(s.start)/s.interval)+1)
		for ; next < due; next++ {
			select {
			case queue <- next:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if next == s.warmupN && s.warmupN > 0 {
				startCPU()
			}
			if next >= s.warmupN {
				l, _ := s.legOf(next)
				issued[l]++
			}
		}
		if next >= s.total {
			break
		}
		if err := tick.Wait(); err != nil {
			return nil, err
		}
	}
	return issued, nil
}

// results builds each leg's result once every worker has stopped.
func (s *openSchedule) results(issued []uint64, cpus []cpuWindow) []*Result {
	end := s.sched(s.total - 1)
	for _, perWorker := range s.lastDone {
		for _, d := range perWorker {
			if d.After(end) {
				end = d
			}
		}
	}
	n := time.Duration(len(s.legs))
	window := end.Sub(s.sched(s.warmupN))
	since := time.Since(s.sched(s.warmupN))
	out := make([]*Result, len(s.legs))
	for l, leg := range s.legs {
		res := &Result{
			Target: leg.Target.String(), Protocol: protocolOf(leg.Target), Workload: leg.Workload.Name, Shape: leg.Workload.Shape,
			Mode: "open", Concurrency: s.cfg.MaxInFlight, Rate: s.cfg.Rate,
			Elapsed: window / n,
			Issued:  issued[l],
		}
		cpus[l].stop(res, since, since/n)
		legStats := make([]*workerStats, len(s.stats))
		for k := range s.stats {
			legStats[k] = s.stats[k][l]
		}
		mergeStats(res, legStats)
		out[l] = res
	}
	return out
}

// ticker wakes a pacer at a fixed interval.
type ticker interface {
	Wait() error
	Stop()
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
