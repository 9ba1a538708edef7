package authz

import (
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// limiters holds one token bucket per API key record: all keys of one
// APIKey, current and in grace, and every token exchanged from them
// (gatehouse_key_id) spend from it. Buckets live in this sidecar's
// memory only: the limit is per sidecar, so N replicas admit N times the
// rate (docs/sidecar.md says so).
type limiters struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	rps, burst int32
	lim        *rate.Limiter
}

func newLimiters() *limiters { return &limiters{buckets: map[string]*bucket{}} }

// take spends one token of rec's bucket at now and returns 0, or how long
// to wait when the bucket is empty (nothing is spent then).
func (l *limiters) take(rec snapshot.KeyRecord, now time.Time) time.Duration {
	rps, burst := rec.RateLimit()
	if rps <= 0 {
		return 0
	}
	burst = max(burst, 1)
	name := rec.Name()
	l.mu.Lock()
	b, ok := l.buckets[name]
	if !ok || b.rps != rps || b.burst != burst {
		b = &bucket{rps: rps, burst: burst, lim: rate.NewLimiter(rate.Limit(rps), int(burst))}
		// A copy: name shares the memory of the whole snapshot's records.
		l.buckets[strings.Clone(name)] = b
	}
	l.mu.Unlock()
	// AllowN spends nothing when the bucket is empty. ReserveN followed by
	// CancelAt does not: a cancel restores only what no later reservation
	// has claimed, so concurrent rejections leak tokens and the key loses
	// capacity for good (seen under load: 4 of a burst of 5 after a refill).
	if b.lim.AllowN(now, 1) {
		return 0
	}
	missing := 1 - b.lim.TokensAt(now)
	return max(time.Duration(missing/float64(rps)*float64(time.Second)), time.Millisecond)
}

func (l *limiters) prune(snap *snapshot.Snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) == 0 {
		return
	}
	live := map[string]bool{}
	snap.EachRecordName(func(name string) { live[name] = true })
	for name := range l.buckets {
		if !live[name] {
			delete(l.buckets, name)
		}
	}
}
