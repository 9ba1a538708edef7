package loadgen

import (
	"bytes"
	"strings"
	"testing"
)

// Output of `authz.test -test.bench '^BenchmarkOneVerification$'` without
// configuration lines, as hack/load.sh wrote it before it bracketed pairs.
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

// Output as hack/load.sh writes it now: a session-wide run, then runs
// bracketing two pairs of round 2, each after its configuration lines.
const configuredVerificationOutput = `round:
shape:
conns:
workload:
when: session
goos: linux
goarch: amd64
pkg: gatehouse.dev/gatehouse/sidecar/authz
cpu: AMD EPYC
BenchmarkOneVerification/ES256         	   16066	     83149 ns/op	     82227 cpu-ns/op	    1456 B/op	      24 allocs/op
BenchmarkOneVerification/RS256         	   27148	     38062 ns/op	     37997 cpu-ns/op	    1552 B/op	      12 allocs/op
PASS
round: 2
shape: envoy
conns: 8
workload: jwt-uncached-rs256
when: before
goos: linux
goarch: amd64
pkg: gatehouse.dev/gatehouse/sidecar/authz
cpu: AMD EPYC
BenchmarkOneVerification/RS256         	   20000	     33685 ns/op	     31138 cpu-ns/op	    1552 B/op	      12 allocs/op
PASS
when: after
BenchmarkOneVerification/RS256         	   20000	     36104 ns/op	     36052 cpu-ns/op	    1552 B/op	      12 allocs/op
PASS
workload:	jwt-uncached-es256
when: before
BenchmarkOneVerification/ES256         	    8000	     96302 ns/op	     76663 cpu-ns/op	    1456 B/op	      24 allocs/op
PASS
round:
shape:
conns:
workload:
when: session
BenchmarkOneVerification/RS256         	   25617	     47439 ns/op	     47334 cpu-ns/op	    1552 B/op	      12 allocs/op
`

func TestVerificationsAreReadAsCPUTimePerRunAndAlgorithm(t *testing.T) {
	v, err := ReadVerifications(strings.NewReader(verificationOutput))
	if err != nil {
		t.Fatal(err)
	}
	// The CPU time where a line has one, its wall time where it has not;
	// the GOMAXPROCS suffix dropped; other benchmarks ignored; without
	// configuration lines, every run is session-wide.
	want := map[string][]float64{"ES256": {75000, 77000}, "RS256": {31000, 30000, 32000}}
	if len(v) != 5 {
		t.Fatalf("read %d runs, want 5: %+v", len(v), v)
	}
	for alg, runs := range want {
		if got := v.session(alg); !equalFloats(got, runs) {
			t.Errorf("%s: read %v, want %v", alg, got, runs)
		}
	}
}

func TestConfigurationLinesTieARunToThePairItBrackets(t *testing.T) {
	v, err := ReadVerifications(strings.NewReader(configuredVerificationOutput))
	if err != nil {
		t.Fatal(err)
	}
	want := Verifications{
		{Alg: "ES256", Ns: 82227, When: "session"},
		{Alg: "RS256", Ns: 37997, When: "session"},
		{Alg: "RS256", Ns: 31138, Round: 2, Conns: 8, Shape: "envoy", Workload: WorkloadJWTUncachedRS256, When: "before"},
		// A configuration line applies until the next one with its key.
		{Alg: "RS256", Ns: 36052, Round: 2, Conns: 8, Shape: "envoy", Workload: WorkloadJWTUncachedRS256, When: "after"},
		// A tab separates key and value as well as a space.
		{Alg: "ES256", Ns: 76663, Round: 2, Conns: 8, Shape: "envoy", Workload: WorkloadJWTUncachedES256, When: "before"},
		// "key:" with no value unsets the key.
		{Alg: "RS256", Ns: 47334, When: "session"},
	}
	if len(v) != len(want) {
		t.Fatalf("read %+v, want %+v", v, want)
	}
	for i := range want {
		if v[i] != want[i] {
			t.Errorf("run %d: read %+v, want %+v", i, v[i], want[i])
		}
	}
	if got := v.session("RS256"); !equalFloats(got, []float64{37997, 47334}) {
		t.Errorf("session-wide RS256 runs %v, want the two outside the pairs", got)
	}
	if got := v.bracketing("RS256", WorkloadJWTUncachedRS256, "envoy", 8, 2); !equalFloats(got, []float64{31138, 36052}) {
		t.Errorf("RS256 runs beside round 2's envoy, 8-connection pair %v, want the before and after runs", got)
	}
	if got := v.bracketing("RS256", WorkloadJWTUncachedRS256, "envoy", 8, 1); len(got) != 0 {
		t.Errorf("round 1 has no run beside it, read %v", got)
	}
}

