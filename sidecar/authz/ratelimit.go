package authz

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"gatehouse.dev/gatehouse/internal/apikey"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// limiters holds one token bucket per API key record (all keys of one
// APIKey, current and in grace, share it). Buckets live in this sidecar's
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

func recordName(rec *apikey.Record) string { return rec.Namespace + "/" + rec.Name }

// take spends one token of rec's bucket at now and returns 0, or how long
// to wait when the bucket is empty (nothing is spent then).
func (l *limiters) take(rec *apikey.Record, now time.Time) time.Duration {
	rl := rec.RateLimit
	if rl == nil || rl.RequestsPerSecond <= 0 {
		return 0
	}
	burst := max(rl.Burst, 1)
	name := recordName(rec)
	l.mu.Lock()
	b, ok := l.buckets[name]
	if !ok || b.rps != rl.RequestsPerSecond || b.burst != burst {
		b = &bucket{rps: rl.RequestsPerSecond, burst: burst, lim: rate.NewLimiter(rate.Limit(rl.RequestsPerSecond), int(burst))}
		l.buckets[name] = b
	}
	l.mu.Unlock()
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return time.Second
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now)
		return wait
	}
	return 0
}

func (l *limiters) prune(snap *snapshot.Snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) == 0 {
		return
	}
	live := map[string]bool{}
	snap.EachRecord(func(r *apikey.Record) { live[recordName(r)] = true })
	for name := range l.buckets {
		if !live[name] {
			delete(l.buckets, name)
		}
	}
}
