package app_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// docSection returns the lines of docs/sidecar.md under the heading
// "## title", up to the next "## " heading.
func docSection(t *testing.T, title string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "sidecar.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = line == "## "+title
			continue
		}
		if in {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		t.Fatalf("docs/sidecar.md has no section %q", title)
	}
	return out
}

// tableRows returns the cells of the section's table rows whose first cell
// is code (`...`), keyed by that first cell without the backticks.
func tableRows(lines []string) map[string][]string {
	rows := map[string][]string{}
	first := regexp.MustCompile("^`([^`]+)`$")
	for _, line := range lines {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if m := first.FindStringSubmatch(cells[0]); m != nil {
			rows[m[1]] = cells
		}
	}
	return rows
}

// TestTheFlagsTableMatchesTheFlags keeps docs/sidecar.md's flags table in
// step with Flags.BindFlags: every flag has a row whose default is the
// flag's, and every row is a flag.
func TestTheFlagsTableMatchesTheFlags(t *testing.T) {
	fs := pflag.NewFlagSet("gatehouse-sidecar", pflag.ContinueOnError)
	(&app.Flags{}).BindFlags(fs)
	rows := tableRows(docSection(t, "Flags"))
	seen := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		name := "--" + f.Name
		if strings.HasPrefix(f.Name, "zap-") {
			name = "--zap-*"
		}
		seen[name] = true
		row, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("docs/sidecar.md's flags table has no row for %s", name)
		case name == "--zap-*":
		case f.DefValue != "" && !strings.Contains(row[1], "`"+f.DefValue+"`"):
			t.Errorf("docs/sidecar.md gives %s the default %q; the flag's is `%s`", name, row[1], f.DefValue)
		}
	})
	for name := range rows {
		if !seen[name] {
			t.Errorf("docs/sidecar.md's flags table documents %s, which the sidecar does not have", name)
		}
	}
}

// TestTheMetricsTableMatchesTheMetrics keeps docs/sidecar.md's metrics
// table in step with sidecar/metrics: every gatehouse_ metric has a row
// naming its labels, and every row is a metric.
func TestTheMetricsTableMatchesTheMetrics(t *testing.T) {
	m := metrics.New(&snapshot.Store{}, time.Now)
	// Vectors are gathered only once they have a child.
	m.ObserveDecision("grpc", &authz.Decision{Allowed: true, Reason: authz.Authenticated}, time.Millisecond)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	rows := tableRows(docSection(t, "Metrics"))
	seen := map[string]bool{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "gatehouse_") {
			continue
		}
		seen[f.GetName()] = true
		row, ok := rows[f.GetName()]
		if !ok {
			t.Errorf("docs/sidecar.md's metrics table has no row for %s", f.GetName())
			continue
		}
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		var documented []string
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(row[1], -1) {
			documented = append(documented, m[1])
		}
		slices.Sort(labels)
		slices.Sort(documented)
		if !slices.Equal(labels, documented) {
			t.Errorf("docs/sidecar.md gives %s the labels %v; it has %v", f.GetName(), documented, labels)
		}
	}
	if len(seen) == 0 {
		t.Fatal("the registry gathered no gatehouse_ metric; the test reads the wrong registry")
	}
	for name := range rows {
		if !seen[name] {
			t.Errorf("docs/sidecar.md's metrics table documents %s, which the sidecar does not export", name)
		}
	}
}
