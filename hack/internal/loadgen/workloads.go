package loadgen

import (
	"fmt"
	"slices"
)

// Workload names.
const (
	// WorkloadAPIKey sends valid API keys in the policy's header; each must
	// be allowed.
	WorkloadAPIKey = "apikey"
	// WorkloadJWTCached repeats a few valid bearer tokens, so that after
	// the first requests every check is a verification-cache hit; each must
	// be allowed.
	WorkloadJWTCached = "jwt-cached"
	// WorkloadDeny sends no credential; each must be denied with 401.
	WorkloadDeny = "deny"
	// WorkloadExpiredJWT sends correctly signed tokens that expired an
	// hour ago; each must be denied with 401. Run it against a sidecar
	// with the verification cache off (--token-cache-size=0): it measures
	// what an expired or replayed token costs.
	WorkloadExpiredJWT = "expired-jwt"
	// WorkloadJWTUncachedES256 and WorkloadJWTUncachedRS256 cycle through
	// all the distinct valid tokens of one algorithm; each must be
	// allowed. Run them against a sidecar with the cache off: every check
	// verifies a signature.
	WorkloadJWTUncachedES256 = "jwt-uncached-es256"
	WorkloadJWTUncachedRS256 = "jwt-uncached-rs256"
)

// WorkloadNames lists the workloads BuildWorkload knows.
var WorkloadNames = []string{WorkloadAPIKey, WorkloadJWTCached, WorkloadDeny, WorkloadExpiredJWT, WorkloadJWTUncachedES256, WorkloadJWTUncachedRS256}

// WorkloadOptions size a workload.
type WorkloadOptions struct {
	// Distinct is the number of distinct credentials cycled through: up to
	// all API keys of the credentials (default) for apikey, 4 tokens for
	// jwt-cached, all tokens of their kind for the others.
	Distinct int
	// Shape is the request shape (ShapeCompact when empty).
	Shape string
	// ExpectAllow expects every request to be allowed, whatever the
	// workload: for the baseline, which allows everything.
	ExpectAllow bool
}

// commonHeaders are what a browser or client would also send; they make
// the request the size of a real one.
var commonHeaders = map[string]string{
	"accept":       "application/json",
	"user-agent":   "gatehouse-loadgen/1",
	"x-request-id": "5f0c6c1e-loadgen",
}

// BuildWorkload prebuilds the requests of a named workload from creds.
func BuildWorkload(name string, creds *Credentials, opts WorkloadOptions) (*Workload, error) {
	var values []string
	var header, prefix string
	expect := Expect{Allow: true}
	switch name {
	case WorkloadAPIKey:
		values, header = creds.APIKeys, creds.APIKeyHeader
	case WorkloadJWTCached:
		n := opts.Distinct
		if n <= 0 {
			n = 4
		}
		values, header, prefix = creds.Tokens[:min(n, len(creds.Tokens))], "authorization", "Bearer "
	case WorkloadDeny:
		values, expect = []string{""}, Expect{Status: 401}
	case WorkloadExpiredJWT:
		values, header, prefix, expect = creds.ExpiredTokens, "authorization", "Bearer ", Expect{Status: 401}
	case WorkloadJWTUncachedES256:
		values, header, prefix = creds.Tokens, "authorization", "Bearer "
	case WorkloadJWTUncachedRS256:
		values, header, prefix = creds.RSTokens, "authorization", "Bearer "
	default:
		return nil, fmt.Errorf("unknown workload %q (known: %v)", name, WorkloadNames)
	}
	if opts.Distinct > 0 && name != WorkloadJWTCached {
		values = values[:min(opts.Distinct, len(values))]
	}
	if opts.ExpectAllow {
		expect = Expect{Allow: true}
	}
	shape := opts.Shape
	if shape == "" {
		shape = ShapeCompact
	}
	if len(values) == 0 {
		return nil, fmt.Errorf("workload %s: the credentials file has none of the credentials it needs", name)
	}
	w := &Workload{Name: name, Shape: shape, Requests: make([]*Request, 0, len(values))}
	for _, v := range values {
		h := make(map[string]string, len(commonHeaders)+1)
		for k, cv := range commonHeaders {
			h[k] = cv
		}
		if header != "" {
			h[header] = prefix + v
		}
		r, err := NewShapedRequest(shape, "GET", creds.Host, creds.Path, h, expect)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", name, err)
		}
		w.Requests = append(w.Requests, r)
	}
	return w, nil
}

// KnownWorkload reports whether name is a workload BuildWorkload builds.
func KnownWorkload(name string) bool { return slices.Contains(WorkloadNames, name) }
