package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/sidecar/source"
)

// informerSidecar is the state source of a sidecar on --source=kubernetes
// (source.Kubernetes: informers on the API server), run in this process
// with a token of its own and a connection of its own, as a pod's sidecar
// would. It records what it was last given, not a whole sidecar: the API
// server's side of the cost is the subject.
type informerSidecar struct {
	mu       sync.Mutex
	keys     int
	disabled map[string]time.Time // APIKey name → when first seen disabled
	watch    string
	lastErr  error // the last failure the source reported
}

func (s *informerSidecar) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
}

func (s *informerSidecar) changed(in snapshot.Inputs) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = len(in.APIKeys)
	if s.watch == "" {
		return
	}
	if _, seen := s.disabled[s.watch]; seen {
		return
	}
	for _, ak := range in.APIKeys {
		if ak.Name == s.watch && ak.Spec.Disabled {
			s.disabled[s.watch] = now
		}
	}
}

func (s *informerSidecar) keyCount() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys, s.lastErr
}

// watchDisabled makes the sidecar note when it first sees name disabled.
func (s *informerSidecar) watchDisabled(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watch = name
}

func (s *informerSidecar) disabledAt(name string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.disabled[name]
	return t, ok
}

// informerConfig is a client configuration for one informer sidecar: the
// API server of admin, the sidecar ServiceAccount's token, and a dialer of
// its own so that client-go does not share one connection between sidecars
// (each pod has its own).
func informerConfig(admin *rest.Config, token string) *rest.Config {
	return &rest.Config{
		Host:            admin.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData, CAFile: admin.CAFile, ServerName: admin.ServerName},
		BearerToken:     token,
		Dial:            (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
}

// startInformers starts m informer sidecars of ns at once, each with a
// token of its own requested beforehand, and returns when they started;
// they run until ctx ends.
func startInformers(ctx context.Context, c *cluster, ns string, m int) ([]*informerSidecar, time.Time, error) {
	tokens, err := c.tokens(ctx, ns, "", "", m)
	if err != nil {
		return nil, time.Time{}, err
	}
	started := time.Now()
	out := make([]*informerSidecar, m)
	for i := range out {
		s := &informerSidecar{disabled: map[string]time.Time{}}
		out[i] = s
		src := &source.Kubernetes{Config: informerConfig(c.cp.Config, tokens[i]), Namespace: ns, Log: logr.Discard()}
		go func() {
			if err := src.Run(ctx, source.Events{Changed: s.changed, Failed: s.failed, Confirmed: func() {}}); err != nil {
				s.failed(err)
			}
		}()
	}
	return out, started, nil
}

// waitInformers waits until every informer sidecar holds keys APIKeys and
// returns how long that took since start.
func waitInformers(ctx context.Context, sidecars []*informerSidecar, keys int, start time.Time) (time.Duration, error) {
	for {
		ready, lastErr := 0, error(nil)
		for _, s := range sidecars {
			n, err := s.keyCount()
			if n == keys {
				ready++
			} else if err != nil {
				lastErr = err
			}
		}
		if ready == len(sidecars) {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d informer sidecars hold %d APIKeys (last failure: %v): %w", ready, len(sidecars), keys, lastErr, ctx.Err()) //nolint:errorlint // the context's error is the cause; the source's is context
		case <-time.After(100 * time.Millisecond):
		}
	}
}
