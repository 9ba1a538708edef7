package loadgen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
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

// WriteTable prints a Markdown table comparing every result to the result of
// the baseline label with the same workload and mode: throughput ratio for
// closed-loop runs, latencies for all.
func WriteTable(w io.Writer, results []*Result, baseline string) error {
	type key struct{ protocol, workload, mode string }
	base := map[key]*Result{}
	for _, r := range results {
		if r.Label == baseline {
			base[key{r.Protocol, r.Workload, r.Mode}] = r
		}
	}
	rows := append([]*Result(nil), results...)
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		if a.Mode != b.Mode {
			return a.Mode < b.Mode
		}
		if a.Workload != b.Workload {
			return a.Workload < b.Workload
		}
		return a.Label == baseline && b.Label != baseline
	})
	var sb strings.Builder
	sb.WriteString("| server | protocol | workload | mode | req/s | ratio to baseline | p50 | p90 | p99 | max | requests | wrong | errors | server CPU | client CPU |\n")
	sb.WriteString("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		ratio := "—"
		if b := base[key{r.Protocol, r.Workload, r.Mode}]; b != nil && r.Mode == "closed" && b.Throughput > 0 {
			ratio = fmt.Sprintf("%.2f", r.Throughput/b.Throughput)
		}
		mode := fmt.Sprintf("closed c=%d", r.Concurrency)
		if r.Mode == "open" {
			mode = fmt.Sprintf("open %.0f/s", r.Rate)
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %d | %d | %d | %s | %s |\n",
			r.Label, r.Protocol, r.Workload, mode, r.Throughput, ratio,
			fmtDur(r.Latency.P50), fmtDur(r.Latency.P90), fmtDur(r.Latency.P99), fmtDur(r.Latency.Max),
			r.Completed, r.Wrong, r.Errors, fmtShare(r.ServerCPU), fmtShare(r.ClientCPU))
	}
	_, err := io.WriteString(w, sb.String())
	return err
}
