package loadgen

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// arrivals records, across servers, the x-api-key of every check in the
// order the servers received them.
type arrivals struct {
	mu   sync.Mutex
	keys []string
}

// recordingServer allows every check and records its key in log.
type recordingServer struct {
	authv3.UnimplementedAuthorizationServer
	log *arrivals
}

func (s recordingServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.log.mu.Lock()
	s.log.keys = append(s.log.keys, req.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-api-key"])
	s.log.mu.Unlock()
	return okResponse, nil
}

// numberedWorkload has n requests with keys prefix-0 … prefix-(n-1).
func numberedWorkload(t *testing.T, prefix string, n int) *Workload {
	t.Helper()
	w := &Workload{Name: prefix}
	for i := range n {
		r, err := NewRequest("GET", "app.test", "/", map[string]string{"x-api-key": fmt.Sprintf("%s-%d", prefix, i)}, Expect{Allow: true})
		if err != nil {
			t.Fatal(err)
		}
		w.Requests = append(w.Requests, r)
	}
	return w
}

func TestOpenLoopTakingTurnsGivesEachServerItsOwnTurnsAndItsWholeWorkload(t *testing.T) {
	log := &arrivals{}
	a, b := startGRPC(t, recordingServer{log: log}), startGRPC(t, recordingServer{log: log})
	// 2,000/s in turns of 50 ms: 100 requests a turn; 100 ms of warm-up
	// and 300 ms measured per server: 8 turns each, 16 in all.
	const perTurn, measured, total = 100, 600, 800
	const maxInFlight = 8
	cfg := OpenConfig{Rate: 2000, MaxInFlight: maxInFlight, Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond, Block: 50 * time.Millisecond}
	// Each workload is two turns long: a leg that picked its requests by
	// the run's request number would only ever send the first half.
	legs := []Leg{{Target: a, Workload: numberedWorkload(t, "a", 2*perTurn)}, {Target: b, Workload: numberedWorkload(t, "b", 2*perTurn)}}
	res, err := RunOpenAlternating(t.Context(), legs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for l, r := range res {
		if r.Issued != measured || r.Completed != measured || r.Latency.Count != measured || r.Wrong != 0 || r.Errors != 0 {
			t.Errorf("leg %d: issued %d, completed %d, recorded %d, wrong %d, errors %d: want %d measured, none wrong", l,
				r.Issued, r.Completed, r.Latency.Count, r.Wrong, r.Errors, measured)
		}
		if r.Workload != legs[l].Workload.Name || r.Target != legs[l].Target.String() {
			t.Errorf("result %d is of %s at %s, want the legs' order", l, r.Workload, r.Target)
		}
		// A leg's time is its own turns: half the run.
		if minElapsed := (measured - 1) * (time.Second / 2000); r.Elapsed < minElapsed {
			t.Errorf("leg %d elapsed %v < %v", l, r.Elapsed, minElapsed)
		}
	}

	log.mu.Lock()
	keys := append([]string(nil), log.keys...)
	log.mu.Unlock()
	if len(keys) != 2*total {
		t.Fatalf("the servers saw %d checks, want %d", len(keys), 2*total)
	}
	// Turns: in every round of turns each server has one, in an order
	// drawn for the round, so one server gets at most two turns in a row
	// (the last of a round and the first of the next). Requests in flight
	// at a turn's end may arrive after the next turn's first ones, so a
	// run of one server's checks may grow by what was in flight.
	used := map[string]int{}
	switches, longest, run := 0, 0, 0
	for i, k := range keys {
		used[k]++
		if i > 0 && k[0] != keys[i-1][0] {
			switches++
			run = 0
		}
		run++
		longest = max(longest, run)
	}
	if rounds := total / perTurn; switches < rounds {
		t.Errorf("%d switches between the servers, want at least one in each of the %d rounds of turns", switches, rounds)
	}
	if longest > 2*perTurn+maxInFlight {
		t.Errorf("one server got %d checks in a row, more than two turns (%d) and what was in flight (%d)", longest, 2*perTurn, maxInFlight)
	}
	// Each leg went through its whole workload, in its own order: every
	// one of its 200 requests, 800/200 = 4 times.
	for _, prefix := range []string{"a", "b"} {
		for i := range 2 * perTurn {
			if k := fmt.Sprintf("%s-%d", prefix, i); used[k] != total/(2*perTurn) {
				t.Fatalf("request %s sent %d times, want %d", k, used[k], total/(2*perTurn))
			}
		}
	}
}

func TestOpenLoopTakingTurnsRefusesADurationThatIsNotWholeTurns(t *testing.T) {
	target := startGRPC(t, OKServer{})
	w := workload(t, "good", Expect{Allow: true})
	legs := []Leg{{Target: target, Workload: w}, {Target: target, Workload: w}}
	for _, cfg := range []OpenConfig{
		{Rate: 1000, MaxInFlight: 1, Duration: time.Second, Block: 300 * time.Millisecond},
		{Rate: 1000, MaxInFlight: 1, Warmup: 250 * time.Millisecond, Duration: time.Second, Block: 500 * time.Millisecond},
		{Rate: 1000, MaxInFlight: 1, Duration: time.Second},
	} {
		_, err := RunOpenAlternating(t.Context(), legs, cfg)
		if err == nil || !strings.Contains(err.Error(), "whole numbers of turns") {
			t.Errorf("%+v: err = %v, want a refusal", cfg, err)
		}
	}
}

// A fixed order of turns would put anything that recurs once a round of
// turns into the same server's turn every time; the order is drawn for
// every round, from the seed.
func TestTurnOrdersAreDrawnForEveryRound(t *testing.T) {
	orders := turnOrders(200, 2, 42)
	first := map[int]int{}
	for r, o := range orders {
		if len(o) != 2 || o[0] == o[1] || o[0] < 0 || o[0] > 1 || o[1] < 0 || o[1] > 1 {
			t.Fatalf("round %d: order %v is not an order of both legs", r, o)
		}
		first[o[0]]++
	}
	// 200 fair draws: each leg goes first 100 ± 40 times unless the
	// draw is not random (a 1-in-10^8 event).
	if first[0] < 60 || first[1] < 60 {
		t.Errorf("leg 0 went first %d times, leg 1 %d times, in 200 rounds", first[0], first[1])
	}
	again := turnOrders(200, 2, 42)
	for r := range orders {
		if orders[r][0] != again[r][0] {
			t.Fatalf("the same seed drew another order in round %d", r)
		}
	}
}
