package xds

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// reviewMetrics count how streams were authenticated. Labels are static;
// never a token, its hash or an identity.
type reviewMetrics struct {
	reviews   *prometheus.CounterVec
	cacheHits prometheus.Counter
}

// NewReviewMetrics registers the xDS server's authentication metrics with
// reg (none when nil). Registering twice (two operators in one process, as
// in tests) shares the counters.
func NewReviewMetrics(reg prometheus.Registerer) *reviewMetrics { //nolint:revive // unexported type is deliberate: callers only pass it on
	m := &reviewMetrics{
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_xds_token_reviews_total",
			Help: "TokenReviews the xDS server sent to the API server to authenticate a stream, by result (authenticated, refused, or not_pod_bound: a ServiceAccount token bound to no pod, refused).",
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_xds_token_review_cache_hits_total",
			Help: "xDS streams authenticated by a TokenReview remembered from an earlier stream with the same token.",
		}),
	}
	if reg == nil {
		return m
	}
	m.reviews = register(reg, m.reviews)
	m.cacheHits = register(reg, m.cacheHits)
	return m
}

// register registers c, or returns the collector already registered
// under its name.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a programming error: a clashing metric name
	}
	return c
}

// reviewed counts a review by its outcome: authenticated, refused, or
// not_pod_bound (a valid ServiceAccount token that names no pod).
func (m *reviewMetrics) reviewed(err error) {
	if m == nil {
		return
	}
	result := "authenticated"
	switch {
	case errors.Is(err, errNotBoundToAPod):
		result = "not_pod_bound"
	case err != nil:
		result = "refused"
	}
	m.reviews.WithLabelValues(result).Inc()
}

func (m *reviewMetrics) cacheHit() {
	if m != nil {
		m.cacheHits.Inc()
	}
}

// streamMetrics count what the bound on streams per pod did. The only
// label is the namespace: never a pod, a ServiceAccount or a token.
type streamMetrics struct {
	replacedStreams *prometheus.CounterVec
}

// newStreamMetrics registers the stream metrics with reg (none when nil),
// sharing counters already registered.
func newStreamMetrics(reg prometheus.Registerer) *streamMetrics {
	m := &streamMetrics{replacedStreams: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_xds_streams_replaced_total",
		Help: "xDS streams ended because their pod opened more than the bound on streams per pod (the oldest is ended), by namespace.",
	}, []string{"namespace"})}
	if reg != nil {
		m.replacedStreams = register(reg, m.replacedStreams)
	}
	return m
}

func (m *streamMetrics) replaced(namespace string) {
	if m != nil {
		m.replacedStreams.WithLabelValues(namespace).Inc()
	}
}
