package loadgen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// AppendResult appends r as one JSON line to path.
func AppendResult(path string, r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding result: %w", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644) //nolint:gosec // results are not secret
	if err != nil {
		return fmt.Errorf("opening results: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing results: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing results: %w", err)
	}
	return nil
}

// ReadResults reads the JSON lines written by AppendResult.
func ReadResults(r io.Reader) ([]*Result, error) {
	var out []*Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		res := &Result{}
		if err := json.Unmarshal(sc.Bytes(), res); err != nil {
			return nil, fmt.Errorf("results line %d: %w", line, err)
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	return out, nil
}

// OneLine summarises a result for a terminal.
func (r *Result) OneLine() string {
	s := fmt.Sprintf("%-9s %-4s %-10s %-6s %9.0f req/s  p50 %-9s p90 %-9s p99 %-9s max %-9s  n=%d wrong=%d errors=%d",
		r.Label, r.Protocol, r.Workload, r.Mode, r.Throughput, fmtDur(r.Latency.P50), fmtDur(r.Latency.P90), fmtDur(r.Latency.P99), fmtDur(r.Latency.Max),
		r.Completed, r.Wrong, r.Errors)
	if r.ServerCPU > 0 || r.ClientCPU > 0 {
		s += fmt.Sprintf("  cpu: server %s client %s", fmtShare(r.ServerCPU), fmtShare(r.ClientCPU))
	}
	if r.SendLag != nil {
		s += fmt.Sprintf("  (service time p50 %s p99 %s; send lag p50 %s p99 %s)",
			fmtDur(r.ServiceTime.P50), fmtDur(r.ServiceTime.P99), fmtDur(r.SendLag.P50), fmtDur(r.SendLag.P99))
	}
	return s
}

// fmtShare prints a CPU share as a percentage of one core.
func fmtShare(f float64) string {
	if f <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", f*100)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

// serverCPUPerRequest is the server's CPU time per completed request, or 0
// when its CPU share is unknown.
func (r *Result) serverCPUPerRequest() time.Duration {
	if r.ServerCPU <= 0 || r.Throughput <= 0 {
		return 0
	}
	return time.Duration(r.ServerCPU / r.Throughput * float64(time.Second))
}

// WriteTable prints two Markdown tables. The first lists every run, with
// each closed-loop run's throughput as a ratio to the baseline run of the
// same protocol, workload, mode and round, and the server's CPU time per
// request. The second summarises the rounds: the median and range of the
// throughput ratios, the ratio of the baseline's CPU time per request to
// the server's in closed-loop runs (what the throughput ratio would be on a
// core of its own, whatever else the machine runs) of the medians and, per
// pair, of the two runs of the same minute, and the latencies.
// (At a fixed open-loop rate the CPU per request is mostly the cost of
// waking up, so no CPU ratio is given for open-loop runs.) With verif, a
// third table gives each uncached-token workload's server CPU per request
// above the baseline's in verifications of its algorithm: per pair, in the
// verifications measured beside that pair, and over the session.
func WriteTable(w io.Writer, results []*Result, baseline string, verif Verifications) error {
	type group struct {
		protocol, shape, workload, mode string
		conns                           int
	}
	type key struct {
		group
		round int
	}
	base := map[key]*Result{}
	for _, r := range results {
		if r.Label == baseline {
			base[key{group{r.Protocol, shapeName(r), r.Workload, r.Mode, r.Conns}, r.Round}] = r
		}
	}
	rows := append([]*Result(nil), results...)
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		switch {
		case a.Protocol != b.Protocol:
			return a.Protocol < b.Protocol
		case shapeName(a) != shapeName(b):
			return shapeName(a) < shapeName(b)
		case a.Conns != b.Conns:
			return a.Conns < b.Conns
		case a.Mode != b.Mode:
			return a.Mode < b.Mode
		case a.Workload != b.Workload:
			return a.Workload < b.Workload
		case a.Round != b.Round:
			return a.Round < b.Round
		}
		return a.Label == baseline && b.Label != baseline
	})

	aggs := map[string]*summaryRow{}
	var order []string

	var sb strings.Builder
	sb.WriteString("| server | protocol | shape | conns | workload | mode | round | req/s | ratio to baseline | p50 | p90 | p99 | max | requests | wrong | errors | server CPU | client CPU | server CPU/request |\n")
	sb.WriteString("|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		g := group{r.Protocol, shapeName(r), r.Workload, r.Mode, r.Conns}
		b := base[key{g, r.Round}]
		ratio := "—"
		name := strings.Join([]string{r.Label, r.Protocol, shapeName(r), connsName(r), r.Workload, modeName(r)}, " | ")
		a := aggs[name]
		if a == nil {
			a = &summaryRow{uncachedRow: uncachedRow{name: name, workload: r.Workload, shape: shapeName(r), conns: r.Conns}}
			aggs[name] = a
			order = append(order, name)
		}
		if b != nil && r.Mode == "closed" && b.Throughput > 0 {
			ratio = fmt.Sprintf("%.2f", r.Throughput/b.Throughput)
			a.ratios = append(a.ratios, r.Throughput/b.Throughput)
		}
		if c := r.serverCPUPerRequest(); c > 0 && r.Mode == "closed" {
			a.cpuRuns++
			if b != nil && b.serverCPUPerRequest() > 0 {
				a.pairs = append(a.pairs, cpuPair{round: r.Round, base: float64(b.serverCPUPerRequest()), server: float64(c)})
			}
		}
		a.p50s = append(a.p50s, float64(r.Latency.P50))
		a.p99s = append(a.p99s, float64(r.Latency.P99))
		if b != nil {
			a.baseP99s = append(a.baseP99s, float64(b.Latency.P99))
		}
		a.pool(r, b)
		cpuReq := "—"
		if c := r.serverCPUPerRequest(); c > 0 {
			cpuReq = fmt.Sprintf("%.1fµs", float64(c)/float64(time.Microsecond))
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %d | %d | %d | %s | %s | %s |\n",
			r.Label, r.Protocol, shapeName(r), connsName(r), r.Workload, modeName(r), r.Round, r.Throughput, ratio,
			fmtDur(r.Latency.P50), fmtDur(r.Latency.P90), fmtDur(r.Latency.P99), fmtDur(r.Latency.Max),
			r.Completed, r.Wrong, r.Errors, fmtShare(r.ServerCPU), fmtShare(r.ClientCPU), cpuReq)
	}

	var excess []uncachedExcess
	sb.WriteString("\n| server | protocol | shape | conns | workload | mode | rounds | median req/s ratio (min–max) | server CPU/request, baseline → this | CPU ratio (baseline / this) | CPU ratio per pair (median, min–max) | median p50 | median p99 | p99 / baseline p99 | worst p99 | pooled p99, baseline → this (ratio) |\n")
	sb.WriteString("|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, name := range order {
		a := aggs[name]
		ratio, cpu, cpuRatio, pairRatio, p99Ratio := "—", "—", "—", "—", "—"
		isBase := strings.HasPrefix(name, baseline+" |")
		if x, ok := excessOf(a.uncachedRow, verif); ok && !isBase {
			excess = append(excess, x)
		}
		if len(a.ratios) > 0 && !isBase {
			ratio = fmt.Sprintf("%.2f (%.2f–%.2f)", median(a.ratios), slices.Min(a.ratios), slices.Max(a.ratios))
		}
		if len(a.pairs) > 0 && len(a.pairs) == a.cpuRuns && !isBase {
			b, c := a.medianCPU()
			cpu = fmt.Sprintf("%.1f → %.1f µs", b/float64(time.Microsecond), c/float64(time.Microsecond))
			cpuRatio = fmt.Sprintf("%.2f", b/c)
			rs := a.cpuRatios()
			pairRatio = fmt.Sprintf("%.2f (%.2f–%.2f)", median(rs), slices.Min(rs), slices.Max(rs))
		}
		if len(a.baseP99s) > 0 && len(a.baseP99s) == len(a.p99s) && !isBase && median(a.baseP99s) > 0 {
			p99Ratio = fmt.Sprintf("%.2f", median(a.p99s)/median(a.baseP99s))
		}
		fmt.Fprintf(&sb, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, len(a.p99s), ratio, cpu, cpuRatio, pairRatio,
			fmtDur(time.Duration(median(a.p50s))), fmtDur(time.Duration(median(a.p99s))), p99Ratio, fmtDur(time.Duration(slices.Max(a.p99s))),
			a.pooledP99(isBase))
	}
	writeExcessTable(&sb, excess)
	_, err := io.WriteString(w, sb.String())
	return err
}

