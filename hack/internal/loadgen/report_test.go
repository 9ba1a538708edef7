package loadgen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTheTableComparesEachRunToTheBaselineOfTheSameProtocolShapeConnectionsWorkloadAndMode(t *testing.T) {
	results := []*Result{
		{Label: "baseline", Protocol: "grpc", Shape: "envoy", Conns: 1, Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 20000},
		{Label: "sidecar", Protocol: "grpc", Shape: "envoy", Conns: 1, Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 18000},
		{Label: "sidecar", Protocol: "grpc", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 24000},
		{Label: "baseline", Protocol: "grpc", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 30000},
		{Label: "baseline", Protocol: "http", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 20000},
		{Label: "sidecar", Protocol: "http", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 5000},
		{Label: "sidecar", Protocol: "grpc", Workload: "apikey", Mode: "open", Rate: 1000, Throughput: 1000, Latency: Summary{P99: 850 * time.Microsecond}},
		{Label: "sidecar", Protocol: "grpc", Workload: "deny", Mode: "closed", Concurrency: 32, Throughput: 26000},
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, results, "baseline", nil); err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	runs, _, _ := strings.Cut(buf.String(), "\n\n") // the per-run table
	for _, line := range strings.Split(runs, "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) > 8 {
			rows[strings.Join([]string{strings.TrimPrefix(cells[0], "| "), cells[1], cells[2], cells[3], cells[4], cells[5]}, "/")] = cells[8]
		}
	}
	for row, want := range map[string]string{
		"sidecar/grpc/compact/—/apikey/closed c=32":  "0.80", // 24000/30000
		"baseline/grpc/compact/—/apikey/closed c=32": "1.00",
		"sidecar/grpc/envoy/1/apikey/closed c=32":    "0.90", // against the envoy-shaped, one-connection baseline only
		"sidecar/http/compact/—/apikey/closed c=32":  "0.25", // against the HTTP baseline only
		"sidecar/grpc/compact/—/apikey/open 1000/s":  "—",    // open-loop rates are set, not measured
		"sidecar/grpc/compact/—/deny/closed c=32":    "—",    // no baseline for this workload
	} {
		if got, ok := rows[row]; !ok || got != want {
			t.Errorf("row %s: ratio %q, want %q\n%s", row, got, want, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "850µs") {
		t.Errorf("the open-loop p99 is missing:\n%s", buf.String())
	}
	// Baseline rows come first within a group.
	if strings.Index(buf.String(), "| baseline | grpc | compact | — | apikey | closed") > strings.Index(buf.String(), "| sidecar | grpc | compact | — | apikey | closed") {
		t.Errorf("the baseline row should precede the sidecar row:\n%s", buf.String())
	}
}

func TestResultsRoundTripThroughTheResultsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.jsonl")
	in := []*Result{
		{Label: "a", Workload: "apikey", Mode: "closed", Completed: 7, Latency: Summary{P50: time.Millisecond}},
		{Label: "b", Workload: "deny", Mode: "open", Rate: 10, SendLag: &Summary{P99: time.Microsecond}},
	}
	for _, r := range in {
		if err := AppendResult(path, r); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := ReadResults(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Completed != 7 || out[0].Latency.P50 != time.Millisecond || out[1].SendLag.P99 != time.Microsecond {
		t.Errorf("read back %+v %+v", out[0], out[1])
	}
}

func TestTheSummaryGivesTheMedianRatioOverRoundsAndTheCPUPerRequestRatio(t *testing.T) {
	var results []*Result
	for round, sidecar := range []float64{24000, 18000, 27000} {
		results = append(results,
			&Result{Label: "baseline", Protocol: "grpc", Workload: "apikey", Mode: "closed", Concurrency: 32, Round: round, Throughput: 30000, ServerCPU: 0.9},
			&Result{Label: "sidecar", Protocol: "grpc", Workload: "apikey", Mode: "closed", Concurrency: 32, Round: round, Throughput: sidecar, ServerCPU: 0.9 * sidecar / 24000},
		)
	}
	buf, summary := summaryOf(t, results)
	// Ratios 0.80, 0.60, 0.90: median 0.80. CPU per request: baseline
	// 30 µs, sidecar 37.5 µs in every round: 0.80.
	want := "| sidecar | grpc | compact | — | apikey | closed c=32 | 3 | 0.80 (0.60–0.90) | 30.0 → 37.5 µs | 0.80 | 0.80 (0.80–0.80) |"
	if !strings.Contains(summary, want) {
		t.Errorf("summary lacks %q:\n%s", want, summary)
	}
	if !strings.Contains(buf, "| 37.5µs |") {
		t.Errorf("the per-run table lacks the sidecar's 37.5µs CPU per request:\n%s", buf)
	}
}

// When the machine's speed drifts between rounds, the ratio of the two
// medians sets one minute's baseline against another minute's sidecar;
// the pairs' ratios each compare the two runs of one minute. The figures
// are those of a real run (2026-12-01 19:08, jwt-cached, compact, one
// connection), whose baseline went from 14.9 to 21.7 µs a check.
func TestTheSummaryGivesTheCPURatioOfEachPair(t *testing.T) {
	var results []*Result
	for round, us := range [][2]float64{{14.9, 17.9}, {16.3, 23.4}, {21.7, 21.4}} {
		for i, label := range []string{"baseline", "sidecar"} {
			results = append(results, &Result{Label: label, Protocol: "grpc", Workload: "jwt-cached", Mode: "closed", Concurrency: 32,
				Round: round, Throughput: 40000, ServerCPU: us[i] * 1e-6 * 40000})
		}
	}
	_, summary := summaryOf(t, results)
	// Medians 16.3 and 21.4 µs: 0.76. Pairs 0.83, 0.70, 1.01: median 0.83.
	want := "| 16.3 → 21.4 µs | 0.76 | 0.83 (0.70–1.01) |"
	if !strings.Contains(summary, want) {
		t.Errorf("summary lacks %q:\n%s", want, summary)
	}
}

// summaryOf is the table WriteTable prints for results without
// verifications, whole and from the summary on.
func summaryOf(t *testing.T, results []*Result) (table, summary string) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTable(&buf, results, "baseline", nil); err != nil {
		t.Fatal(err)
	}
	_, summary, _ = strings.Cut(buf.String(), "\n\n")
	return buf.String(), summary
}

func TestMedianOfOddAndEvenCounts(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median of 3,1,2 = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 4,1,3,2 = %v", m)
	}
}

