package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Target is a server under load.
type Target interface {
	// NewCaller returns a caller for one worker goroutine.
	NewCaller() Caller
	// Close releases the target's connections.
	Close() error
	// String names the target for reports.
	String() string
}

// Caller sends requests for one worker. A Caller is not shared between
// goroutines.
type Caller interface {
	// Call sends r and returns the verdict, or an error when no verdict was
	// received (transport failure, RPC error, malformed answer).
	Call(ctx context.Context, r *Request) (Outcome, error)
}

// HTTPTarget sends requests in the HTTP ext_authz form: the original method,
// path and headers; 200 allows, anything else denies.
type HTTPTarget struct {
	base   string
	client *http.Client
}

// NewHTTPTarget prepares keep-alive connections to base (http://host:port),
// up to maxConns of them.
func NewHTTPTarget(base string, maxConns int) *HTTPTarget {
	tr := &http.Transport{
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		MaxConnsPerHost:     maxConns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &HTTPTarget{base: base, client: &http.Client{Transport: tr}}
}

// NewCaller returns a caller; all callers share the connection pool.
func (t *HTTPTarget) NewCaller() Caller { return &httpCaller{t: t} }

// Close closes idle connections.
func (t *HTTPTarget) Close() error {
	t.client.CloseIdleConnections()
	return nil
}

// String names the target.
func (t *HTTPTarget) String() string { return t.base }

type httpCaller struct{ t *HTTPTarget }

func (c *httpCaller) Call(ctx context.Context, r *Request) (Outcome, error) {
	req, err := r.httpRequest(ctx, c.t.base)
	if err != nil {
		return Outcome{}, err
	}
	resp, err := c.t.client.Do(req)
	if err != nil {
		return Outcome{}, fmt.Errorf("http check: %w", err)
	}
	_, copyErr := io.Copy(io.Discard, resp.Body)
	closeErr := resp.Body.Close()
	if copyErr != nil {
		return Outcome{}, fmt.Errorf("reading http check response: %w", copyErr)
	}
	if closeErr != nil {
		return Outcome{}, fmt.Errorf("closing http check response: %w", closeErr)
	}
	if resp.StatusCode == http.StatusOK {
		return Outcome{Allowed: true}, nil
	}
	if resp.StatusCode >= 500 {
		// Envoy treats a 5xx from the auth service as an error, not a verdict.
		return Outcome{}, fmt.Errorf("http check: server error %d", resp.StatusCode)
	}
	return Outcome{Status: resp.StatusCode}, nil
}
