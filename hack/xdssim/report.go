package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is what a run measured, printed as one table.
type report struct {
	o                  options
	Started, Ended     time.Time
	LoadStart, LoadEnd string

	Created, Reconciled time.Duration

	Fleet struct {
		Ran, Measured       bool
		Ready               time.Duration
		InitialBytes        float64 // mean bytes received until ready, per sidecar
		Before, After       operatorReading
		APIBefore, APIAfter apiTraffic
		Revocation          []time.Duration
		ReconnectBytes      int64
		Violations          int
		ValidKeyRemovals    int
	}
	FullChecked int

	Informers struct {
		Ran, Measured       bool
		Ready               time.Duration
		APIBefore, APIAfter apiTraffic
		Revocation          []time.Duration
	}

	Failures []string
}

func newReport(o options) *report {
	return &report{o: o, Started: time.Now().UTC(), LoadStart: loadAverage()}
}

func (r *report) fail(msg string) { r.Failures = append(r.Failures, msg) }

func (r *report) finish() {
	r.Ended = time.Now().UTC()
	r.LoadEnd = loadAverage()
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// percentile is the p-th percentile (nearest rank) of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func fanOut(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	return fmt.Sprintf("p50 %s, p99 %s, max %s (%d sidecars)", ms(percentile(s, 50)), ms(percentile(s, 99)), ms(s[len(s)-1]), len(s))
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/(1<<10)) }

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	o := r.o
	fmt.Fprintf(w, "\nxdssim: %d simulated sidecars, %d keys (+%d in another namespace), %d full sidecars, %d informer sidecars\n",
		o.Sidecars, o.Keys, o.OtherKeys, o.FullSidecars, o.Informers)
	row("run", "%s – %s UTC, load average %s at start, %s at end",
		r.Started.Format("2006-01-02 15:04:05"), r.Ended.Format("15:04:05"), r.LoadStart, r.LoadEnd)
	if r.Created > 0 {
		row("APIKeys created", "%v (%.0f/s)", r.Created.Round(time.Millisecond), float64(o.Keys+o.OtherKeys)/r.Created.Seconds())
	}
	if r.Reconciled > 0 {
		row("operator reconciled them", "%v (%.0f/s)", r.Reconciled.Round(time.Millisecond), float64(o.Keys+o.OtherKeys)/r.Reconciled.Seconds())
	}
	if f := r.Fleet; f.Ran {
		r.printFleet(row)
	}
	row("full sidecars checked", "%d of %d (deny the revoked key, allow a valid one)", r.FullChecked, o.FullSidecars)
	if r.Informers.Ran {
		r.printInformers(row)
	}
	row("result", "%s", map[bool]string{true: "PASS", false: fmt.Sprintf("FAIL (%d)", len(r.Failures))}[len(r.Failures) == 0])
	_ = tw.Flush()
}

func (r *report) printFleet(row func(string, string, ...any)) {
	f, n := r.Fleet, float64(r.o.Sidecars)
	if !f.Measured {
		row("xDS fleet", "did not complete (see the failures)")
		return
	}
	d := f.APIAfter.minus(f.APIBefore)
	row("xDS: all ready after simultaneous start", "%v", f.Ready.Round(time.Millisecond))
	row("xDS: bytes to one sidecar until ready", "%s (%.0f bytes per key)", kib(f.InitialBytes), f.InitialBytes/float64(r.o.Keys))
	row("operator CPU to connect them", "%v in all, %.2f ms per sidecar",
		(f.After.CPU - f.Before.CPU).Round(time.Millisecond), float64(f.After.CPU-f.Before.CPU)/float64(time.Millisecond)/n)
	growth := func(name string, before, after float64) {
		row(name, "%s → %s, %s per sidecar", mib(before), mib(after), kib((after-before)/n))
	}
	growth("operator RSS", float64(f.Before.RSS), float64(f.After.RSS))
	growth("operator heap in use", f.Before.HeapInuse, f.After.HeapInuse)
	growth("operator live heap (after forced GCs)", f.Before.HeapLive, f.After.HeapLive)
	row("API server, xDS fleet connecting", "watches %+.0f (%.0f open), LISTs %+.0f (%s), watch events %+.0f (%s)",
		d.Watches, f.APIAfter.Watches, d.Lists, kib(d.ListBytes), d.WatchEvents, kib(d.WatchEventBytes))
	row("xDS revocation fan-out", "%s", fanOut(f.Revocation))
	row("xDS reconnect after one change", "%d bytes to the sidecar", f.ReconnectBytes)
	row("xDS violations", "%d; valid key removed %d times", f.Violations, f.ValidKeyRemovals)
}

func (r *report) printInformers(row func(string, string, ...any)) {
	in, m := r.Informers, float64(r.o.Informers)
	if !in.Measured {
		row("informers", "did not complete (see the failures)")
		return
	}
	d := in.APIAfter.minus(in.APIBefore)
	row("informers: all synced after simultaneous start", "%v", in.Ready.Round(time.Millisecond))
	row("API server, informers starting", "watches %+.0f (%.0f open), LISTs %+.0f (%s), watch events %+.0f (%s)",
		d.Watches, in.APIAfter.Watches, d.Lists, mib(d.ListBytes), d.WatchEvents, kib(d.WatchEventBytes))
	row("informers: LIST+watch bytes per sidecar", "%s (%.0f bytes per key)",
		kib((d.ListBytes+d.WatchEventBytes)/m), (d.ListBytes+d.WatchEventBytes)/m/float64(r.o.Keys))
	row("informer revocation fan-out", "%s", fanOut(in.Revocation))
}
