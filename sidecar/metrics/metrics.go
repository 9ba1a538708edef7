// Package metrics holds the sidecar's Prometheus metrics. Label values are
// static codes (results, reasons, protocols), never request input.
package metrics

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// Metrics are the sidecar's collectors, registered on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	// byDecision and byProtocol hold the series of every known reason
	// and protocol, resolved once: a label look-up per check (hashing,
	// a locked map) cost more than the increment itself. Read-only after
	// New.
	byDecision   map[decisionKey]prometheus.Counter
	byProtocol   map[string]prometheus.Observer
	reloads      prometheus.Counter
	reloadErrors prometheus.Counter
	problems     prometheus.Gauge
	confirmed    atomic.Int64 // unix nanos of the source's last confirmation
	clock        func() time.Time
}

// New registers the metrics. store and clock feed the state gauges.
func New(store *snapshot.Store, clock func() time.Time) *Metrics {
	if clock == nil {
		clock = time.Now
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		clock:    clock,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_sidecar_decisions_total",
			Help: "Authorization decisions by result (allow, deny) and reason code.",
		}, []string{"result", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_sidecar_check_duration_seconds",
			Help:    "Time to decide a check, by protocol (grpc, http).",
			Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2},
		}, []string{"protocol"}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_sidecar_reloads_total",
			Help: "State snapshots built and installed.",
		}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_sidecar_reload_errors_total",
			Help: "Failures to read the state source; the last good state keeps serving.",
		}),
		problems: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_sidecar_state_problems",
			Help: "Defects found in the current state (unusable records or JWKS); affected credentials are denied.",
		}),
	}
	stateAge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_sidecar_state_age_seconds",
		Help: "Seconds since the state was last built or confirmed current by its source; 0 before the first state. It grows while the API server is unreachable.",
	}, func() float64 {
		s := store.Load()
		if s == nil {
			return 0
		}
		fresh := s.BuiltAt
		if c := time.Unix(0, m.confirmed.Load()); c.After(fresh) {
			fresh = c
		}
		return clock().Sub(fresh).Seconds()
	})
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_sidecar_state_ready",
		Help: "1 once a complete state is loaded, 0 before.",
	}, func() float64 {
		if store.Load() != nil {
			return 1
		}
		return 0
	})
	keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_sidecar_api_key_ids",
		Help: "API key IDs indexed in the current state.",
	}, func() float64 {
		if s := store.Load(); s != nil {
			return float64(s.KeyCount())
		}
		return 0
	})
	m.byDecision = make(map[decisionKey]prometheus.Counter, len(authz.AllReasons))
	for _, r := range authz.AllReasons {
		allowed := r.Status() == http.StatusOK
		m.byDecision[decisionKey{allowed, r}] = m.decisions.WithLabelValues(resultLabel(allowed), string(r))
	}
	m.byProtocol = map[string]prometheus.Observer{}
	for _, p := range Protocols {
		m.byProtocol[p] = m.latency.WithLabelValues(p)
	}
	reg.MustRegister(m.decisions, m.latency, m.reloads, m.reloadErrors, m.problems, stateAge, ready, keys,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveDecision counts a decision and its latency.
func (m *Metrics) ObserveDecision(protocol string, d *authz.Decision, took time.Duration) {
	c, ok := m.byDecision[decisionKey{d.Allowed, d.Reason}]
	if !ok {
		c = m.decisions.WithLabelValues(resultLabel(d.Allowed), string(d.Reason))
	}
	c.Inc()
	o, ok := m.byProtocol[protocol]
	if !ok {
		o = m.latency.WithLabelValues(protocol)
	}
	o.Observe(took.Seconds())
}

// Protocols are the protocol label values of the check latency.
var Protocols = []string{"grpc", "http"}

type decisionKey struct {
	allowed bool
	reason  authz.Reason
}

func resultLabel(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

// ObserveReload counts an installed snapshot and its problems.
func (m *Metrics) ObserveReload(s *snapshot.Snapshot) {
	m.reloads.Inc()
	m.problems.Set(float64(len(s.Problems)))
}

// ObserveConfirmed records that the source confirmed the state current.
func (m *Metrics) ObserveConfirmed() { m.confirmed.Store(m.clock().UnixNano()) }

// ObserveReloadError counts a failure to read the source.
func (m *Metrics) ObserveReloadError() { m.reloadErrors.Inc() }
