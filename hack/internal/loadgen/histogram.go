package loadgen

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// subBucketBits sets the histogram precision: every power-of-two range is
// split into 2^subBucketBits linear buckets, so a recorded value is known to
// within 1/2^subBucketBits (under 0.8%) of its true value.
const subBucketBits = 7

const (
	subBuckets = 1 << subBucketBits
	// linearLimit is the first value that no longer gets a bucket of its own.
	linearLimit = 2 * subBuckets
	// numBuckets covers every uint64: the linear range plus one row of
	// subBuckets for each possible shift.
	numBuckets = linearLimit + (64-subBucketBits-1)*subBuckets
)

// Histogram records durations in nanoseconds in log-linear buckets with a
// relative error under 0.8%. Recording never allocates. A Histogram is not
// safe for concurrent use: give each worker its own and Merge them.
type Histogram struct {
	counts [numBuckets]uint64
	count  uint64
	sum    uint64
	min    uint64
	max    uint64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxUint64} }

// bucketIndex maps a value to its bucket.
func bucketIndex(v uint64) int {
	if v < linearLimit {
		return int(v)
	}
	shift := bits.Len64(v) - subBucketBits - 1                      // >= 1
	top := v >> uint(shift)                                         // in [subBuckets, 2*subBuckets)
	return linearLimit + (shift-1)*subBuckets + int(top-subBuckets) //nolint:gosec // top-subBuckets < subBuckets
}

// bucketUpper returns the largest value that maps to bucket i.
func bucketUpper(i int) uint64 {
	if i < linearLimit {
		return uint64(i) //nolint:gosec // 0 <= i < linearLimit
	}
	row := (i - linearLimit) / subBuckets
	shift := uint(row + 1)
	top := uint64(subBuckets + (i-linearLimit)%subBuckets)
	return (top+1)<<shift - 1
}

// Record adds one duration. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketIndex(v)]++
	h.count++
	h.sum += v
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.count == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.count += o.count
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.count }

// Max returns the largest recorded value exactly, or 0 when empty.
func (h *Histogram) Max() time.Duration { return toDuration(h.max) }

// Min returns the smallest recorded value exactly, or 0 when empty.
func (h *Histogram) Min() time.Duration {
	if h.count == 0 {
		return 0
	}
	return toDuration(h.min)
}

// Mean returns the exact arithmetic mean, or 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return toDuration(h.sum / h.count)
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100): the
// smallest recorded value such that at least p% of the values are at or
// below it, reported as the upper bound of its bucket and never above the
// exact maximum. p <= 0 returns the minimum; an empty histogram returns 0.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	if p <= 0 {
		return h.Min()
	}
	if p >= 100 {
		return h.Max()
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.count)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return toDuration(min(bucketUpper(i), h.max))
		}
	}
	return h.Max()
}

// toDuration converts nanoseconds, saturating at the largest Duration.
func toDuration(ns uint64) time.Duration {
	if ns > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// Summary is the latency digest reported for a run.
type Summary struct {
	Count uint64        `json:"count"`
	Min   time.Duration `json:"min"`
	Mean  time.Duration `json:"mean"`
	P50   time.Duration `json:"p50"`
	P90   time.Duration `json:"p90"`
	P99   time.Duration `json:"p99"`
	P999  time.Duration `json:"p999"`
	Max   time.Duration `json:"max"`
}

// Summary digests the histogram.
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.count,
		Min:   h.Min(),
		Mean:  h.Mean(),
		P50:   h.Percentile(50),
		P90:   h.Percentile(90),
		P99:   h.Percentile(99),
		P999:  h.Percentile(99.9),
		Max:   h.Max(),
	}
}

// histogramJSON is a Histogram as JSON: only the buckets that hold values,
// by index.
type histogramJSON struct {
	Buckets map[int]uint64 `json:"buckets"`
	Count   uint64         `json:"count"`
	Sum     uint64         `json:"sum"`
	Min     uint64         `json:"min"`
	Max     uint64         `json:"max"`
}

// MarshalJSON writes the histogram's non-empty buckets, so that runs can
// be pooled after the fact (a result file keeps them).
func (h *Histogram) MarshalJSON() ([]byte, error) {
	out := histogramJSON{Buckets: map[int]uint64{}, Count: h.count, Sum: h.sum, Min: h.min, Max: h.max}
	for i, c := range h.counts {
		if c > 0 {
			out.Buckets[i] = c
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON wrote, and refuses a bucket out of
// range or counts that do not add up.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var in histogramJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*h = Histogram{count: in.Count, sum: in.Sum, min: in.Min, max: in.Max}
	var total uint64
	for i, c := range in.Buckets {
		if i < 0 || i >= numBuckets {
			return fmt.Errorf("histogram bucket %d out of range", i)
		}
		h.counts[i] = c
		total += c
	}
	if total != h.count {
		return fmt.Errorf("histogram buckets hold %d values, count says %d", total, h.count)
	}
	return nil
}
