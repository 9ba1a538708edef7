// Package xdsload serves load-test fixtures (`loadgen fixtures`) to a
// sidecar over delta xDS with the operator's own server and caches
// (operator/xds), without an API server, and changes keys at a steady
// rate: hack/load.sh's churn mode, which measures the sidecar's latency
// while the state it serves from changes.
//
// Streams are authenticated with one random token, written for the
// sidecar to present, and TLS from a CA made for the run. The keys the
// load client uses are never changed, so that every verdict it expects
// stays true.
package xdsload

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
)

// Files Start writes to Options.OutDir.
const (
	// CAFileName is the CA bundle the sidecar trusts (--xds-ca-file).
	CAFileName = "ca.pem"
	// TokenFileName is the token the sidecar presents (--xds-token-file),
	// mode 0600.
	TokenFileName = "token"
)

// Options configure Start.
type Options struct {
	// ConfigDir is the fixtures' config directory.
	ConfigDir string
	// Namespace is the fixtures' namespace, which the token authenticates
	// as.
	Namespace string
	// ClientKeys are the plaintext API keys the load client sends: their
	// APIKeys are never changed.
	ClientKeys []string
	// Addr is the address to serve on (127.0.0.1:0 for any port); it is
	// listened on once the fixtures are loaded and the CA and the token
	// are written, so that whoever waits for the port finds them.
	Addr string
	// OutDir receives CAFileName and TokenFileName.
	OutDir string
	Log    logr.Logger
}

// Server serves the fixtures until its context ends.
type Server struct {
	// Addr is the address served.
	Addr      string
	ns        string
	caches    *xds.Namespaces
	churnable []*gatehousev1.APIKey
	next      int
	done      chan error
}

// Start loads the fixtures into the caches, writes the CA and the token,
// and serves in the background until ctx ends; Wait returns then.
func Start(ctx context.Context, o Options) (*Server, error) {
	objs, err := readObjects(o.ConfigDir)
	if err != nil {
		return nil, err
	}
	s := &Server{ns: o.Namespace, caches: xds.NewNamespaces(), done: make(chan error, 1)}
	if err := s.load(objs); err != nil {
		return nil, err
	}
	if s.churnable, err = churnable(objs.apiKeys, o.ClientKeys); err != nil {
		return nil, err
	}
	tlsConfig, caPEM, err := LoopbackTLS(time.Now())
	if err != nil {
		return nil, err
	}
	token := rand.Text() + rand.Text()
	if err := writeFiles(o.OutDir, caPEM, token); err != nil {
		return nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", o.Addr, err)
	}
	s.Addr = ln.Addr().String()
	srv := &xds.Server{
		Listener: ln, TLS: tlsConfig, Caches: s.caches, Log: o.Log,
		Reviewer: &oneToken{token: []byte(token), id: xds.Identity{Namespace: o.Namespace, ServiceAccount: "loadtest", PodName: "loadtest", PodUID: "loadtest"}},
	}
	go func() { s.done <- srv.Start(ctx) }()
	return s, nil
}

// Wait waits until the server has stopped.
func (s *Server) Wait() error { return <-s.done }

// load puts the fixtures into the caches, compiled as the operator's Feed
// compiles them.
func (s *Server) load(objs *objects) error {
	entries := make(map[string]types.Resource, len(objs.apiKeys))
	for _, ak := range objs.apiKeys {
		entries[ak.Name] = xds.APIKeyEntry(ak)
	}
	sets := map[string]types.Resource{}
	for _, sk := range objs.signingKeys {
		if r := xds.IssuerKeySet(sk); r != nil {
			sets[sk.Name] = r
		}
	}
	noConfigMaps := func(string) *corev1.ConfigMap { return nil }
	policies := map[string]types.Resource{}
	for _, p := range objs.policies {
		policies[p.Name] = xds.AuthPolicy(p, noConfigMaps)
	}
	for typ, res := range map[string]map[string]types.Resource{xds.APIKeyEntryType: entries, xds.IssuerKeySetType: sets, xds.AuthPolicyType: policies} {
		if err := s.caches.Update(s.ns, typ, res, nil); err != nil {
			return fmt.Errorf("loading the %s cache: %w", typ, err)
		}
	}
	return nil
}

// churnable are the APIKeys none of whose keys the client sends.
func churnable(apiKeys []*gatehousev1.APIKey, clientKeys []string) ([]*gatehousev1.APIKey, error) {
	used := map[string]bool{}
	for _, k := range clientKeys {
		key, err := apikeyformat.Parse(k)
		if err != nil {
			return nil, errors.New("a client key does not parse") // never the key itself
		}
		used[key.Hash()] = true
	}
	var out []*gatehousev1.APIKey
	for _, ak := range apiKeys {
		usedByClient := false
		for _, k := range ak.Status.Keys {
			usedByClient = usedByClient || used[k.SHA256]
		}
		if !usedByClient {
			out = append(out, ak)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("all %d APIKeys are the client's: none to change (write more keys than the client gets)", len(apiKeys))
	}
	return out, nil
}

func writeFiles(dir string, caPEM []byte, token string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAFileName), caPEM, 0o644); err != nil { //nolint:gosec // a CA certificate is public
		return fmt.Errorf("writing the CA: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, TokenFileName), []byte(token), 0o600); err != nil {
		return fmt.Errorf("writing the token: %w", err)
	}
	return nil
}

// oneToken accepts one token, as the namespace's ServiceAccount and one
// pod (the server bounds streams per pod: one sidecar per token).
type oneToken struct {
	token []byte
	id    xds.Identity
}

func (r *oneToken) Review(_ context.Context, token string) (xds.Identity, error) {
	if subtle.ConstantTimeCompare([]byte(token), r.token) != 1 {
		return xds.Identity{}, errors.New("unknown token")
	}
	return r.id, nil
}
