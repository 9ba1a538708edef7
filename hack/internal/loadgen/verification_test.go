package loadgen

import (
	"bytes"
	"strings"
	"testing"
)

// Output of `authz.test -test.bench '^BenchmarkOneVerification$'`, as
// hack/load.sh appends it twice (before and after the rounds).
const verificationOutput = `goos: linux
goarch: amd64
pkg: gatehouse.dev/gatehouse/sidecar/authz
cpu: AMD EPYC
BenchmarkOneVerification/ES256         	   13886	     77963 ns/op	     75000 cpu-ns/op	    1456 B/op	      24 allocs/op
BenchmarkOneVerification/RS256         	   37767	     34582 ns/op	     31000 cpu-ns/op	    1552 B/op	      12 allocs/op
PASS
BenchmarkOneVerification/ES256-2       	   13886	     77963 ns/op	     77000 cpu-ns/op	    1456 B/op	      24 allocs/op
BenchmarkOneVerification/RS256-2       	   37767	     34582 ns/op	     30000 cpu-ns/op	    1552 B/op	      12 allocs/op
BenchmarkOneVerification/RS256         	   37767	     32000 ns/op	    1552 B/op	      12 allocs/op
BenchmarkSomethingElse/RS256           	   37767	     1 ns/op
`

func TestVerificationsAreReadAsCPUTimePerRunAndAlgorithm(t *testing.T) {
	v, err := ReadVerifications(strings.NewReader(verificationOutput))
	if err != nil {
		t.Fatal(err)
	}
	// The CPU time where a line has one, its wall time where it has not;
	// the GOMAXPROCS suffix dropped; other benchmarks ignored.
	want := map[string][]float64{"ES256": {75000, 77000}, "RS256": {31000, 30000, 32000}}
	if len(v) != len(want) {
		t.Fatalf("read %v, want %v", v, want)
	}
	for alg, runs := range want {
		if got := v[alg]; len(got) != len(runs) || got[0] != runs[0] || got[len(got)-1] != runs[len(runs)-1] {
			t.Errorf("%s: read %v, want %v", alg, got, runs)
		}
	}
}

func TestAVerificationLineWithoutATimeIsAnError(t *testing.T) {
	if _, err := ReadVerifications(strings.NewReader("BenchmarkOneVerification/RS256 100 1552 B/op 12 allocs/op\n")); err == nil {
		t.Error("a line without ns/op or cpu-ns/op was accepted")
	}
	if _, err := ReadVerifications(strings.NewReader("BenchmarkOneVerification/RS256 100 fast ns/op\n")); err == nil {
		t.Error("a line with a non-numeric value was accepted")
	}
}

func TestTheExcessTableGivesUncachedWorkloadsInVerificationsOfTheirAlgorithm(t *testing.T) {
	var results []*Result
	// CPU per request = ServerCPU / Throughput: baseline 20 µs, RS256
	// sidecar 56, 60, 58 µs (median 58), ES256 sidecar 95 µs.
	for round, rs := range []float64{56, 60, 58} {
		results = append(results,
			&Result{Label: "baseline", Protocol: "grpc", Conns: 1, Workload: WorkloadJWTUncachedRS256, Mode: "closed", Concurrency: 32, Round: round, Throughput: 10000, ServerCPU: 0.2},
			&Result{Label: "sidecar-nocache", Protocol: "grpc", Conns: 1, Workload: WorkloadJWTUncachedRS256, Mode: "closed", Concurrency: 32, Round: round, Throughput: 10000, ServerCPU: rs / 100},
			&Result{Label: "baseline", Protocol: "grpc", Conns: 1, Workload: WorkloadJWTUncachedES256, Mode: "closed", Concurrency: 32, Round: round, Throughput: 10000, ServerCPU: 0.2},
			&Result{Label: "sidecar-nocache", Protocol: "grpc", Conns: 1, Workload: WorkloadJWTUncachedES256, Mode: "closed", Concurrency: 32, Round: round, Throughput: 10000, ServerCPU: 0.95},
			&Result{Label: "baseline", Protocol: "grpc", Conns: 1, Workload: WorkloadAPIKey, Mode: "closed", Concurrency: 32, Round: round, Throughput: 10000, ServerCPU: 0.2},
			&Result{Label: "sidecar", Protocol: "grpc", Conns: 1, Workload: WorkloadAPIKey, Mode: "closed", Concurrency: 32, Round: round, Throughput: 10000, ServerCPU: 0.25},
		)
	}
	verif := Verifications{"RS256": {31000, 29000, 30000}, "ES256": {75000}}
	var buf bytes.Buffer
	if err := WriteTable(&buf, results, "baseline", verif); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		// (58 − 20) / 30 = 1.27
		"| sidecar-nocache | grpc | compact | 1 | jwt-uncached-rs256 | closed c=32 | 38.0 µs | RS256 30.0 µs (29.0–31.0, 3) | 1.27 |",
		// (95 − 20) / 75 = 1.00
		"| sidecar-nocache | grpc | compact | 1 | jwt-uncached-es256 | closed c=32 | 75.0 µs | ES256 75.0 µs (75.0–75.0, 1) | 1.00 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| apikey | closed c=32 | 5.0 µs |") || strings.Count(out, "excess in verifications") != 1 {
		t.Errorf("only the uncached workloads belong in the excess table:\n%s", out)
	}

	buf.Reset()
	if err := WriteTable(&buf, results, "baseline", nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "excess in verifications") {
		t.Errorf("without a verification there is no excess table:\n%s", buf.String())
	}
}
