package loadgen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
)

// keyServer allows x-api-key "good", denies a missing or other key with 401,
// fails the RPC for "boom", and sleeps for "slow".
type keyServer struct {
	authv3.UnimplementedAuthorizationServer
	delay time.Duration
}

func (s keyServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	switch req.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-api-key"] {
	case "good":
		return okResponse, nil
	case "boom":
		return nil, grpcstatus.Error(codes.Internal, "internal failure")
	case "slow":
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return okResponse, nil
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(codes.Unauthenticated)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
		}},
	}, nil
}

// startGRPC serves srv on a loopback port for the duration of the test.
func startGRPC(t testing.TB, srv authv3.AuthorizationServer) *GRPCTarget {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	target, err := DialGRPC(lis.Addr().String(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = target.Close()
		gs.Stop()
		<-done
	})
	return target
}

func workload(t *testing.T, key string, want Expect) *Workload {
	t.Helper()
	h := map[string]string{}
	if key != "" {
		h["x-api-key"] = key
	}
	r, err := NewRequest("GET", "app.test", "/api/orders", h, want)
	if err != nil {
		t.Fatal(err)
	}
	return &Workload{Name: "test", Requests: []*Request{r}}
}

var quickClosed = ClosedConfig{Concurrency: 4, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond}

func TestClosedLoopCountsEveryVerdictAsRightOrWrong(t *testing.T) {
	target := startGRPC(t, keyServer{})
	cases := []struct {
		name      string
		key       string
		want      Expect
		wantWrong bool
	}{
		{"valid keys expected to pass", "good", Expect{Allow: true}, false},
		{"missing keys expected to get 401", "", Expect{Status: 401}, false},
		{"valid keys wrongly expected to be denied", "good", Expect{Status: 401}, true},
		{"missing keys wrongly expected to pass", "", Expect{Allow: true}, true},
		{"missing keys expected to get the wrong deny status", "", Expect{Status: 403}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := RunClosed(t.Context(), target, workload(t, tc.key, tc.want), quickClosed)
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed == 0 {
				t.Fatal("no request completed")
			}
			if res.Errors != 0 {
				t.Errorf("%d errors: %v", res.Errors, res.ErrorSamples)
			}
			wantWrong := uint64(0)
			if tc.wantWrong {
				wantWrong = res.Completed
			}
			if res.Wrong != wantWrong {
				t.Errorf("wrong = %d of %d completed, want %d", res.Wrong, res.Completed, wantWrong)
			}
			if res.Latency.Count != res.Completed || res.Issued != res.Completed {
				t.Errorf("latency count %d, issued %d, completed %d: all must agree", res.Latency.Count, res.Issued, res.Completed)
			}
			if res.Throughput <= 0 || res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 || res.Latency.Max < res.Latency.P99 {
				t.Errorf("implausible figures: %+v", res)
			}
		})
	}
}

func TestClosedLoopCountsFailedCallsAsErrorsWithSamples(t *testing.T) {
	target := startGRPC(t, keyServer{})
	res, err := RunClosed(t.Context(), target, workload(t, "boom", Expect{Allow: true}), quickClosed)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed == 0 || res.Errors != res.Completed || res.Wrong != 0 {
		t.Errorf("completed %d errors %d wrong %d: every call must count as an error, none as a verdict", res.Completed, res.Errors, res.Wrong)
	}
	if len(res.ErrorSamples) != 1 {
		t.Errorf("error samples %q: want the one distinct message", res.ErrorSamples)
	}
}

