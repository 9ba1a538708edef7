package tokenendpoint

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts token requests by result: "issued" or an OAuth error code.
// Labels are static codes; never a key, a token or a subject.
type metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics registers the endpoint's metrics with reg. Registering twice
// (two endpoints in one process, as in tests) shares one counter.
func NewMetrics(reg prometheus.Registerer) *metrics { //nolint:revive // unexported type is deliberate: callers only pass it on
	m := &metrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_token_requests_total",
		Help: "Token endpoint requests by result (issued, or the OAuth 2.0 error code).",
	}, []string{"result"})}
	if reg == nil {
		return m
	}
	if err := reg.Register(m.requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				m.requests = existing
				return m
			}
		}
		panic(err) // a programming error: a clashing metric name
	}
	return m
}

func (m *metrics) observe(result string) {
	if m != nil {
		m.requests.WithLabelValues(result).Inc()
	}
}

func writeJSON(w http.ResponseWriter, v any) error {
	return json.NewEncoder(w).Encode(v)
}
