package loadgen

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactPercentile is the nearest-rank percentile of sorted values.
func exactPercentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func TestEveryValueMapsToABucketWhoseBoundsContainIt(t *testing.T) {
	values := []uint64{0, 1, 127, 128, 255, 256, 257, 511, 512, 1000, 999_999, 1 << 40, math.MaxUint64 - 1, math.MaxUint64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, r.Uint64()>>r.UintN(64))
	}
	for _, v := range values {
		i := bucketIndex(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("value %d maps to bucket %d outside [0,%d)", v, i, numBuckets)
		}
		if up := bucketUpper(i); v > up {
			t.Fatalf("value %d is above the upper bound %d of its bucket %d", v, up, i)
		}
		if i > 0 {
			if lowUp := bucketUpper(i - 1); v <= lowUp {
				t.Fatalf("value %d also fits the previous bucket (upper %d)", v, lowUp)
			}
		}
	}
}

func TestPercentilesMatchTheExactNearestRankWithinTheHistogramPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	h := NewHistogram()
	var all []time.Duration
	for range 200_000 {
		// A long-tailed latency distribution between ~20µs and ~50ms.
		d := time.Duration(20_000 * math.Exp(r.ExpFloat64()*1.3))
		h.Record(d)
		all = append(all, d)
	}
	slices.Sort(all)
	for _, p := range []float64{1, 10, 50, 90, 99, 99.9, 99.99} {
		want := exactPercentile(all, p)
		got := h.Percentile(p)
		if got < want {
			t.Errorf("p%v = %v, below the exact %v: the histogram must report the bucket's upper bound", p, got, want)
		}
		if rel := float64(got-want) / float64(want); rel > 1.0/subBuckets {
			t.Errorf("p%v = %v, exact %v: relative error %.4f exceeds %.4f", p, got, want, rel, 1.0/subBuckets)
		}
	}
	if h.Max() != all[len(all)-1] || h.Min() != all[0] {
		t.Errorf("min/max = %v/%v, want exactly %v/%v", h.Min(), h.Max(), all[0], all[len(all)-1])
	}
	if h.Percentile(100) != h.Max() {
		t.Errorf("p100 = %v, want the maximum %v", h.Percentile(100), h.Max())
	}
}

func TestSmallSamplesUseNearestRankExactly(t *testing.T) {
	h := NewHistogram()
	for _, us := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 100} {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	// Ten values: p50 is the 5th, p90 the 9th, p99 the 10th.
	check := func(p float64, want time.Duration) {
		t.Helper()
		got := h.Percentile(p)
		if got < want || float64(got-want)/float64(want) > 1.0/subBuckets {
			t.Errorf("p%v = %v, want %v (within the bucket precision)", p, got, want)
		}
	}
	check(50, 5*time.Microsecond)
	check(90, 9*time.Microsecond)
	check(99, 100*time.Microsecond)
	if got := h.Mean(); got != 14500*time.Nanosecond {
		t.Errorf("mean = %v, want 14.5µs", got)
	}
}

func TestMergingHistogramsEqualsRecordingEverythingInOne(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for i := range 50_000 {
		d := time.Duration(r.IntN(5_000_000))
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		all.Record(d)
	}
	a.Merge(b)
	a.Merge(NewHistogram())
	if a.Summary() != all.Summary() {
		t.Errorf("merged summary %+v differs from the single histogram's %+v", a.Summary(), all.Summary())
	}
}

func TestAnEmptyHistogramReportsZeros(t *testing.T) {
	h := NewHistogram()
	if s := h.Summary(); s != (Summary{}) {
		t.Errorf("empty summary = %+v, want all zero", s)
	}
}

func TestNegativeDurationsAreRecordedAsZero(t *testing.T) {
	h := NewHistogram()
	h.Record(-time.Second)
	if h.Max() != 0 || h.Count() != 1 {
		t.Errorf("after recording -1s: max %v count %d, want 0 and 1", h.Max(), h.Count())
	}
}

func TestAHistogramSurvivesJSONAndBadJSONIsRefused(t *testing.T) {
	h := NewHistogram()
	for _, d := range []time.Duration{0, 90 * time.Microsecond, 90 * time.Microsecond, 3 * time.Millisecond, time.Hour} {
		h.Record(d)
	}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	back := &Histogram{}
	if err := json.Unmarshal(b, back); err != nil {
		t.Fatal(err)
	}
	if *back != *h {
		t.Errorf("read back %+v, want %+v", back.Summary(), h.Summary())
	}
	for _, bad := range []string{
		`{"buckets":{"-1":1},"count":1}`,
		`{"buckets":{"999999":1},"count":1}`,
		`{"buckets":{"3":1},"count":2}`,
	} {
		if err := json.Unmarshal([]byte(bad), &Histogram{}); err == nil {
			t.Errorf("%s was read", bad)
		}
	}
}
