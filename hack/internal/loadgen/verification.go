package loadgen

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
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

// gomaxprocsSuffix is the "-N" the testing package appends to a
// benchmark's name when GOMAXPROCS is not 1.
var gomaxprocsSuffix = regexp.MustCompile(`-[0-9]+$`)

// ReadVerifications reads `go test -bench BenchmarkOneVerification` output:
// per run, the algorithm, the process CPU time per verification
// (cpu-ns/op), or the wall time (ns/op) when a line has no CPU time, and
// the configuration in force (the Go benchmark format's "key: value"
// lines: round, conns, shape, workload, when; a key with no value unsets
// it). Other lines are ignored.
func ReadVerifications(r io.Reader) (Verifications, error) {
	var out Verifications
	config := map[string]string{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		if key, val, ok := configLine(sc.Text()); ok {
			if val == "" {
				delete(config, key)
			} else {
				config[key] = val
			}
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], verificationBenchmark+"/") {
			continue
		}
		v, err := verificationOf(f, config)
		if err != nil {
			return nil, fmt.Errorf("verification benchmark output, line %d %q: %w", line, sc.Text(), err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading benchmark output: %w", err)
	}
	return out, nil
}

// configLine parses a configuration line of the Go benchmark format
// (golang.org/design/14313-benchmark-format): a key that begins with a
// lower-case letter and holds no space or upper-case letter, a colon, and
// either nothing or spaces or tabs and the value.
func configLine(line string) (key, val string, ok bool) {
	key, val, found := strings.Cut(line, ":")
	if !found || key == "" {
		return "", "", false
	}
	if first, _ := utf8.DecodeRuneInString(key); !unicode.IsLower(first) {
		return "", "", false
	}
	if strings.IndexFunc(key, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsUpper(r) }) >= 0 {
		return "", "", false
	}
	if val == "" {
		return key, "", true
	}
	if val[0] != ' ' && val[0] != '\t' {
		return "", "", false
	}
	return key, strings.TrimSpace(val), true
}

// verificationOf reads one benchmark line, split into fields, under
// config.
func verificationOf(f []string, config map[string]string) (Verification, error) {
	v := Verification{
		Alg:      gomaxprocsSuffix.ReplaceAllString(strings.TrimPrefix(f[0], verificationBenchmark+"/"), ""),
		Shape:    config["shape"],
		Workload: config["workload"],
		When:     config["when"],
	}
	units := map[string]float64{}
	// f[1] is the iteration count; then value, unit pairs.
	for i := 2; i+1 < len(f); i += 2 {
		x, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Verification{}, err
		}
		units[f[i+1]] = x
	}
	ns, ok := units["cpu-ns/op"]
	if !ok {
		ns, ok = units["ns/op"]
	}
	if !ok || ns <= 0 {
		return Verification{}, fmt.Errorf("no time per verification")
	}
	v.Ns = ns
	var err error
	if v.Round, err = configInt(config, "round"); err != nil {
		return Verification{}, err
	}
	if v.Conns, err = configInt(config, "conns"); err != nil {
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

// configInt is config[key] as a positive integer, 0 when unset.
func configInt(config map[string]string, key string) (int, error) {
	s, ok := config[key]
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive integer", key, s)
	}
	return n, nil
}
