// Command loadgen is Gatehouse's ext_authz load client.
//
//	loadgen fixtures --out DIR [--keys 100000] [--tokens 16]
//	    write a files-source config dir (DIR/config) and the client's
//	    credentials (DIR/credentials.json, mode 0600)
//	loadgen run --target grpc://127.0.0.1:9001 --credentials DIR/credentials.json \
//	    --workload apikey|jwt-cached|deny|expired-jwt|jwt-uncached-es256|jwt-uncached-rs256 \
//	    --shape compact|envoy --mode closed|open [--expect-allow] [flags]
//	    drive a server and check every verdict; one summary line on stdout,
//	    the full result appended as JSON to --results; with --mode open
//	    --baseline-target URL [--baseline-pid PID] [--block 1ms], take
//	    turns between the baseline and --target and report both
//	loadgen table --results FILE [--baseline baseline] [--verification FILE]
//	    print a Markdown table with ratios to the baseline runs (and,
//	    given BenchmarkOneVerification's output, the uncached-token
//	    workloads' excess in verifications)
//	loadgen xds --config DIR/config --credentials DIR/credentials.json --out DIR/xds \
//	    [--listen 127.0.0.1:19301] [--churn 10]
//	    serve the fixtures over delta xDS with the operator's server, for a
//	    sidecar with --source=xds (DIR/xds receives ca.pem and the token);
//	    SIGUSR1 starts changing --churn keys a second (never the client's),
//	    SIGUSR2 stops and prints "churn: N changes in S s"
//
// The exit status of run is 1 when any verdict was wrong or any request
// failed. Credentials are held in memory and never printed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"gatehouse.dev/gatehouse/hack/internal/loadgen"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: loadgen fixtures|run|table|xds [flags]")
	}
	switch args[0] {
	case "fixtures":
		return fixtures(args[1:])
	case "run":
		return runLoad(args[1:])
	case "table":
		return table(args[1:])
	case "xds":
		return serveXDS(args[1:])
	default:
		return fmt.Errorf("unknown command %q: want fixtures, run, table or xds", args[0])
	}
}

func fixtures(args []string) error {
	fs := flag.NewFlagSet("fixtures", flag.ContinueOnError)
	var o loadgen.FixtureOptions
	fs.StringVar(&o.Dir, "out", "", "output directory (required)")
	fs.StringVar(&o.Namespace, "namespace", "loadtest", "namespace of the objects")
	fs.IntVar(&o.Keys, "keys", 1000, "API key records to write")
	fs.IntVar(&o.ClientKeys, "client-keys", 1000, "how many of the keys the client gets")
	fs.IntVar(&o.Tokens, "tokens", 16, "JWTs to mint")
	fs.DurationVar(&o.TokenLifetime, "token-lifetime", 2*time.Hour, "lifetime of the JWTs")
	fs.IntVar(&o.ObjectsPerFile, "objects-per-file", 1000, "YAML documents per file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	creds, err := loadgen.WriteFixtures(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %d records, a JWKS and a policy to %s/%s and %s to %s/%s in %v\n",
		o.Keys, o.Dir, loadgen.ConfigDirName, creds, o.Dir, loadgen.CredentialsFileName, time.Since(start).Round(time.Millisecond))
	return nil
}

