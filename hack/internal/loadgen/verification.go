package loadgen

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// verificationBenchmark is the Go benchmark (sidecar/authz) that measures
// one signature verification alone; hack/load.sh runs it on the servers'
// CPU in the same session as the load, and its output is what
// ReadVerifications reads.
const verificationBenchmark = "BenchmarkOneVerification"

// Verification is one run of the verification benchmark: the cost of one
// signature verification of Alg ("RS256", "ES256"), in nanoseconds of CPU
// time, and the run of the load it was measured beside. A session-wide
// run (before the first round or after the last) has no Workload.
type Verification struct {
	Alg string
	Ns  float64
	// From the benchmark-format configuration lines before the run
	// (hack/load.sh writes them): the baseline/sidecar pair it brackets,
	// and When, "before" or "after" that pair ("session" or empty for a
	// session-wide run).
	Round, Conns    int
	Shape, Workload string
	When            string
}

// Verifications holds every verification run of a session, in the order
// of the file.
type Verifications []Verification

// session returns the session-wide runs of alg, those that bracket no
// pair (every run of a file without configuration lines).
func (vs Verifications) session(alg string) []float64 {
	return vs.times(func(v Verification) bool { return v.Alg == alg && v.Workload == "" })
}

// bracketing returns the runs of alg measured right before and right
// after the baseline/sidecar pair of workload, shape and conns in round.
func (vs Verifications) bracketing(alg, workload, shape string, conns, round int) []float64 {
	return vs.times(func(v Verification) bool {
		return v.Alg == alg && v.Workload == workload && v.Shape == shape && v.Conns == conns && v.Round == round
	})
}

// times returns the time per verification of the runs keep accepts.
func (vs Verifications) times(keep func(Verification) bool) []float64 {
	var out []float64
	for _, v := range vs {
		if keep(v) {
			out = append(out, v.Ns)
		}
	}
	return out
}

// uncachedWorkloadAlgorithm names the algorithm whose verification every
// check of an uncached-token workload pays.
var uncachedWorkloadAlgorithm = map[string]string{
	WorkloadJWTUncachedRS256: "RS256",
	WorkloadJWTUncachedES256: "ES256",
}

// ReadVerifications reads `go test -bench BenchmarkOneVerification` output
// in the Go benchmark format (golang.org/design/14313-benchmark-format,
// read by golang.org/x/perf/benchfmt): per run, the algorithm, the process
// CPU time per verification (cpu-ns/op), or the wall time (ns/op) when a
// line has no CPU time, and the configuration in force (the format's
// "key: value" lines: round, conns, shape, workload, when; a key with no
// value unsets it). Other benchmarks are ignored; a malformed benchmark
// line is an error.
func ReadVerifications(r io.Reader) (Verifications, error) {
	var out Verifications
	br := benchfmt.NewReader(r, "verification benchmark output")
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			return nil, rec
		case *benchfmt.Result:
			alg, ok := verificationAlgorithm(rec.Name)
			if !ok {
				continue
			}
			v, err := verificationOf(rec, alg)
			if err != nil {
				file, line := rec.Pos()
				return nil, fmt.Errorf("%s:%d: %s: %w", file, line, rec.Name, err)
			}
			out = append(out, v)
		}
	}
	if err := br.Err(); err != nil {
		return nil, fmt.Errorf("reading benchmark output: %w", err)
	}
	return out, nil
}

// verificationAlgorithm returns the algorithm a run of the verification
// benchmark names (OneVerification/RS256, with or without a GOMAXPROCS
// suffix), and false for any other benchmark.
func verificationAlgorithm(name benchfmt.Name) (string, bool) {
	base, parts := name.Parts()
	if string(base) != strings.TrimPrefix(verificationBenchmark, "Benchmark") || len(parts) == 0 {
		return "", false
	}
	alg, ok := strings.CutPrefix(string(parts[0]), "/")
	return alg, ok && alg != ""
}

// verificationOf reads one run of alg and the configuration it carries.
func verificationOf(rec *benchfmt.Result, alg string) (Verification, error) {
	v := Verification{
		Alg:      alg,
		Shape:    rec.GetConfig("shape"),
		Workload: rec.GetConfig("workload"),
		When:     rec.GetConfig("when"),
	}
	ns, ok := valueIn(rec, "cpu-ns/op")
	if !ok {
		ns, ok = valueIn(rec, "ns/op")
	}
	if !ok || ns <= 0 {
		return Verification{}, fmt.Errorf("no time per verification")
	}
	v.Ns = ns
	var err error
	if v.Round, err = configInt(rec, "round"); err != nil {
		return Verification{}, err
	}
	if v.Conns, err = configInt(rec, "conns"); err != nil {
		return Verification{}, err
	}
	switch v.When {
	case "", "session", "before", "after":
	default:
		return Verification{}, fmt.Errorf("when: %q is not before, after or session", v.When)
	}
	if v.Workload != "" && (v.Round <= 0 || v.Conns <= 0 || v.Shape == "" || v.When == "" || v.When == "session") {
		return Verification{}, fmt.Errorf("workload %q without its round, shape, conns and when (before or after)", v.Workload)
	}
	return v, nil
}

// valueIn returns rec's measurement in unit as the benchmark printed it
// (benchfmt holds ns/op as sec/op; the original is kept beside it).
func valueIn(rec *benchfmt.Result, unit string) (float64, bool) {
	for _, v := range rec.Values {
		if v.OrigUnit == unit {
			return v.OrigValue, true
		}
		if v.OrigUnit == "" && v.Unit == unit {
			return v.Value, true
		}
	}
	return 0, false
}

// configInt is rec's configuration key as a positive integer, 0 when
// unset.
func configInt(rec *benchfmt.Result, key string) (int, error) {
	s := rec.GetConfig(key)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive integer", key, s)
	}
	return n, nil
}
