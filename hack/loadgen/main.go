// Command loadgen is Gatehouse's ext_authz load client.
//
//	loadgen fixtures --out DIR [--keys 100000] [--tokens 16]
//	    write a files-source config dir (DIR/config) and the client's
//	    credentials (DIR/credentials.json, mode 0600)
//	loadgen run --target grpc://127.0.0.1:9001 --credentials DIR/credentials.json \
//	    --workload apikey|jwt-cached|deny|expired-jwt|jwt-uncached-es256|jwt-uncached-rs256 \
//	    --shape compact|envoy --mode closed|open [--expect-allow] [flags]
//	    drive a server and check every verdict; one summary line on stdout,
//	    the full result appended as JSON to --results
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
	w, err := loadgen.BuildWorkload(*workload, creds, loadgen.WorkloadOptions{Distinct: *distinct, Shape: *shape, ExpectAllow: *expectAllow})
	if err != nil {
		return err
	}
	var t loadgen.Target
	switch {
	case strings.HasPrefix(*target, "grpc://"):
		gt, err := loadgen.DialGRPC(strings.TrimPrefix(*target, "grpc://"), *conns)
		if err != nil {
			return err
		}
		t = gt
	case strings.HasPrefix(*target, "http://"):
		t = loadgen.NewHTTPTarget(*target, *concurrency)
	default:
		return fmt.Errorf("--target %q: want grpc://host:port or http://host:port", *target)
	}
	defer t.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var serverCPU loadgen.CPUClock
	if *serverPID > 0 {
		serverCPU = loadgen.ProcessCPU(*serverPID)
	}
	var res *loadgen.Result
	switch *mode {
	case "closed":
		res, err = loadgen.RunClosed(ctx, t, w, loadgen.ClosedConfig{Concurrency: *concurrency, Warmup: *warmup, Duration: *duration, ServerCPU: serverCPU})
	case "open":
		res, err = loadgen.RunOpen(ctx, t, w, loadgen.OpenConfig{Rate: *rate, MaxInFlight: *concurrency, Warmup: *warmup, Duration: *duration, ServerCPU: serverCPU})
	default:
		return fmt.Errorf("--mode %q: want closed or open", *mode)
	}
	if err != nil {
		return err
	}
	res.Label, res.Round = *label, *round
	if res.Protocol == "grpc" {
		res.Conns = *conns
	}
	fmt.Println(res.OneLine())
	if *results != "" {
		if err := loadgen.AppendResult(*results, res); err != nil {
			return err
		}
	}
	if res.Wrong > 0 || res.Errors > 0 {
		for _, e := range res.ErrorSamples {
			fmt.Fprintln(os.Stderr, "  error:", e)
		}
		return fmt.Errorf("%d wrong verdicts and %d errors in %d requests", res.Wrong, res.Errors, res.Completed)
	}
	return nil
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