func shapeName(r *Result) string {
	if r.Shape == "" {
		return ShapeCompact
	}
	return r.Shape
}

func connsName(r *Result) string {
	if r.Conns == 0 {
		return "—"
	}
	return fmt.Sprint(r.Conns)
}

func modeName(r *Result) string {
	if r.Mode == "open" {
		return fmt.Sprintf("open %.0f/s", r.Rate)
	}
	return fmt.Sprintf("closed c=%d", r.Concurrency)
}

// median returns the median of xs (the mean of the middle two for an even
// count); xs must not be empty.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// summaryRow gathers one summary line's runs over the rounds.
type summaryRow struct {
	uncachedRow
	ratios, p50s, p99s []float64
	baseP99s           []float64
	// cpuRuns counts the closed-loop runs with a CPU figure; pairs (in
	// uncachedRow) those of them that have their baseline's too.
	cpuRuns int
	// hist and baseHist pool the open-loop latencies of every
	// round, this server's and its baselines'.
	hist, baseHist *Histogram
}

// pool adds an open-loop run's latencies, and its baseline's (b, which may
// be nil), to the pooled histograms.
func (a *summaryRow) pool(r, b *Result) {
	if r.LatencyHistogram == nil {
		return
	}
	if a.hist == nil {
		a.hist, a.baseHist = NewHistogram(), NewHistogram()
	}
	a.hist.Merge(r.LatencyHistogram)
	if b != nil && b.LatencyHistogram != nil {
		a.baseHist.Merge(b.LatencyHistogram)
	}
}

// pooledP99 is the p99 of every round's latencies pooled, this server's
// against its baselines' (only the p99 for the baseline itself): with six
// runs of 5,000 requests it is the 300th slowest of 30,000, which a
// single stall of a shared machine moves far less than one run's 50th.
func (a *summaryRow) pooledP99(isBase bool) string {
	if a.hist == nil || a.hist.Count() == 0 {
		return "—"
	}
	p99 := a.hist.Percentile(99)
	if isBase || a.baseHist.Count() == 0 {
		return fmtDur(p99)
	}
	base := a.baseHist.Percentile(99)
	return fmt.Sprintf("%s → %s (%.2f)", fmtDur(base), fmtDur(p99), float64(p99)/float64(base))
}
