package xds

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"
)

// countingReviewer accepts the tokens in ok and counts the reviews it is
// asked for; with gate set, every review waits for gate to close.
type countingReviewer struct {
	ok    map[string]Identity
	gate  chan struct{}
	calls atomic.Int32
}

func (f *countingReviewer) Review(ctx context.Context, token string) (Identity, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return Identity{}, ctx.Err()
		}
	}
	if id, ok := f.ok[token]; ok {
		return id, nil
	}
	return Identity{}, errors.New("token not authenticated")
}

// unsignedJWT is a JWT whose claims hold exp; its signature is garbage,
// as the cache reads exp only from tokens the reviewer accepted.
func unsignedJWT(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(fmt.Appendf(nil, `{"sub":"x","exp":%d}`, exp.Unix())) + "." + enc([]byte("sig"))
}

// shop is a sidecar's identity; a cached review must give back all of
// it, the pod its token is bound to included (the bound on streams per
// pod counts by it).
var shop = Identity{Namespace: "shop", ServiceAccount: "default", PodName: "orders-1", PodUID: "uid-orders-1"}

func TestCachingReviewerReusesSuccessesForTheTTLOrUntilTheTokenExpires(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		token string
		// fresh and stale are the clock steps after which the cached
		// review is still used, and no longer.
		fresh, stale time.Duration
	}{
		{"an opaque token is reused for the TTL", "opaque", 59 * time.Second, time.Minute},
		{"a JWT expiring after the TTL is reused for the TTL", unsignedJWT(now.Add(time.Hour)), 59 * time.Second, time.Minute},
		{"a JWT expiring before the TTL is reused until it expires", unsignedJWT(now.Add(10 * time.Second)), 9 * time.Second, 10 * time.Second},
		{"an expired JWT is not cached", unsignedJWT(now.Add(-time.Second)), -1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakePassiveClock(now)
			next := &countingReviewer{ok: map[string]Identity{tc.token: shop}}
			r := NewCachingReviewer(next, 10, time.Minute, clk, nil)
			review := func(wantCalls int32) {
				t.Helper()
				if id, err := r.Review(context.Background(), tc.token); err != nil || id != shop {
					t.Fatalf("Review = %+v, %v", id, err)
				}
				if got := next.calls.Load(); got != wantCalls {
					t.Fatalf("after %v: %d TokenReviews, want %d", clk.Now().Sub(now), got, wantCalls)
				}
			}
			review(1)
			if tc.fresh >= 0 {
				clk.SetTime(now.Add(tc.fresh))
				review(1)
			}
			clk.SetTime(now.Add(tc.stale))
			review(2)
		})
	}
}

func TestCachingReviewerNeverCachesAFailure(t *testing.T) {
	next := &countingReviewer{}
	r := NewCachingReviewer(next, 10, time.Minute, clocktesting.NewFakePassiveClock(time.Now()), nil)
	for range 3 {
		if _, err := r.Review(context.Background(), "refused"); err == nil {
			t.Fatal("a refused token was accepted")
		}
	}
	if got := next.calls.Load(); got != 3 {
		t.Fatalf("%d TokenReviews for 3 streams with a refused token, want 3", got)
	}
}

func TestCachingReviewerKeepsTokensApartAndBoundsItsSize(t *testing.T) {
	other := Identity{Namespace: "bank", ServiceAccount: "default", PodName: "ledger-1", PodUID: "uid-ledger-1"}
	next := &countingReviewer{ok: map[string]Identity{"a": shop, "b": other, "c": shop}}
	r := NewCachingReviewer(next, 2, time.Minute, clocktesting.NewFakePassiveClock(time.Now()), nil)
	for _, tok := range []string{"a", "b", "a", "b"} {
		if id, err := r.Review(context.Background(), tok); err != nil || id != next.ok[tok] {
			t.Fatalf("Review(%s) = %+v, %v", tok, id, err)
		}
	}
	if got := next.calls.Load(); got != 2 {
		t.Fatalf("%d TokenReviews for two tokens reviewed twice each, want 2", got)
	}
	// c evicts the least recently used (a).
	for _, tok := range []string{"c", "a"} {
		if _, err := r.Review(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got, n := next.calls.Load(), r.cache.Len(); got != 4 || n != 2 {
		t.Fatalf("%d TokenReviews and %d cached after a third token in a cache of two, want 4 and 2", got, n)
	}
}

func TestCachingReviewerMakesConcurrentReviewsOfOneTokenOnce(t *testing.T) {
	for _, token := range []string{"good", "refused"} {
		t.Run(token, func(t *testing.T) {
			next := &countingReviewer{ok: map[string]Identity{"good": shop}, gate: make(chan struct{})}
			r := NewCachingReviewer(next, 10, time.Minute, clocktesting.NewFakePassiveClock(time.Now()), nil)
			const streams = 10
			var wg sync.WaitGroup
			errs := make(chan error, streams)
			for range streams {
				wg.Go(func() {
					_, err := r.Review(context.Background(), token)
					errs <- err
				})
			}
			for r.waiting.Load() < streams {
				time.Sleep(time.Millisecond)
			}
			close(next.gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				if (err == nil) != (token == "good") {
					t.Fatalf("Review(%s) = %v", token, err)
				}
			}
			if got := next.calls.Load(); got != 1 {
				t.Fatalf("%d TokenReviews for %d concurrent streams with one token, want 1", got, streams)
			}
		})
	}
}

func TestCachingReviewerACancelledStreamDoesNotFailTheOthersWaiting(t *testing.T) {
	next := &countingReviewer{ok: map[string]Identity{"good": shop}, gate: make(chan struct{})}
	r := NewCachingReviewer(next, 10, time.Minute, clocktesting.NewFakePassiveClock(time.Now()), nil)
	first, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() { _, err := r.Review(first, "good"); firstErr <- err }()
	for next.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() { _, err := r.Review(context.Background(), "good"); second <- err }()
	for r.waiting.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled stream's review = %v, want context.Canceled", err)
	}
	close(next.gate)
	if err := <-second; err != nil {
		t.Fatalf("the stream still waiting was refused: %v", err)
	}
}

func TestReviewMetricsCountReviewsAndCacheHits(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewReviewMetrics(reg)
	if NewReviewMetrics(reg).reviews != m.reviews {
		t.Fatal("a second registration did not share the counters")
	}
	next := &countingReviewer{ok: map[string]Identity{"good": shop}}
	r := NewCachingReviewer(next, 10, time.Minute, clocktesting.NewFakePassiveClock(time.Now()), m)
	for _, tok := range []string{"good", "good", "good", "bad"} {
		_, _ = r.Review(context.Background(), tok)
	}
	if got := testutil.ToFloat64(m.reviews.WithLabelValues("authenticated")); got != 1 {
		t.Errorf("authenticated reviews = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.reviews.WithLabelValues("refused")); got != 1 {
		t.Errorf("refused reviews = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.cacheHits); got != 2 {
		t.Errorf("cache hits = %v, want 2", got)
	}
}
