// Package server exposes the decision engine over Envoy's ext_authz
// protocols: the gRPC envoy.service.auth.v3.Authorization service and the
// HTTP authorization-service contract (also used by nginx auth_request and
// Traefik forwardAuth), plus the health endpoints.
//
// Both protocols share Core: it runs the engine, sets identity headers on
// allow, strips client-sent copies of them (anti-spoofing) and, when
// configured, the credential, counts metrics and writes sampled decision
// logs that never hold a credential.
package server

import (
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// DefaultHeaderPrefix starts the names of the identity headers.
const DefaultHeaderPrefix = "x-gatehouse-"

// HeaderNames are the identity headers sent upstream on allow.
type HeaderNames struct {
	Subject    string
	Scopes     string
	Credential string
	KeyID      string
	Issuer     string
	TokenID    string
	// DenyReason carries the reason code on denials, to the client.
	DenyReason string
}

// HeaderNamesWithPrefix names the identity headers prefix+"subject", ...
func HeaderNamesWithPrefix(prefix string) HeaderNames {
	prefix = strings.ToLower(prefix)
	return HeaderNames{
		Subject:    prefix + "subject",
		Scopes:     prefix + "scopes",
		Credential: prefix + "credential",
		KeyID:      prefix + "key-id",
		Issuer:     prefix + "issuer",
		TokenID:    prefix + "token-id",
		DenyReason: prefix + "deny-reason",
	}
}

// identity lists the identity header names (not DenyReason).
func (h HeaderNames) identity() []string {
	return []string{h.Subject, h.Scopes, h.Credential, h.KeyID, h.Issuer, h.TokenID}
}

// Options configure a Core.
type Options struct {
	Headers HeaderNames
	// StripCredential removes the credential header from the request that
	// reaches the upstream after an allow.
	StripCredential bool
	// DecisionLogsPerSecond samples decision logs (0 disables them).
	DecisionLogsPerSecond float64
	// Clock is the time source of a check: read once when it starts (the
	// time the engine decides at, see Core.check) and once when it ends
	// (latency, log sampling). The engine's clock if nil.
	Clock func() time.Time
	Log   logr.Logger
}

// Core decides requests for the protocol frontends.
type Core struct {
	engine  *authz.Engine
	store   *snapshot.Store
	metrics *metrics.Metrics
	opts    Options
	sampler *rate.Limiter
	// allows holds the gRPC answers of recent allows by identity.
	allows *responseCache
}

// NewCore returns a Core. metrics may be nil.
func NewCore(engine *authz.Engine, store *snapshot.Store, m *metrics.Metrics, opts Options) *Core {
	if opts.Clock == nil {
		opts.Clock = time.Now
		if engine != nil {
			opts.Clock = engine.Clock()
		}
	}
	if opts.Headers.Subject == "" {
		opts.Headers = HeaderNamesWithPrefix(DefaultHeaderPrefix)
	}
	c := &Core{engine: engine, store: store, metrics: m, opts: opts, allows: newResponseCache(defaultResponseCacheSize)}
	if opts.DecisionLogsPerSecond > 0 {
		c.sampler = rate.NewLimiter(rate.Limit(opts.DecisionLogsPerSecond), max(1, int(opts.DecisionLogsPerSecond)))
	}
	return c
}

// Ready reports whether a complete state is loaded.
func (c *Core) Ready() bool { return c.store.Load() != nil }

// upstreamHeader is one header to set on the upstream request.
type upstreamHeader struct{ name, value string }

// verdict is a decision rendered for a protocol.
type verdict struct {
	d authz.Decision
	// set are the identity headers to set (allow only; filled by the
	// protocol that needs them, see identityHeaders).
	set []upstreamHeader
	// remove are request headers to delete before the upstream sees them.
	remove []string
}

// check decides req. The clock is read twice: when the check starts, the
// time the engine decides at (expiry, validity windows, rate limits), and
// when it ends, for the latency and the decision log's sampler.
func (c *Core) check(protocol, requestID string, req *authz.Request) verdict {
	start := c.opts.Clock()
	d := c.engine.CheckAt(req, start)
	v := verdict{d: d}
	end := c.opts.Clock()
	took := end.Sub(start)
	if c.metrics != nil {
		c.metrics.ObserveDecision(protocol, &d, took)
	}
	c.logDecision(protocol, requestID, req, &d, took, end)
	return v
}

// identityHeaders returns the headers to set and to remove on allow. Every
// identity header not set is removed, so that a client-sent copy never
// reaches the upstream; set headers overwrite.
func (c *Core) identityHeaders(d *authz.Decision) (set []upstreamHeader, remove []string) {
	h := c.opts.Headers
	if id := d.Identity; id != nil {
		add := func(name, value string) {
			if value != "" {
				set = append(set, upstreamHeader{name, value})
			}
		}
		add(h.Subject, id.Subject)
		add(h.Scopes, id.ScopesJoined())
		add(h.Credential, string(id.Credential))
		add(h.KeyID, id.KeyID)
		add(h.Issuer, id.Issuer)
		add(h.TokenID, id.TokenID)
	}
	for _, name := range h.identity() {
		isSet := false
		for _, s := range set {
			if s.name == name {
				isSet = true
				break
			}
		}
		if !isSet {
			remove = append(remove, name)
		}
	}
	if c.opts.StripCredential && d.CredentialHeader != "" {
		remove = append(remove, d.CredentialHeader)
	}
	return set, remove
}

// denyBody is the small JSON body of a denial: a stable code only.
func denyBody(r authz.Reason) string { return `{"error":"` + string(r) + `"}` }

func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

func (c *Core) logDecision(protocol, requestID string, req *authz.Request, d *authz.Decision, took time.Duration, now time.Time) {
	if c.sampler == nil || !c.sampler.AllowN(now, 1) {
		return
	}
	result := "deny"
	if d.Allowed {
		result = "allow"
	}
	// The query string is dropped: it may carry tokens (?access_token=).
	kv := []any{
		"result", result, "reason", string(d.Reason), "status", d.Status, "protocol", protocol,
		"method", req.Method, "host", req.Host, "path", snapshot.PathWithoutQuery(req.Path),
		"policy", d.Policy, "rule", d.Rule, "latencyMicros", took.Microseconds(),
	}
	if requestID != "" {
		kv = append(kv, "requestId", requestID)
	}
	if id := d.Identity; id != nil {
		kv = append(kv, "credential", string(id.Credential), "subject", id.Subject)
		if id.KeyID != "" {
			kv = append(kv, "keyId", id.KeyID)
		}
		if id.Issuer != "" {
			kv = append(kv, "issuer", id.Issuer)
		}
		if id.TokenID != "" {
			kv = append(kv, "tokenId", id.TokenID)
		}
	}
	c.opts.Log.Info("decision", kv...)
}
