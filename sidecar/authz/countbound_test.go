package authz

import "testing"

// boundedHeaders has a bound and a count; counting when the bound
// already answers fails the test.
type boundedHeaders struct {
	t            *testing.T
	bound, count int
	noCounting   bool
}

func (h boundedHeaders) Values(string) []string { return nil }
func (h boundedHeaders) CountBound() int        { return h.bound }
func (h boundedHeaders) Count() int {
	if h.noCounting {
		h.t.Error("counted although the bound is within the limit")
	}
	return h.count
}

// TestCountAboveCountsOnlyWhenTheBoundExceedsTheLimit: the limit on
// header fields is decided by Count; the bound only spares counting when
// it is within the limit (repeated names make the bound exceed Count).
func TestCountAboveCountsOnlyWhenTheBoundExceedsTheLimit(t *testing.T) {
	for _, tc := range []struct {
		h    boundedHeaders
		want bool
	}{
		{boundedHeaders{t: t, bound: 128, count: 128, noCounting: true}, false},
		{boundedHeaders{t: t, bound: 12, count: 10, noCounting: true}, false},
		{boundedHeaders{t: t, bound: 300, count: 100}, false},
		{boundedHeaders{t: t, bound: 300, count: 129}, true},
	} {
		if got := countAbove(tc.h, 128); got != tc.want {
			t.Errorf("bound %d, count %d: countAbove = %v, want %v", tc.h.bound, tc.h.count, got, tc.want)
		}
	}
}
