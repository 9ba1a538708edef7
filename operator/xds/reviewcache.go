package xds

import (
	"context"
	"crypto/sha256"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/sync/singleflight"
	"k8s.io/utils/clock"
)

// Defaults of the review cache.
const (
	// DefaultReviewTTL bounds how long a successful review is reused: a
	// token the API server stops accepting (its pod deleted, its
	// ServiceAccount removed) can open streams for this long at most,
	// where a stream already open lives up to MaxConnectionAge anyway.
	DefaultReviewTTL = time.Minute
	// DefaultReviewCacheSize bounds the reviews remembered, one per
	// token (about 200 bytes each).
	DefaultReviewCacheSize = 10000
	// reviewTimeout bounds one TokenReview, which a stream that goes away
	// does not cancel while others wait for it.
	reviewTimeout = 10 * time.Second
)

// CachingReviewer remembers the identities next accepted, keyed by the
// SHA-256 of the token, so that a sidecar whose streams end and reopen (a
// flapping connection, a failover, retries after an error) does not cost
// a TokenReview each time; concurrent reviews of one token are made once.
//
// Projected tokens are bound to their pod, so sidecars of one
// ServiceAccount do not share a token: after an operator restart every
// sidecar still costs one review on the replica it reaches.
//
// A review is reused until the earlier of TTL and the token's own expiry
// (the exp claim of the JWT, trusted only because the API server has just
// accepted the token; TokenReview's status does not say). Failures are
// never cached: refusing a valid token for longer because one review
// failed (an API server hiccup, a token minted a moment ago) would make a
// transient error last, and a cache of failures keyed by token does
// nothing against a caller who sends a new garbage token each time.
// The token itself is never stored: only its hash, as the key of the
// cache and of the review in flight.
type CachingReviewer struct {
	next    TokenReviewer
	ttl     time.Duration
	clock   clock.PassiveClock
	cache   *lru.Cache[[sha256.Size]byte, cachedReview]
	flight  singleflight.Group
	metrics *reviewMetrics
	// waiting counts callers waiting for a review in flight (tests).
	waiting atomic.Int32
}

type cachedReview struct {
	id      Identity
	expires time.Time
}

var _ TokenReviewer = (*CachingReviewer)(nil)

// NewCachingReviewer caches next's successful reviews: at most size of
// them (DefaultReviewCacheSize when 0), each for ttl (DefaultReviewTTL
// when 0) or until its token expires. clk is the real clock when nil;
// metrics may be nil.
func NewCachingReviewer(next TokenReviewer, size int, ttl time.Duration, clk clock.PassiveClock, metrics *reviewMetrics) *CachingReviewer {
	if size <= 0 {
		size = DefaultReviewCacheSize
	}
	if ttl <= 0 {
		ttl = DefaultReviewTTL
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	c, err := lru.New[[sha256.Size]byte, cachedReview](size)
	if err != nil {
		panic(err) // only for size <= 0, excluded above
	}
	return &CachingReviewer{next: next, ttl: ttl, clock: clk, cache: c, metrics: metrics}
}

// Review implements TokenReviewer.
func (r *CachingReviewer) Review(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	if c, ok := r.cache.Get(key); ok && r.clock.Now().Before(c.expires) {
		r.metrics.cacheHit()
		return c.id, nil
	}
	// The review runs apart from this stream's cancellation, so that a
	// stream that goes away does not fail the others waiting for it.
	ch := r.flight.DoChan(string(key[:]), func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		return r.review(rctx, token, key)
	})
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	select {
	case res := <-ch:
		if res.Err != nil {
			return Identity{}, res.Err
		}
		return res.Val.(Identity), nil
	case <-ctx.Done():
		return Identity{}, ctx.Err()
	}
}

// review asks next and remembers a success.
func (r *CachingReviewer) review(ctx context.Context, token string, key [sha256.Size]byte) (Identity, error) {
	id, err := r.next.Review(ctx, token)
	r.metrics.reviewed(err)
	if err != nil {
		return Identity{}, err
	}
	now := r.clock.Now()
	expires := now.Add(r.ttl)
	if exp, ok := tokenExpiry(token); ok && exp.Before(expires) {
		expires = exp
	}
	if now.Before(expires) {
		r.cache.Add(key, cachedReview{id: id, expires: expires})
	}
	return id, nil
}

// tokenExpiry is the exp claim of a JWT, unverified: call it only for a
// token the API server has accepted.
func tokenExpiry(token string) (time.Time, bool) {
	t, err := jwt.ParseInsecure([]byte(token))
	if err != nil || t.Expiration().IsZero() {
		return time.Time{}, false
	}
	return t.Expiration(), true
}
