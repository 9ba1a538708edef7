package loadgen

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// verificationBenchmark is the Go benchmark (sidecar/authz) that measures
// one signature verification alone; hack/load.sh runs it on the servers'
// CPU in the same session as the load, and its output is what
// ReadVerifications reads.
const verificationBenchmark = "BenchmarkOneVerification"

// Verifications holds the measured cost of one signature verification, in
// nanoseconds of CPU time, by algorithm ("RS256", "ES256"): one value per
// benchmark run.
type Verifications map[string][]float64

// uncachedWorkloadAlgorithm names the algorithm whose verification every
// check of an uncached-token workload pays.
var uncachedWorkloadAlgorithm = map[string]string{
	WorkloadJWTUncachedRS256: "RS256",
	WorkloadJWTUncachedES256: "ES256",
}

// gomaxprocsSuffix is the "-N" the testing package appends to a
// benchmark's name when GOMAXPROCS is not 1.
var gomaxprocsSuffix = regexp.MustCompile(`-[0-9]+$`)

// ReadVerifications reads `go test -bench BenchmarkOneVerification` output:
// per algorithm, the process CPU time per verification (cpu-ns/op) of
// each run, or its wall time (ns/op) when a line has no CPU time. Other
// lines are ignored.
func ReadVerifications(r io.Reader) (Verifications, error) {
	out := Verifications{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], verificationBenchmark+"/") {
			continue
		}
		alg := gomaxprocsSuffix.ReplaceAllString(strings.TrimPrefix(f[0], verificationBenchmark+"/"), "")
		units := map[string]float64{}
		// f[1] is the iteration count; then value, unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: %w", sc.Text(), err)
			}
			units[f[i+1]] = v
		}
		v, ok := units["cpu-ns/op"]
		if !ok {
			v, ok = units["ns/op"]
		}
		if !ok || v <= 0 {
			return nil, fmt.Errorf("benchmark line %q has no time per verification", sc.Text())
		}
		out[alg] = append(out[alg], v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading benchmark output: %w", err)
	}
	return out, nil
}

// uncachedExcess is one row of the excess table: a workload that verifies
// a signature on every check, against one verification.
type uncachedExcess struct {
	name                 string
	alg                  string
	baseCPU, serverCPU   float64 // median CPU per request, ns
	verification         []float64
	verificationMedian   float64
	excessInVerification float64
}

// writeExcessTable prints, for every uncached-token row of the summary,
// the server's CPU per request above the baseline's in verifications of
// the same algorithm, measured in the same session.
func writeExcessTable(sb *strings.Builder, rows []uncachedExcess) {
	if len(rows) == 0 {
		return
	}
	sb.WriteString("\n| server | protocol | shape | conns | workload | mode | server CPU/request above the baseline | one verification (median, min–max, runs) | excess in verifications |\n")
	sb.WriteString("|---|---|---|---:|---|---|---:|---:|---:|\n")
	for _, r := range rows {
		v := r.verification
		fmt.Fprintf(sb, "| %s | %.1f µs | %s %.1f µs (%.1f–%.1f, %d) | %.2f |\n", r.name,
			(r.serverCPU-r.baseCPU)/float64(time.Microsecond), r.alg, r.verificationMedian/float64(time.Microsecond),
			slices.Min(v)/float64(time.Microsecond), slices.Max(v)/float64(time.Microsecond), len(v), r.excessInVerification)
	}
}