func TestAMalformedVerificationRunIsAnError(t *testing.T) {
	const rs = "BenchmarkOneVerification/RS256 20000 33685 ns/op 31138 cpu-ns/op\n"
	const pair = "shape: compact\nconns: 1\nworkload: jwt-uncached-rs256\nwhen: before\n"
	for name, text := range map[string]string{
		"no time":             "BenchmarkOneVerification/RS256 100 1552 B/op 12 allocs/op\n",
		"non-numeric value":   "BenchmarkOneVerification/RS256 100 fast ns/op\n",
		"non-numeric round":   "round: two\n" + pair + rs,
		"zero round":          "round: 0\n" + pair + rs,
		"negative conns":      "round: 1\nshape: compact\nconns: -8\nworkload: jwt-uncached-rs256\nwhen: before\n" + rs,
		"unknown when":        "round: 1\n" + pair + "when: during\n" + rs,
		"workload, no round":  pair + rs,
		"workload, no when":   "round: 1\nshape: compact\nconns: 1\nworkload: jwt-uncached-rs256\n" + rs,
		"workload, no shape":  "round: 1\nconns: 1\nworkload: jwt-uncached-rs256\nwhen: after\n" + rs,
		"workload in session": "round: 1\n" + pair + "when: session\n" + rs,
		"round with a suffix": "round: 1x\n" + rs,
	} {
		if v, err := ReadVerifications(strings.NewReader(text)); err == nil {
			t.Errorf("%s: accepted, read %+v", name, v)
		}
	}
	// Lines that are not configuration lines by the format's rules are
	// ignored, not read as keys: an upper-case or spaced key, no space
	// after the colon.
	v, err := ReadVerifications(strings.NewReader("Round: x\nthe round: x\nround:x\n" + rs))
	if err != nil || len(v) != 1 || v[0].Round != 0 {
		t.Errorf("read %+v, %v; want one session-wide run", v, err)
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// uncachedResults are baseline/uncached-sidecar pairs of workload, compact
// requests on one connection, one per round: CPU per request = ServerCPU
// / Throughput, baseline 20 µs and sidecar side[i] µs in round i+1.
func uncachedResults(workload string, side ...float64) []*Result {
	const base = 20.0
	var out []*Result
	for i, s := range side {
		out = append(out,
			&Result{Label: "baseline", Protocol: "grpc", Conns: 1, Workload: workload, Mode: "closed", Concurrency: 32, Round: i + 1, Throughput: 10000, ServerCPU: base / 100},
			&Result{Label: "sidecar-nocache", Protocol: "grpc", Conns: 1, Workload: workload, Mode: "closed", Concurrency: 32, Round: i + 1, Throughput: 10000, ServerCPU: s / 100},
		)
	}
	return out
}

// session is a session-wide verification run of alg, ns.
func session(alg string, ns float64) Verification {
	return Verification{Alg: alg, Ns: ns, When: "session"}
}

// beside is a run of workload's algorithm, ns, right before or after the
// compact, one-connection pair of workload in round.
func beside(ns float64, workload string, round int, when string) Verification {
	return Verification{Alg: uncachedWorkloadAlgorithm[workload], Ns: ns, Round: round, Conns: 1, Shape: ShapeCompact, Workload: workload, When: when}
}

func excessTable(t *testing.T, results []*Result, verif Verifications) string {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTable(&buf, results, "baseline", verif); err != nil {
		t.Fatal(err)
	}
	_, table, found := strings.Cut(buf.String(), "| excess in session-wide verifications |\n")
	if !found {
		t.Fatalf("no excess table:\n%s", buf.String())
	}
	_, rows, _ := strings.Cut(table, "\n") // below the separator
	return rows
}

func TestEachPairIsDividedByTheVerificationsOfItsOwnMinute(t *testing.T) {
	// Round 1: 50 − 20 = 30 µs above the baseline, beside verifications
	// of 29 and 31 µs (mean 30): 1.00. Round 2, the machine slower: 70 − 20
	// = 50 µs, beside 45 and 55 µs (mean 50): 1.00. The session median
	// (30 µs) would give 1.00 and 1.67 per pair, and (60 − 20) / 30 = 1.33
	// for the medians.
	results := uncachedResults(WorkloadJWTUncachedRS256, 50, 70)
	verif := Verifications{
		session("RS256", 29000), session("RS256", 30000), session("RS256", 31000),
		beside(29000, WorkloadJWTUncachedRS256, 1, "before"),
		beside(31000, WorkloadJWTUncachedRS256, 1, "after"),
		beside(45000, WorkloadJWTUncachedRS256, 2, "before"),
		beside(55000, WorkloadJWTUncachedRS256, 2, "after"),
		// Other pairs' runs, which must not count here.
		beside(10000, WorkloadJWTUncachedES256, 1, "before"),
		{Alg: "RS256", Ns: 90000, Round: 1, Conns: 8, Shape: ShapeCompact, Workload: WorkloadJWTUncachedRS256, When: "before"},
		{Alg: "RS256", Ns: 90000, Round: 1, Conns: 1, Shape: ShapeEnvoy, Workload: WorkloadJWTUncachedRS256, When: "before"},
	}
	table := excessTable(t, results, verif)
	want := "| sidecar-nocache | grpc | compact | 1 | jwt-uncached-rs256 | closed c=32 | 40.0 µs " +
		"| RS256 38.0 µs (29.0–55.0, 4) | 1.00 (1.00–1.00, 2) | RS256 30.0 µs (29.0–31.0, 3) | 1.33 |\n"
	if table != want {
		t.Errorf("excess table\n%s\nwant\n%s", table, want)
	}
}

func TestAPairWithoutAVerificationBesideItFallsBackToTheSessionMedianAndSaysSo(t *testing.T) {
	// Round 1 is bracketed (20 µs above, verification 20 µs: 1.00); round
	// 2 is not (40 µs above, session median 40 µs: 1.00). ES256 has only
	// session-wide runs, as a file from before the pairs were bracketed.
	results := append(uncachedResults(WorkloadJWTUncachedRS256, 40, 60), uncachedResults(WorkloadJWTUncachedES256, 95)...)
	results = append(results, uncachedResults(WorkloadAPIKey, 25)...)
	verif := Verifications{
		session("RS256", 40000), session("ES256", 75000),
		beside(20000, WorkloadJWTUncachedRS256, 1, "after"),
	}
	table := excessTable(t, results, verif)
	for _, want := range []string{
		"| jwt-uncached-rs256 | closed c=32 | 30.0 µs | RS256 20.0 µs (20.0–20.0, 1) " +
			"| 1.00 (1.00–1.00, 2), 1 of them on the session median (no verification beside them) | RS256 40.0 µs (40.0–40.0, 1) | 0.75 |\n",
		"| jwt-uncached-es256 | closed c=32 | 75.0 µs | — " +
			"| 1.00 (1.00–1.00, 1), 1 of them on the session median (no verification beside them) | ES256 75.0 µs (75.0–75.0, 1) | 1.00 |\n",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the excess table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "apikey") {
		t.Errorf("only the uncached workloads belong in the excess table:\n%s", table)
	}
}

func TestWithoutAnyVerificationThereIsNoExcess(t *testing.T) {
	results := uncachedResults(WorkloadJWTUncachedRS256, 50)
	var buf bytes.Buffer
	if err := WriteTable(&buf, results, "baseline", nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "excess in") {
		t.Errorf("without a verification there is no excess table:\n%s", buf.String())
	}
	// Verifications of another algorithm only: no row either.
	buf.Reset()
	if err := WriteTable(&buf, results, "baseline", Verifications{session("ES256", 75000)}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "excess in") {
		t.Errorf("an RS256 row against ES256 runs:\n%s", buf.String())
	}
}
