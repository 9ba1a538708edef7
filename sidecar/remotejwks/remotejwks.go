// Package remotejwks fetches the keys of remote JWT issuers, through OIDC
// discovery or a jwks_uri, for the sidecar. Keys are answered from memory
// and refreshed in the background: on the schedule the server's
// Cache-Control asks for (bounded), and early when a token names an unknown
// kid (rate limited, so that junk tokens cannot make the sidecar hammer the
// issuer). Responses are size- and time-bounded, only https is fetched, a
// redirect is followed only to https on the same host, and a failed fetch
// keeps the last good keys. Fetchers of sources that no build asks for any
// more are retired by Sweep.
package remotejwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// Defaults of Options.
const (
	DefaultTimeout        = 5 * time.Second
	DefaultRefresh        = 5 * time.Minute
	MinRefresh            = time.Minute
	MaxRefresh            = 24 * time.Hour
	DefaultRetry          = 30 * time.Second
	DefaultUnknownKIDWait = 10 * time.Second
	maxDiscoveryBytes     = 256 << 10
	// maxRedirects bounds a chain of same-host redirects (an issuer
	// moving its keys to a versioned path needs one).
	maxRedirects = 3
)

// Options configure a Registry.
type Options struct {
	// Client fetches documents; a client with DefaultTimeout when nil.
	// Its redirect policy is replaced by the registry's: https on the same
	// host only.
	Client *http.Client
	// UnknownKIDInterval is the least time between two refreshes caused by
	// unknown kids (DefaultUnknownKIDWait when 0; negative: no limit).
	UnknownKIDInterval time.Duration
	// Retry is the wait after a failed fetch (DefaultRetry when 0).
	Retry time.Duration
	// Clock rate-limits unknown-kid refreshes; time.Now when nil.
	Clock func() time.Time
	Log   logr.Logger
	// OnFetch, when set, is told of every fetch outcome (metrics, tests).
	OnFetch func(target string, err error)
}

// Registry hands out one key set per remote source and keeps them fresh.
// It implements snapshot.RemoteKeySets.
type Registry struct {
	opts     Options
	ctx      context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex
	sets     map[string]*Set
	wg       sync.WaitGroup
	fetchers atomic.Int64
}

// NewRegistry returns a Registry; Close stops its fetchers.
func NewRegistry(opts Options) *Registry {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: DefaultTimeout}
	}
	c := *opts.Client // the caller's client keeps its own policy
	c.CheckRedirect = sameHostHTTPS
	opts.Client = &c
	if opts.UnknownKIDInterval == 0 {
		opts.UnknownKIDInterval = DefaultUnknownKIDWait
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Registry{opts: opts, ctx: ctx, cancel: cancel, sets: map[string]*Set{}}
}

// Close stops every fetcher and waits for them.
func (r *Registry) Close() {
	r.cancel()
	r.wg.Wait()
}

// Discovery implements snapshot.RemoteKeySets.
func (r *Registry) Discovery(issuer string) snapshot.KeySet {
	return r.get("discovery "+issuer, issuer, true)
}

// URI implements snapshot.RemoteKeySets.
func (r *Registry) URI(jwksURI string) snapshot.KeySet {
	return r.get("uri "+jwksURI, jwksURI, false)
}

func (r *Registry) get(id, target string, discovery bool) *Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sets[id]; ok {
		s.wanted = true
		return s
	}
	ctx, cancel := context.WithCancel(r.ctx)
	s := &Set{target: target, discovery: discovery, opts: &r.opts, refresh: make(chan struct{}, 1),
		wanted: true, stop: cancel, done: make(chan struct{})}
	r.sets[id] = s
	r.wg.Add(1)
	r.fetchers.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.fetchers.Add(-1)
		defer close(s.done)
		s.run(ctx)
	}()
	return s
}

// Sweep retires the fetchers of every source that was not asked for
// (Discovery or URI) since the previous Sweep, and waits for them to stop.
// Call it after each snapshot build: a build asks for every remote source
// its policy names, so a source that no AuthPolicy names any more stops
// being polled. A retired Set still answers with its last keys (an older
// snapshot may hold it); a source asked for again gets a new fetcher.
func (r *Registry) Sweep() {
	var retired []*Set
	r.mu.Lock()
	for id, s := range r.sets {
		if !s.wanted {
			delete(r.sets, id)
			s.stop()
			retired = append(retired, s)
			continue
		}
		s.wanted = false
	}
	r.mu.Unlock()
	for _, s := range retired {
		<-s.done // cancelling aborts a fetch in flight: this is quick
		r.opts.Log.Info("remote key source no longer used; its fetcher stopped", "target", s.target)
	}
}