func runLoad(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	target := fs.String("target", "grpc://127.0.0.1:9001", "grpc://host:port or http://host:port")
	credsPath := fs.String("credentials", "", "credentials file written by `loadgen fixtures` (required)")
	workload := fs.String("workload", loadgen.WorkloadAPIKey, "workload: "+strings.Join(loadgen.WorkloadNames, ", "))
	distinct := fs.Int("distinct", 0, "distinct credentials to cycle through (0: workload default)")
	shape := fs.String("shape", loadgen.ShapeCompact, "request shape: "+strings.Join(loadgen.Shapes, ", "))
	expectAllow := fs.Bool("expect-allow", false, "expect every request to be allowed whatever the workload (the baseline allows everything)")
	mode := fs.String("mode", "closed", "closed (saturation) or open (fixed rate)")
	concurrency := fs.Int("concurrency", 32, "closed loop: workers; open loop: max requests in flight")
	conns := fs.Int("conns", 2, "gRPC connections")
	rate := fs.Float64("rate", 1000, "open loop: requests per second")
	duration := fs.Duration("duration", 10*time.Second, "measured duration")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured warm-up before the measured duration")
	label := fs.String("label", "", "label of this run in the results (e.g. baseline, sidecar)")
	round := fs.Int("round", 0, "round number of this run, to pair it with the baseline run of the same round")
	results := fs.String("results", "", "append the result as a JSON line to this file")
	serverPID := fs.Int("server-pid", 0, "pid of the server, to report its CPU share over the run (Linux /proc)")
	baseTarget := fs.String("baseline-target", "", "open loop: take turns of --block between this baseline server (every request expected to be allowed) and --target, and report both")
	basePID := fs.Int("baseline-pid", 0, "pid of the baseline server, for its CPU share")
	baseLabel := fs.String("baseline-label", "baseline", "label of the baseline's result")
	block := fs.Duration("block", time.Millisecond, "with --baseline-target: how long each server's turn lasts (at 1,000 requests/s, 1 ms: one request); --warmup and --duration must be whole numbers of turns")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *credsPath == "" {
		return errors.New("--credentials is required")
	}
	creds, err := loadgen.LoadCredentials(*credsPath)
	if err != nil {
		return err
	}
	opts := loadgen.WorkloadOptions{Distinct: *distinct, Shape: *shape, ExpectAllow: *expectAllow}
	dial := func(target string, opts loadgen.WorkloadOptions) (*loadgen.Workload, loadgen.Target, error) {
		w, err := loadgen.BuildWorkload(*workload, creds, opts)
		if err != nil {
			return nil, nil, err
		}
		t, err := dialTarget(target, *conns, *concurrency)
		return w, t, err
	}
	w, t, err := dial(*target, opts)
	if err != nil {
		return err
	}
	defer t.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	open := loadgen.OpenConfig{Rate: *rate, MaxInFlight: *concurrency, Warmup: *warmup, Duration: *duration, ServerCPU: processCPU(*serverPID), Block: *block}
	var res []*loadgen.Result
	switch {
	case *baseTarget != "" && *mode != "open":
		return errors.New("--baseline-target needs --mode open")
	case *baseTarget != "":
		opts.ExpectAllow = true // the baseline allows everything
		bw, bt, err := dial(*baseTarget, opts)
		if err != nil {
			return err
		}
		defer bt.Close()
		legs := []loadgen.Leg{{Target: bt, Workload: bw, ServerCPU: processCPU(*basePID)}, {Target: t, Workload: w, ServerCPU: open.ServerCPU}}
		res, err = loadgen.RunOpenAlternating(ctx, legs, open)
		if err != nil {
			return err
		}
		res[0].Label = *baseLabel
		res[1].Label = *label
	case *mode == "closed":
		r, err := loadgen.RunClosed(ctx, t, w, loadgen.ClosedConfig{Concurrency: *concurrency, Warmup: *warmup, Duration: *duration, ServerCPU: open.ServerCPU})
		if err != nil {
			return err
		}
		r.Label, res = *label, []*loadgen.Result{r}
	case *mode == "open":
		r, err := loadgen.RunOpen(ctx, t, w, open)
		if err != nil {
			return err
		}
		r.Label, res = *label, []*loadgen.Result{r}
	default:
		return fmt.Errorf("--mode %q: want closed or open", *mode)
	}
	return report(res, *round, *conns, *results)
}

// dialTarget connects to a grpc:// or http:// target.
func dialTarget(target string, conns, concurrency int) (loadgen.Target, error) {
	switch {
	case strings.HasPrefix(target, "grpc://"):
		return loadgen.DialGRPC(strings.TrimPrefix(target, "grpc://"), conns)
	case strings.HasPrefix(target, "http://"):
		return loadgen.NewHTTPTarget(target, concurrency), nil
	}
	return nil, fmt.Errorf("target %q: want grpc://host:port or http://host:port", target)
}

// processCPU is the CPU clock of pid, or nil for no pid.
func processCPU(pid int) loadgen.CPUClock {
	if pid <= 0 {
		return nil
	}
	return loadgen.ProcessCPU(pid)
}

// report prints each result's line, appends it to the results file, and
// fails if any verdict was wrong or any request failed.
func report(res []*loadgen.Result, round, conns int, results string) error {
	var failed error
	for _, r := range res {
		r.Round = round
		if r.Protocol == "grpc" {
			r.Conns = conns
		}
		fmt.Println(r.OneLine())
		if results != "" {
			if err := loadgen.AppendResult(results, r); err != nil {
				return err
			}
		}
		if r.Wrong > 0 || r.Errors > 0 {
			for _, e := range r.ErrorSamples {
				fmt.Fprintln(os.Stderr, "  error:", e)
			}
			failed = errors.Join(failed, fmt.Errorf("%s: %d wrong verdicts and %d errors in %d requests", r.Target, r.Wrong, r.Errors, r.Completed))
		}
	}
	return failed
}

func table(args []string) error {
	fs := flag.NewFlagSet("table", flag.ContinueOnError)
	path := fs.String("results", "", "results file (JSON lines) (required)")
	baseline := fs.String("baseline", "baseline", "label of the baseline runs")
	verifPath := fs.String("verification", "", "output of `go test -bench BenchmarkOneVerification` (sidecar/authz) from the same session, for the uncached workloads' excess in verifications")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var verif loadgen.Verifications
	if *verifPath != "" {
		vf, err := os.Open(*verifPath)
		if err != nil {
			return fmt.Errorf("opening the verification benchmark's output: %w", err)
		}
		verif, err = loadgen.ReadVerifications(vf)
		_ = vf.Close()
		if err != nil {
			return err
		}
	}
	f, err := os.Open(*path)
	if err != nil {
		return fmt.Errorf("opening results: %w", err)
	}
	defer f.Close()
	results, err := loadgen.ReadResults(f)
	if err != nil {
		return err
	}
	return loadgen.WriteTable(os.Stdout, results, *baseline, verif)
}
