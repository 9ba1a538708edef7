package loadgen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTheTableComparesEachRunToTheBaselineOfTheSameProtocolWorkloadAndMode(t *testing.T) {
	results := []*Result{
		{Label: "sidecar", Protocol: "grpc", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 24000},
		{Label: "baseline", Protocol: "grpc", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 30000},
		{Label: "baseline", Protocol: "http", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 20000},
		{Label: "sidecar", Protocol: "http", Workload: "apikey", Mode: "closed", Concurrency: 32, Throughput: 5000},
		{Label: "sidecar", Protocol: "grpc", Workload: "apikey", Mode: "open", Rate: 1000, Throughput: 1000, Latency: Summary{P99: 850 * time.Microsecond}},
		{Label: "sidecar", Protocol: "grpc", Workload: "deny", Mode: "closed", Concurrency: 32, Throughput: 26000},
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, results, "baseline"); err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(buf.String(), "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) > 5 {
			rows[strings.TrimPrefix(cells[0], "| ")+"/"+cells[1]+"/"+cells[2]+"/"+cells[3]] = cells[5]
		}
	}
	for row, want := range map[string]string{
		"sidecar/grpc/apikey/closed c=32":  "0.80", // 24000/30000
		"baseline/grpc/apikey/closed c=32": "1.00",
		"sidecar/http/apikey/closed c=32":  "0.25", // against the HTTP baseline only
		"sidecar/grpc/apikey/open 1000/s":  "—",    // open-loop rates are set, not measured
		"sidecar/grpc/deny/closed c=32":    "—",    // no baseline for this workload
	} {
		if got, ok := rows[row]; !ok || got != want {
			t.Errorf("row %s: ratio %q, want %q\n%s", row, got, want, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "850µs") {
		t.Errorf("the open-loop p99 is missing:\n%s", buf.String())
	}
	// Baseline rows come first within a group.
	if strings.Index(buf.String(), "| baseline | grpc | apikey | closed") > strings.Index(buf.String(), "| sidecar | grpc | apikey | closed") {
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