// TestTheSummaryPoolsOpenLoopLatenciesOverTheRounds: one round's two slow
// baseline requests make that round's p99 (the 99th of 100), but not the
// p99 of the 200 pooled requests.
func TestTheSummaryPoolsOpenLoopLatenciesOverTheRounds(t *testing.T) {
	hist := func(fast, fastN int, slow time.Duration, slowN int) *Histogram {
		h := NewHistogram()
		for range fastN {
			h.Record(time.Duration(fast) * time.Microsecond)
		}
		for range slowN {
			h.Record(slow)
		}
		return h
	}
	open := func(label string, round int, h *Histogram) *Result {
		return &Result{Label: label, Protocol: "grpc", Conns: 1, Workload: "apikey", Mode: "open", Rate: 1000, Round: round,
			Throughput: 1000, Latency: h.Summary(), LatencyHistogram: h}
	}
	results := []*Result{
		open("baseline", 1, hist(100, 98, 10*time.Millisecond, 2)),
		open("sidecar", 1, hist(200, 100, 0, 0)),
		open("baseline", 2, hist(100, 100, 0, 0)),
		open("sidecar", 2, hist(200, 100, 0, 0)),
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, results, "baseline", nil); err != nil {
		t.Fatal(err)
	}
	var sidecar, baseline string
	for line := range strings.SplitSeq(buf.String(), "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) != 16 {
			continue // not the summary
		}
		switch strings.TrimPrefix(cells[0], "| ") {
		case "sidecar":
			sidecar = strings.TrimSuffix(cells[15], " |")
		case "baseline":
			baseline = strings.TrimSuffix(cells[15], " |")
		}
	}
	// 1.99, not 2: a pooled p99 is its bucket's upper bound (within 0.8%),
	// below the maximum only for the baseline.
	if want := "100µs → 200µs (1.99)"; sidecar != want {
		t.Errorf("sidecar's pooled p99 cell %q, want %q (the median of the rounds' p99s would compare with 5.05 ms)\n%s", sidecar, want, buf.String())
	}
	if baseline != "100µs" {
		t.Errorf("baseline's pooled p99 cell %q, want 100µs", baseline)
	}
}
