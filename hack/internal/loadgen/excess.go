package loadgen

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// cpuPair is one baseline/sidecar pair of closed-loop runs: its round and
// the two servers' CPU time per request, ns.
type cpuPair struct {
	round        int
	base, server float64
}

// uncachedRow is a summary row of the excess table: a workload that
// verifies a signature on every check, its shape and connection count, and
// its pairs.
type uncachedRow struct {
	name, workload, shape string
	conns                 int
	pairs                 []cpuPair
}

// medianCPU is the medians over the row's pairs of the baseline's and
// the server's CPU per request; the row must have a pair.
func (row *uncachedRow) medianCPU() (base, server float64) {
	var b, s []float64
	for _, p := range row.pairs {
		b, s = append(b, p.base), append(s, p.server)
	}
	return median(b), median(s)
}

// cpuRatios is each pair's baseline CPU per request over the server's:
// the two runs of one minute, so that a drift of the machine's speed
// between rounds, which moves both alike, cancels out.
func (row *uncachedRow) cpuRatios() []float64 {
	rs := make([]float64, len(row.pairs))
	for i, p := range row.pairs {
		rs[i] = p.base / p.server
	}
	return rs
}

// uncachedExcess is one row of the excess table, against one verification
// of the row's algorithm.
type uncachedExcess struct {
	name, alg string
	// The medians over the pairs of the two servers' CPU per request, ns.
	baseCPU, serverCPU float64

	// Per pair: (sidecar − baseline) / the mean of the verifications
	// measured right before and right after it.
	perPair        []float64
	pairVerif      []float64 // those verifications, every run
	onSession      int       // pairs without one, divided by the session median instead
	noVerification int       // pairs without one and without a session median: left out

	// The session-wide verifications (before the first round, after the
	// last) and the medians' excess in their median.
	session       []float64
	sessionExcess float64
}

// excessOf is an uncached-token row's server CPU per request above the
// baseline's, in verifications of its algorithm: per pair, against the
// verifications that bracket that pair, and for the medians over the
// pairs, against the session-wide verifications. ok is false for other
// workloads, or when no pair can be set against any verification.
func excessOf(row uncachedRow, verif Verifications) (uncachedExcess, bool) {
	alg, ok := uncachedWorkloadAlgorithm[row.workload]
	if !ok || len(row.pairs) == 0 {
		return uncachedExcess{}, false
	}
	x := uncachedExcess{name: row.name, alg: alg, session: verif.session(alg)}
	for _, p := range row.pairs {
		v := verif.bracketing(alg, row.workload, row.shape, row.conns, p.round)
		x.pairVerif = append(x.pairVerif, v...)
		switch {
		case len(v) > 0:
			x.perPair = append(x.perPair, (p.server-p.base)/mean(v))
		case len(x.session) > 0:
			x.perPair = append(x.perPair, (p.server-p.base)/median(x.session))
			x.onSession++
		default:
			x.noVerification++
		}
	}
	if len(x.perPair) == 0 {
		return uncachedExcess{}, false
	}
	x.baseCPU, x.serverCPU = row.medianCPU()
	if len(x.session) > 0 {
		x.sessionExcess = (x.serverCPU - x.baseCPU) / median(x.session)
	}
	return x, true
}

// writeExcessTable prints, for every uncached-token row of the summary,
// the server's CPU per request above the baseline's in verifications of
// the same algorithm: per pair, in the verifications measured beside it,
// and for comparison the medians in the session-wide ones.
func writeExcessTable(sb *strings.Builder, rows []uncachedExcess) {
	if len(rows) == 0 {
		return
	}
	sb.WriteString("\n| server | protocol | shape | conns | workload | mode | server CPU/request above the baseline (medians) " +
		"| one verification beside the pairs (median, min–max, runs) | excess in verifications, per pair (median, min–max, pairs) " +
		"| one verification, session-wide (median, min–max, runs) | excess in session-wide verifications |\n")
	sb.WriteString("|---|---|---|---:|---|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		perPair := fmt.Sprintf("%.2f (%.2f–%.2f, %d)", median(r.perPair), slices.Min(r.perPair), slices.Max(r.perPair), len(r.perPair))
		if r.onSession > 0 {
			perPair += fmt.Sprintf(", %d of them on the session median (no verification beside them)", r.onSession)
		}
		if r.noVerification > 0 {
			perPair += fmt.Sprintf(", %d pairs left out (no verification at all)", r.noVerification)
		}
		sessionExcess := "—"
		if len(r.session) > 0 {
			sessionExcess = fmt.Sprintf("%.2f", r.sessionExcess)
		}
		fmt.Fprintf(sb, "| %s | %.1f µs | %s | %s | %s | %s |\n", r.name,
			(r.serverCPU-r.baseCPU)/float64(time.Microsecond), verificationCell(r.alg, r.pairVerif), perPair,
			verificationCell(r.alg, r.session), sessionExcess)
	}
}

// verificationCell is "RS256 30.0 µs (29.0–31.0, 3)", or "—" without a run.
func verificationCell(alg string, v []float64) string {
	if len(v) == 0 {
		return "—"
	}
	us := float64(time.Microsecond)
	return fmt.Sprintf("%s %.1f µs (%.1f–%.1f, %d)", alg, median(v)/us, slices.Min(v)/us, slices.Max(v)/us, len(v))
}

// mean returns the mean of xs; xs must not be empty.
func mean(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}
