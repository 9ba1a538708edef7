package server

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

// HTTPOptions configure the HTTP authorization contract.
type HTTPOptions struct {
	// PathPrefix is removed from the request path: Envoy's http_service
	// path_prefix, prepended to the original path.
	PathPrefix string
	// TrustForwardedHeaders takes the original method, host and URI from
	// X-Forwarded-Method, X-Forwarded-Host and X-Forwarded-Uri, as nginx
	// auth_request (configured to set them) and Traefik forwardAuth send
	// them. Enable it only when the proxy overwrites those headers: a
	// client could otherwise claim any path.
	TrustForwardedHeaders bool
}

// Forwarded headers read when HTTPOptions.TrustForwardedHeaders is set.
const (
	ForwardedMethodHeader = "X-Forwarded-Method"
	ForwardedHostHeader   = "X-Forwarded-Host"
	ForwardedURIHeader    = "X-Forwarded-Uri"
	// EnvoyHeadersToRemove lists request headers Envoy deletes on allow.
	EnvoyHeadersToRemove = "X-Envoy-Auth-Headers-To-Remove"
)

// Limits of every HTTP listener of the sidecar (ext_authz, health,
// metrics). Without them a client that opens connections and trickles bytes,
// or just keeps them open, holds a goroutine and a file descriptor each for
// as long as it likes, in a process that sits beside every pod.
const (
	// HeaderTimeout bounds reading a request's header.
	HeaderTimeout = 5 * time.Second
	// ReadTimeout bounds reading a whole request, body included. Checks,
	// probes and scrapes are small requests over loopback or the pod
	// network, done in milliseconds; ten seconds is slack, not a need.
	ReadTimeout = 10 * time.Second
	// ExtAuthzIdleTimeout closes a proxy's kept-alive connection after
	// this long unused. The proxy pools connections to the sidecar on
	// loopback, so it is long: longer than nginx's keepalive_timeout
	// (60 s), so that nginx closes first, and the Envoy cluster of the
	// HTTP ext_authz service should set its idle_timeout below it too
	// (a connection closed by the server just as the proxy reuses it
	// fails that one check).
	ExtAuthzIdleTimeout = 5 * time.Minute
	// ProbeIdleTimeout is the idle limit of the health and metrics
	// listeners: above the usual scrape interval (up to 60 s), so that
	// Prometheus reuses its connection; the kubelet opens a new one per
	// probe anyway.
	ProbeIdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's header; ext_authz checks carry
	// the original request's headers, bounded by Envoy's own limit.
	MaxHeaderBytes = 64 << 10
)

// NewHTTPServer returns a server for h with the limits above and the
// given idle timeout. Every request, "OPTIONS *" included, reaches h.
func NewHTTPServer(h http.Handler, idle time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: HeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    MaxHeaderBytes,
		// "OPTIONS *" must reach the handler and be checked, not be
		// answered 200 (an allow) by net/http itself.
		DisableGeneralOptionsHandler: true,
	}
}

// HTTPHandler answers the HTTP ext_authz contract: any method on any path
// is a check of that method and path; 200 allows, with identity headers;
// 401, 403, 429 and 4xx deny with WWW-Authenticate and a JSON code.
func (c *Core) HTTPHandler(opts HTTPOptions) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v verdict
		func() {
			defer func() {
				if p := recover(); p != nil {
					c.opts.Log.Error(fmt.Errorf("panic of type %T in http check", p), "check panicked; denying")
					v = verdict{d: authz.Decision{Reason: authz.InternalError, Status: authz.InternalError.Status()}}
				}
			}()
			req := &authz.Request{Method: r.Method, Host: r.Host, Path: r.RequestURI, Headers: httpHeaders(r.Header)}
			if opts.PathPrefix != "" {
				req.Path = strings.TrimPrefix(req.Path, opts.PathPrefix)
			}
			if opts.TrustForwardedHeaders {
				forwarded(r.Header, req)
			}
			v = c.check("http", r.Header.Get("X-Request-Id"), req)
			if v.d.Allowed {
				v.set, v.remove = c.identityHeaders(&v.d)
			}
		}()
		c.writeHTTP(w, v)
	})
}

// forwarded takes the original method, host and URI from the forwarded
// headers, where present. A repeated one is ambiguous (which copy did the
// proxy write?): the path is then emptied, which the engine refuses as
// invalid_path.
func forwarded(h http.Header, req *authz.Request) {
	repeated := false
	one := func(name string, into *string) {
		switch vs := h.Values(name); len(vs) {
		case 0:
		case 1:
			if vs[0] != "" {
				*into = vs[0]
			}
		default:
			repeated = true
		}
	}
	one(ForwardedMethodHeader, &req.Method)
	one(ForwardedHostHeader, &req.Host)
	one(ForwardedURIHeader, &req.Path)
	if repeated {
		req.Path = ""
	}
}

func (c *Core) writeHTTP(w http.ResponseWriter, v verdict) {
	h := w.Header()
	d := v.d
	if d.Allowed {
		for _, s := range v.set {
			h.Set(s.name, s.value)
		}
		if len(v.remove) > 0 {
			h.Set(EnvoyHeadersToRemove, strings.Join(v.remove, ", "))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set(c.opts.Headers.DenyReason, string(d.Reason))
	if d.Challenge != "" {
		h.Set("WWW-Authenticate", d.Challenge)
	}
	if d.RetryAfter > 0 {
		h.Set("Retry-After", retryAfterSeconds(d.RetryAfter))
	}
	w.WriteHeader(d.Status)
	_, _ = w.Write([]byte(denyBody(d.Reason)))
}

// httpHeaders reads net/http headers (each field a separate value).
type httpHeaders http.Header

func (h httpHeaders) Values(name string) []string { return http.Header(h).Values(name) }

func (h httpHeaders) Count() int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}

// HealthHandler serves /healthz (the process is up) and /readyz (a
// complete state is loaded and the server is not draining).
func (c *Core) HealthHandler(draining func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case draining != nil && draining():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !c.Ready():
			http.Error(w, "no state loaded yet", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	return mux
}
