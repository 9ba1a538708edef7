package tokenendpoint

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts token requests by result: "issued" or an OAuth error code.
// Labels are static codes; never a key, a token or a subject.
type metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics registers the endpoint's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *metrics { //nolint:revive // unexported type is deliberate: callers only pass it on
	m := &metrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_token_requests_total",
		Help: "Token endpoint requests by result (issued, or the OAuth 2.0 error code).",
	}, []string{"result"})}
	if reg != nil {
		reg.MustRegister(m.requests)
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
