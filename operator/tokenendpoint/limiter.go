package tokenendpoint

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// failureLimiter counts failed authentications per client address and per
// key ID with token buckets, so that guessing keys or replaying a revoked one
// slows down to a trickle. The buckets live in a bounded LRU: an attacker
// spraying addresses only evicts old buckets, it cannot exhaust memory.
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

// blocked reports whether key has used up its failures, and when the next
// attempt may come.
func (l *failureLimiter) blocked(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets.Get(key)
	if !ok {
		return false, 0
	}
	if b.TokensAt(now) >= 1 {
		return false, 0
	}
	r := b.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return true, wait
}

// fail records a failed attempt for key.
func (l *failureLimiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets.Get(key)
	if !ok {
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets.Add(key, b)
	}
	b.AllowN(now, 1)
}
