// Package discovery serves, for every SigningKey, the OIDC discovery
// document at <issuer>/.well-known/openid-configuration and the public JWKS
// at <issuer>/.well-known/jwks.json, so that external verifiers (and
// sidecars in remote mode) can use standard discovery.
//
// The server answers from the operator manager's cache: the JWKS the
// SigningKey controller wrote into each SigningKey's status, which only the
// operator may write. An issuer is served for the SigningKey that owns it
// (the oldest claimant within its namespace's issuer prefix). It never calls the API
// server on the request path and needs no leader election, so every operator
// replica serves. Requests are routed by Host and path: the issuer
// https://auth.example.com/tenants/a is served for Host auth.example.com
// under /tenants/a/.well-known/...; TLS is expected to end in front of the
// operator (Ingress, Gateway or mesh), which must keep the Host header.
package discovery

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
)

const (
	// ConfigurationPath is the OIDC discovery document, below the issuer.
	ConfigurationPath = "/.well-known/openid-configuration"
	// JWKSPath is the JWKS, below the issuer.
	JWKSPath = "/.well-known/jwks.json"
	// TokenEndpointPath is the OAuth 2.0 token endpoint, at the root and
	// below every issuer.
	TokenEndpointPath = "/oauth2/token"
	// DefaultMaxAge bounds Cache-Control max-age.
	DefaultMaxAge = time.Minute
)

// IssuerKey normalises a host and path into the key requests and issuers
// are matched on; see keyring.IssuerKey.
func IssuerKey(host, path string) string { return keyring.IssuerKey(host, path) }

// Server is the discovery and JWKS HTTP server. It is a manager.Runnable
// that does not need leader election.
type Server struct {
	// Addr is the listen address, e.g. ":8082". Ignored when Listener is set.
	Addr string
	// Listener, when set, is served instead of listening on Addr (tests).
	Listener net.Listener
	// Reader reads SigningKeys (with keyring.IssuerIndex, which the
	// SigningKey controller registers): the manager's cache.
	Reader client.Reader
	// IssuerPrefix, when set, confines each namespace's issuers (the
	// operator's --issuer-prefix): a SigningKey outside it is not served.
	IssuerPrefix keyring.IssuerPrefix
	Log          logr.Logger
	// TokenEndpoint, when set, is served at TokenEndpointPath and at
	// <issuer>TokenEndpointPath for every issuer served here (any method:
	// it answers for itself), and the discovery documents advertise it.
	TokenEndpoint http.Handler
	// MaxAge bounds Cache-Control max-age (DefaultMaxAge when zero). Each
	// response uses at most half the SigningKey's propagation interval, so
	// a verifier's cached copy is always younger than a next key's
	// publication lead.
	MaxAge time.Duration
}

// NeedLeaderElection reports false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx is done, then shuts down gracefully.
func (s *Server) Start(ctx context.Context) error {
	ln := s.Listener
	if ln == nil {
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", s.Addr); err != nil {
			return fmt.Errorf("listening for discovery: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.Log.Info("serving OIDC discovery and JWKS", "address", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving discovery: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down discovery: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving discovery: %w", err)
	}
	return nil
}

// configuration is the subset of OIDC Discovery 1.0 metadata an issuer
// that only mints access tokens can truthfully publish.
type configuration struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	GrantTypesSupported              []string `json:"grant_types_supported,omitempty"`
	TokenEndpoint                    string   `json:"token_endpoint,omitempty"`
	TokenEndpointAuthMethods         []string `json:"token_endpoint_auth_methods_supported,omitempty"`
}

// ServeHTTP answers GET and HEAD for the two well-known documents, and
// hands Routes to their handlers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.serveToken(w, r) {
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	prefix, isJWKS := strings.CutSuffix(r.URL.Path, JWKSPath)
	if !isJWKS {
		var ok bool
		if prefix, ok = strings.CutSuffix(r.URL.Path, ConfigurationPath); !ok {
			http.NotFound(w, r)
			return
		}
	}
	key := IssuerKey(r.Host, prefix)
	sk, status := s.lookup(r.Context(), key)
	if sk == nil {
		if status == http.StatusServiceUnavailable {
			h.Set("Retry-After", "5")
		}
		http.Error(w, http.StatusText(status), status)
		return
	}
	jwks, _, ok := keyring.Served(sk)
	if !ok {
		h.Set("Retry-After", "5")
		http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		return
	}
	var body []byte
	if isJWKS {
		body = jwks
		h.Set("Content-Type", "application/json")
	} else {
		alg, err := keyring.Algorithm(sk.Spec.Algorithm)
		if err != nil {
			http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
			return
		}
		doc := configuration{
			Issuer:                           sk.Spec.Issuer,
			JWKSURI:                          strings.TrimSuffix(sk.Spec.Issuer, "/") + JWKSPath,
			ResponseTypesSupported:           []string{"token"},
			SubjectTypesSupported:            []string{"public"},
			IDTokenSigningAlgValuesSupported: []string{alg.String()},
		}
		if s.TokenEndpoint != nil {
			doc.GrantTypesSupported = []string{"client_credentials"}
			doc.TokenEndpoint = strings.TrimSuffix(sk.Spec.Issuer, "/") + TokenEndpointPath
			doc.TokenEndpointAuthMethods = []string{"client_secret_basic", "client_secret_post"}
		}
		if body, err = json.Marshal(doc); err != nil {
			http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "application/json")
	}
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:]) + `"`
	h.Set("ETag", etag)
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.maxAge(sk)/time.Second)))
	if matches(r.Header.Values("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// serveToken hands token requests to TokenEndpoint: at the root, or below
// an issuer served here (the one its discovery document advertises). The
// token's issuer is always that of the SigningKey the APIKey names,
// whichever path the request came in on.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) bool {
	if s.TokenEndpoint == nil {
		return false
	}
	prefix, ok := strings.CutSuffix(r.URL.Path, TokenEndpointPath)
	if !ok {
		return false
	}
	if prefix != "" {
		if sk, _ := s.lookup(r.Context(), IssuerKey(r.Host, prefix)); sk == nil {
			return false
		}
	}
	s.TokenEndpoint.ServeHTTP(w, r)
	return true
}

// lookup finds the SigningKey that owns an issuer key: the oldest claimant
// its namespace's prefix allows (keyring.IssuerOwner). A later claimant in
// another namespace can neither take the issuer nor take it offline.
func (s *Server) lookup(ctx context.Context, key string) (*gatehousev1.SigningKey, int) {
	list := &gatehousev1.SigningKeyList{}
	if err := s.Reader.List(ctx, list, client.MatchingFields{keyring.IssuerIndex: key}); err != nil {
		s.Log.Error(err, "listing signingkeys by issuer")
		return nil, http.StatusServiceUnavailable
	}
	owner := keyring.IssuerOwner(list.Items, s.IssuerPrefix)
	if owner == nil {
		return nil, http.StatusNotFound
	}
	return owner, http.StatusOK
}

func (s *Server) maxAge(sk *gatehousev1.SigningKey) time.Duration {
	maxAge := s.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	propagation := keyring.DefaultPropagation
	if r := sk.Spec.Rotation; r != nil && r.Propagation != nil {
		propagation = r.Propagation.Duration
	}
	return max(min(maxAge, propagation/2), 0)
}

// matches implements If-None-Match (RFC 9110 13.1.2): "*" or any listed
// tag equal to etag under weak comparison.
func matches(headers []string, etag string) bool {
	for _, h := range headers {
		for _, tag := range strings.Split(h, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
				return true
			}
		}
	}
	return false
}