func TestClosedLoopReportsAnUnreachableServerAsErrors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	target, err := DialGRPC(addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	res, err := RunClosed(t.Context(), target, workload(t, "good", Expect{Allow: true}), ClosedConfig{Concurrency: 1, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Errors != res.Completed {
		t.Errorf("errors %d of %d completed, want all", res.Errors, res.Completed)
	}
}

func TestOpenLoopIssuesExactlyTheRequestedNumberOfRequestsAtTheRequestedPace(t *testing.T) {
	target := startGRPC(t, OKServer{})
	cfg := OpenConfig{Rate: 2000, MaxInFlight: 8, Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond}
	res, err := RunOpen(t.Context(), target, workload(t, "good", Expect{Allow: true}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	const want = 1000 // 2000/s × 0.5 s; the 200 warm-up requests are not counted
	if res.Issued != want || res.Completed != want || res.Latency.Count != want {
		t.Errorf("issued %d, completed %d, recorded %d: want exactly %d each", res.Issued, res.Completed, res.Latency.Count, want)
	}
	if res.Wrong != 0 || res.Errors != 0 {
		t.Errorf("wrong %d errors %d, want none", res.Wrong, res.Errors)
	}
	// The last request is scheduled 999 intervals after the first measured
	// one: the run cannot be shorter, whatever the machine's speed.
	if minElapsed := 999 * (time.Second / 2000); res.Elapsed < minElapsed {
		t.Errorf("elapsed %v < %v: the pacer issued faster than the rate", res.Elapsed, minElapsed)
	}
	if res.ServiceTime == nil || res.SendLag == nil || res.ServiceTime.Count != want {
		t.Fatalf("open loop must report service time and send lag for every request: %+v", res)
	}
}

func TestOpenLoopChargesQueueingDelayToTheServer(t *testing.T) {
	// One slot, a server taking 20 ms, requests every 5 ms: each request
	// waits for all earlier ones, so request i leaves at least i×20 ms
	// after the first while it was scheduled at i×5 ms.
	const delay, n = 20 * time.Millisecond, 20
	target := startGRPC(t, keyServer{delay: delay})
	cfg := OpenConfig{Rate: 200, MaxInFlight: 1, Duration: n * 5 * time.Millisecond}
	res, err := RunOpen(t.Context(), target, workload(t, "slow", Expect{Allow: true}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != n {
		t.Fatalf("completed %d, want %d", res.Completed, n)
	}
	minLast := time.Duration(n-1)*(delay-5*time.Millisecond) + delay
	if res.Latency.Max < minLast {
		t.Errorf("max latency %v < %v: latency must count from the scheduled send time", res.Latency.Max, minLast)
	}
	if res.ServiceTime.P50 >= minLast/2 {
		t.Errorf("median service time %v should be near the server's %v, not include the queueing", res.ServiceTime.P50, delay)
	}
}

func TestOpenLoopStopsWhenTheContextIsCancelled(t *testing.T) {
	target := startGRPC(t, OKServer{})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := RunOpen(ctx, target, workload(t, "good", Expect{Allow: true}), OpenConfig{Rate: 100, MaxInFlight: 1, Duration: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's deadline", err)
	}
}

func TestHTTPTargetSendsTheOriginalRequestAndReadsStatusesAsVerdicts(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Host+" "+r.URL.RequestURI())
		mu.Unlock()
		switch r.Header.Get("x-api-key") {
		case "good":
			w.WriteHeader(http.StatusOK)
		case "boom":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set("WWW-Authenticate", "ApiKey")
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	target := NewHTTPTarget(srv.URL, 4)
	defer target.Close()

	cfg := ClosedConfig{Concurrency: 2, Duration: 100 * time.Millisecond}
	for _, tc := range []struct {
		key               string
		want              Expect
		wrong, errorsWant bool
	}{
		{"good", Expect{Allow: true}, false, false},
		{"", Expect{Status: 401}, false, false},
		{"", Expect{Allow: true}, true, false},
		{"boom", Expect{Allow: true}, false, true},
	} {
		res, err := RunClosed(t.Context(), target, workload(t, tc.key, tc.want), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Completed == 0 {
			t.Fatalf("key %q: nothing completed", tc.key)
		}
		if got := res.Wrong == res.Completed; got != tc.wrong || (!tc.wrong && res.Wrong != 0) {
			t.Errorf("key %q expecting %v: wrong %d of %d", tc.key, tc.want, res.Wrong, res.Completed)
		}
		if got := res.Errors == res.Completed; got != tc.errorsWant || (!tc.errorsWant && res.Errors != 0) {
			t.Errorf("key %q: errors %d of %d (a 5xx is an error, not a verdict)", tc.key, res.Errors, res.Completed)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[0] != "GET app.test /api/orders" {
		t.Errorf("server saw %q first, want the original method, host and path", seen[:min(1, len(seen))])
	}
}

func TestRunnersRejectEmptyWorkloadsAndBadSettings(t *testing.T) {
	target := startGRPC(t, OKServer{})
	w := workload(t, "good", Expect{Allow: true})
	if _, err := RunClosed(t.Context(), target, &Workload{}, quickClosed); err == nil {
		t.Error("an empty workload ran")
	}
	if _, err := RunClosed(t.Context(), target, w, ClosedConfig{Duration: time.Second}); err == nil {
		t.Error("zero workers ran")
	}
	if _, err := RunOpen(t.Context(), target, w, OpenConfig{MaxInFlight: 1, Duration: time.Second}); err == nil {
		t.Error("an open loop without a rate ran")
	}
}

func TestRunsReportTheCPUShareOfTheClientAndTheServer(t *testing.T) {
	target := startGRPC(t, OKServer{})
	w := workload(t, "good", Expect{Allow: true})
	// The server runs in this process, so its clock is this process's.
	self := ProcessCPU(os.Getpid())
	closed, err := RunClosed(t.Context(), target, w, ClosedConfig{Concurrency: 4, Duration: 300 * time.Millisecond, ServerCPU: self})
	if err != nil {
		t.Fatal(err)
	}
	open, err := RunOpen(t.Context(), target, w, OpenConfig{Rate: 2000, MaxInFlight: 4, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, ServerCPU: self})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Result{closed, open} {
		if r.ClientCPU <= 0 || r.ServerCPU <= 0 {
			t.Errorf("%s loop: client cpu %.2f, server cpu %.2f: both must be measured", r.Mode, r.ClientCPU, r.ServerCPU)
		}
	}
}

// The open loop's pacer releases, at each wake, every request whose
// scheduled time has come. Its wakes must therefore never come before the
// schedule: a wake a little early finds its own request not yet due and
// leaves it to the next wake, one interval late, which the run charges to
// the server.
func TestPacerWakesNeverComeBeforeTheirScheduledTimes(t *testing.T) {
	const interval = 200 * time.Microsecond
	start, tick, err := startSchedule(interval)
	if err != nil {
		t.Fatal(err)
	}
	defer tick.Stop()
	for k := 1; k <= 500; k++ {
		if err := tick.Wait(); err != nil {
			t.Fatal(err)
		}
		// A late wake may stand for several expirations; then even more
		// time has passed than k intervals.
		if early := time.Duration(k)*interval - time.Since(start); early > 0 {
			t.Fatalf("wake %d came %v before request %d's scheduled time", k, early, k)
		}
	}
}
