package tokenendpoint

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// failureLimiter counts failed authentications per client address or per
// key ID with token buckets. It is consulted only after a request has been
// verified and has failed, so it can never refuse a correct key: a bucket
// that is empty turns the answer to a failure into "slow down", nothing
// more. The buckets live in a bounded LRU: an attacker spraying addresses
// only evicts old buckets, it cannot exhaust memory.
type failureLimiter struct {
	mu      sync.Mutex
	buckets *lru.Cache[string, *rate.Limiter]
	every   rate.Limit
	burst   int
}

func newFailureLimiter(size int, perMinute float64, burst int) *failureLimiter {
	c, err := lru.New[string, *rate.Limiter](size)
	if err != nil {
		panic(err) // only for size <= 0, a programming error
	}
	return &failureLimiter{buckets: c, every: rate.Limit(perMinute / 60), burst: burst}
}

// fail records a failed attempt for key and reports whether key had used
// up its failures before this one, and if so when the next failure would
// fit in the bucket again.
func (l *failureLimiter) fail(key string, now time.Time) (exceeded bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets.Get(key)
	if !ok {
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets.Add(key, b)
	}
	if b.AllowN(now, 1) {
		return false, 0
	}
	r := b.ReserveN(now, 1)
	wait = r.DelayFrom(now)
	r.CancelAt(now)
	return true, wait
}