// Fetchers is the number of fetcher goroutines running.
func (r *Registry) Fetchers() int { return int(r.fetchers.Load()) }

// sameHostHTTPS is the redirect policy: an issuer may move its documents
// within its own origin (scheme https, same host and port), never to plain
// http, where anyone on the path could swap the keys, nor to another host,
// which the AuthPolicy's author did not name.
func sameHostHTTPS(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	first := via[0].URL
	if req.URL.Scheme != "https" || !strings.EqualFold(req.URL.Host, first.Host) {
		return errors.New("a redirect leaves https on the same host; not followed")
	}
	return nil
}

// Set is one remote key set.
type Set struct {
	target    string
	discovery bool
	opts      *Options
	current   atomic.Pointer[snapshot.StaticKeySet]
	refresh   chan struct{}
	lastForce atomic.Int64 // unix nanos of the last kid-triggered refresh

	wanted bool // asked for since the last Sweep; guarded by Registry.mu
	stop   context.CancelFunc
	done   chan struct{}
}

// Key implements snapshot.KeySet. An unknown kid asks for an early refresh
// and is answered "unknown" now: the request path never waits on the
// network.
func (s *Set) Key(kid string) (*snapshot.VerificationKey, bool) {
	if k, ok := s.current.Load().Key(kid); ok {
		return k, true
	}
	now := s.opts.Clock().UnixNano()
	last := s.lastForce.Load()
	if s.opts.UnknownKIDInterval < 0 || now-last >= int64(s.opts.UnknownKIDInterval) {
		if s.lastForce.CompareAndSwap(last, now) {
			select {
			case s.refresh <- struct{}{}:
			default:
			}
		}
	}
	return nil, false
}

func (s *Set) run(ctx context.Context) {
	for {
		wait, err := s.fetch(ctx)
		if s.opts.OnFetch != nil {
			s.opts.OnFetch(s.target, err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.opts.Log.Error(err, "fetching remote keys; keeping the last good keys", "target", s.target)
			wait = s.opts.Retry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.refresh:
			t.Stop()
		}
	}
}

// fetch reads the key set and returns when to refresh it.
func (s *Set) fetch(ctx context.Context) (time.Duration, error) {
	jwksURI := s.target
	if s.discovery {
		u, err := discover(ctx, s.opts.Client, s.target)
		if err != nil {
			return 0, err
		}
		jwksURI = u
	}
	body, header, err := get(ctx, s.opts.Client, jwksURI, snapshot.MaxJWKSBytes)
	if err != nil {
		return 0, err
	}
	set, problems, err := snapshot.ParseJWKS(body)
	if err != nil {
		return 0, err
	}
	for _, p := range problems {
		s.opts.Log.Info("remote key skipped", "target", s.target, "problem", p)
	}
	if set.Len() == 0 {
		return 0, errors.New("remote jwks holds no usable key")
	}
	s.current.Store(set)
	return RefreshAfter(header), nil
}

// discover reads issuer's OIDC discovery document and returns its
// jwks_uri. The document must name the same issuer (OIDC Discovery 4.3).
func discover(ctx context.Context, c *http.Client, issuer string) (string, error) {
	body, _, err := get(ctx, c, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", maxDiscoveryBytes)
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("decoding the discovery document: %w", err)
	}
	if doc.Issuer != issuer {
		return "", errors.New("the discovery document names another issuer")
	}
	if doc.JWKSURI == "" {
		return "", errors.New("the discovery document has no jwks_uri")
	}
	return doc.JWKSURI, nil
}

func get(ctx context.Context, c *http.Client, target string, limit int64) ([]byte, http.Header, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, nil, errors.New("remote keys are fetched over https only")
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("fetching %s: status %d", u.Redacted(), resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", u.Redacted(), err)
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", u.Redacted(), limit)
	}
	return body, resp.Header, nil
}

// RefreshAfter is how long a response may be used: Cache-Control max-age
// (no-store/no-cache meaning the minimum), else DefaultRefresh, bounded to
// [MinRefresh, MaxRefresh] so that a server can neither make the sidecar
// poll in a loop nor keep a revoked key forever.
func RefreshAfter(h http.Header) time.Duration {
	d := DefaultRefresh
	for _, directive := range strings.Split(h.Get("Cache-Control"), ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(strings.ToLower(directive)), "=")
		switch name {
		case "no-store", "no-cache":
			return MinRefresh
		case "max-age":
			if secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && secs >= 0 {
				d = time.Duration(min(secs, int64(MaxRefresh/time.Second))) * time.Second
			}
		}
	}
	return min(max(d, MinRefresh), MaxRefresh)
}
