// Package tokenendpoint is the operator's OAuth 2.0 token endpoint: a
// service trades its long-lived API key (the client secret) for a short-lived
// JWT (RFC 6749 §4.4 client credentials, RFC 9068 access token profile)
// signed with the active key of the SigningKey its APIKey names.
//
// Every token carries the API key's ID in the gatehouse_key_id claim, so
// sidecars deny it as soon as that key is disabled, rotated out or expired,
// with no call back to the operator.
//
// RFC 8693 token exchange is deliberately not offered: its subject_token
// would be the API key itself, which adds a second, less common way to send
// the same secret with no capability that client credentials lacks.
package tokenendpoint

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"k8s.io/utils/clock"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// maxBodyBytes bounds a token request; real ones are a few hundred bytes.
const maxBodyBytes = 8 << 10

// ErrNotFound is returned by a Store when there is no such record or key.
var ErrNotFound = errors.New("not found")

// Signer is the private key that signs now for one SigningKey.
type Signer struct {
	// Key is the private JWK, with kid and alg set.
	Key jwk.Key
	// Issuer is the SigningKey's spec.issuer.
	Issuer string
	// MaxLifetime is the longest a token signed now may live: a retired
	// key stays published for the rotation overlap only.
	MaxLifetime time.Duration
}

// Store reads what the endpoint needs, from the operator's cache.
type Store interface {
	// RecordForKey returns the record of the APIKey holding key (its ID
	// and hash), or ErrNotFound.
	RecordForKey(ctx context.Context, key apikeyformat.Key) (*apikeyformat.Record, error)
	// ActiveSigner returns the key that signs at now for the SigningKey
	// namespace/name; never a Next, Retired or revoked key.
	ActiveSigner(ctx context.Context, namespace, name string, now time.Time) (*Signer, error)
}

// Server serves POST /oauth2/token.
type Server struct {
	Store Store
	Log   logr.Logger
	// Clock and Rand are seams for tests.
	Clock clock.PassiveClock
	Rand  io.Reader
	// MaxLifetime caps every token whatever the APIKey allows (0: no cap
	// beyond the APIKey's and the SigningKey's).
	MaxLifetime time.Duration

	byAddr  *failureLimiter
	byKeyID *failureLimiter
	metrics *metrics
}

// NewServer returns a Server with brute-force limits: after 10 failed
// attempts, one more per 6 seconds per client address and per key ID.
func NewServer(store Store, log logr.Logger, m *metrics) *Server {
	return &Server{
		Store:   store,
		Log:     log,
		Clock:   clock.RealClock{},
		Rand:    rand.Reader,
		byAddr:  newFailureLimiter(65536, 10, 10),
		byKeyID: newFailureLimiter(65536, 10, 10),
		metrics: m,
	}
}

// tokenResponse is the RFC 6749 §5.1 success body.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
}

// ServeHTTP implements the endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.Clock.Now()
	res, e := s.issue(r, now)
	log := s.Log.WithValues("result", resultOf(e))
	if res.keyID != "" {
		log = log.WithValues("keyID", res.keyID)
	}
	if e != nil {
		if res.reason != "" {
			log = log.WithValues("reason", res.reason)
		}
		log.Info("token refused")
		s.metrics.observe(e.code)
		s.writeError(w, *e)
		return
	}
	log.Info("token issued", "subject", res.subject, "scopes", res.body.Scope, "jti", res.jti, "namespace", res.namespace, "expiresIn", res.body.ExpiresIn)
	s.metrics.observe("issued")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	_ = writeJSON(w, res.body)
}

func resultOf(e *oauthError) string {
	if e == nil {
		return "issued"
	}
	return e.code
}

// issued is what a request produced, for the response, the log and metrics.
// It never holds the API key or the token outside body.
type issued struct {
	body      tokenResponse
	keyID     string
	subject   string
	namespace string
	jti       string
	reason    string
}

func (s *Server) issue(r *http.Request, now time.Time) (issued, *oauthError) {
	var res issued
	if r.Method != http.MethodPost {
		return res, &oauthError{status: http.StatusMethodNotAllowed, code: errInvalidRequest, description: "The token endpoint accepts POST only."}
	}
	addr := clientAddr(r)
	if blocked, wait := s.byAddr.blocked(addr, now); blocked {
		res.reason = "address_rate_limited"
		return res, &oauthError{status: http.StatusTooManyRequests, code: errSlowDown, description: "Too many failed attempts from this address.", retryAfter: wait}
	}
	form, e := parseForm(r)
	if e != nil {
		return res, e
	}
	if form.Get("grant_type") == "" {
		return res, &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, description: "grant_type is required."}
	}
	if form.Get("grant_type") != "client_credentials" {
		return res, &oauthError{status: http.StatusBadRequest, code: errUnsupportedGrantType, description: "Only the client_credentials grant is supported."}
	}
	clientID, secret, e := clientCredentials(r, form)
	if e != nil {
		return res, e
	}

	fail := func(reason string, keyID string) (issued, *oauthError) {
		s.byAddr.fail(addr, now)
		if keyID != "" {
			s.byKeyID.fail(keyID, now)
		}
		res.reason = reason
		return res, &oauthError{status: http.StatusUnauthorized, code: errInvalidClient, description: "Client authentication failed."}
	}
	key, err := apikeyformat.Parse(secret)
	if err != nil {
		return fail("malformed_key", "")
	}
	res.keyID = key.ID()
	if clientID != "" && clientID != key.ID() {
		return fail("client_id_mismatch", key.ID())
	}
	if blocked, wait := s.byKeyID.blocked(key.ID(), now); blocked {
		res.reason = "key_rate_limited"
		return res, &oauthError{status: http.StatusTooManyRequests, code: errSlowDown, description: "Too many failed attempts for this key.", retryAfter: wait}
	}
	rec, err := s.Store.RecordForKey(r.Context(), key)
	if errors.Is(err, ErrNotFound) {
		return fail("unknown_key", key.ID())
	}
	if err != nil {
		res.reason = "store_error"
		s.Log.Error(err, "reading api key record", "keyID", key.ID())
		return res, &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavail, description: "The token endpoint cannot read its state; try again later."}
	}
	if d := rec.Check(key, now); d != apikeyformat.Accepted {
		return fail(string(d), key.ID())
	}
	res.subject, res.namespace = rec.Subject, rec.Namespace
	te := rec.TokenExchange
	if te == nil {
		res.reason = "exchange_not_enabled"
		return res, &oauthError{status: http.StatusBadRequest, code: errUnauthorizedClient, description: "This API key may not be exchanged for tokens (spec.tokenExchange is not set)."}
	}
	scopes, e := grantScopes(form.Get("scope"), rec.Scopes)
	if e != nil {
		return res, e
	}
	audience, e := pickAudience(form, te.Audiences)
	if e != nil {
		return res, e
	}
	signer, err := s.Store.ActiveSigner(r.Context(), rec.Namespace, te.SigningKeyName, now)
	if err != nil {
		res.reason = "no_active_signing_key"
		s.Log.Error(err, "finding the active signing key", "keyID", key.ID(), "namespace", rec.Namespace, "signingKey", te.SigningKeyName)
		return res, &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavail, description: "No signing key is active for this API key; try again later."}
	}

	exp := now.Add(s.lifetime(te, signer))
	if rec.ExpiresAt != nil && rec.ExpiresAt.Before(exp) {
		exp = *rec.ExpiresAt
	}
	for _, k := range rec.Keys {
		if k.KeyID == key.ID() && k.NotAfter != nil && k.NotAfter.Before(exp) {
			exp = *k.NotAfter // a key in its rotation grace period cannot mint tokens that outlive it
		}
	}
	jti, err := s.newJTI()
	if err != nil {
		res.reason = "randomness_failed"
		return res, &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavail, description: "The token endpoint could not create a token; try again later."}
	}
	token, err := sign(signer, tokenClaims{
		issuer: signer.Issuer, subject: rec.Subject, audience: audience, scopes: scopes,
		keyID: key.ID(), jti: jti, now: now, exp: exp,
	})
	if err != nil {
		res.reason = "signing_failed"
		s.Log.Error(err, "signing a token", "keyID", key.ID(), "jti", jti)
		return res, &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavail, description: "The token endpoint could not sign a token; try again later."}
	}
	res.jti = jti
	res.body = tokenResponse{
		AccessToken: token,
		TokenType:   "Bearer",
		ExpiresIn:   int64(exp.Sub(now).Round(time.Second) / time.Second),
		Scope:       strings.Join(scopes, " "),
	}
	return res, nil
}

func (s *Server) lifetime(te *apikeyformat.RecordTokenExchange, signer *Signer) time.Duration {
	d := time.Duration(te.MaxLifetimeSeconds) * time.Second
	if d <= 0 {
		d = 15 * time.Minute
	}
	if s.MaxLifetime > 0 && s.MaxLifetime < d {
		d = s.MaxLifetime
	}
	if signer.MaxLifetime > 0 && signer.MaxLifetime < d {
		d = signer.MaxLifetime
	}
	return d
}

func (s *Server) newJTI() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(s.Rand, b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// parseForm reads the form body. RFC 6749 §3.2: parameters must not repeat.
func parseForm(r *http.Request) (url.Values, *oauthError) {
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !strings.EqualFold(strings.TrimSpace(ct), "application/x-www-form-urlencoded") {
		return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, description: "The body must be application/x-www-form-urlencoded."}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil || len(body) > maxBodyBytes {
		return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, description: "The request body is unreadable or too large."}
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, description: "The request body is not a valid form."}
	}
	if len(r.URL.RawQuery) > 0 {
		// Credentials in a URL end up in access logs.
		return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, description: "Parameters must be sent in the body, not the URL."}
	}
	for _, v := range form {
		if len(v) > 1 {
			return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, description: "A parameter was sent more than once."}
		}
	}
	return form, nil
}

// clientCredentials reads client_id and client_secret from HTTP Basic
// (RFC 6749 §2.3.1, both form-encoded) or from the body
// (client_secret_post); a client must not use both.
func clientCredentials(r *http.Request, form url.Values) (string, string, *oauthError) {
	user, pass, basic := r.BasicAuth()
	postSecret := form.Get("client_secret")
	invalid := func(desc string) (string, string, *oauthError) {
		return "", "", &oauthError{status: http.StatusUnauthorized, code: errInvalidClient, description: desc}
	}
	switch {
	case basic && postSecret != "":
		return "", "", &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, description: "Use one client authentication method, not two."}
	case basic:
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || secret == "" {
			return invalid("Client authentication failed.")
		}
		return id, secret, nil
	case postSecret != "":
		return form.Get("client_id"), postSecret, nil
	case r.Header.Get("Authorization") != "":
		return invalid("Client authentication failed.")
	default:
		return invalid("Client authentication is required: the API key is the client secret.")
	}
}

// grantScopes returns the requested scopes if all are granted, or every
// granted scope when none is requested (RFC 6749 §3.3).
func grantScopes(requested string, granted []string) ([]string, *oauthError) {
	fields := strings.Fields(requested)
	if len(fields) == 0 {
		return slices.Clone(granted), nil
	}
	var out []string
	for _, s := range fields {
		if !slices.Contains(granted, s) {
			return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidScope, description: "A requested scope is not granted to this API key."}
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// pickAudience takes `audience` (or RFC 8707 `resource`) if allowed, the
// first allowed audience when none is asked for.
func pickAudience(form url.Values, allowed []string) (string, *oauthError) {
	want := form.Get("audience")
	if want == "" {
		want = form.Get("resource")
	}
	if want == "" {
		if len(allowed) > 0 {
			return allowed[0], nil
		}
		return "", nil
	}
	if !slices.Contains(allowed, want) {
		return "", &oauthError{status: http.StatusBadRequest, code: errInvalidTarget, description: "The requested audience is not allowed for this API key."}
	}
	return want, nil
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type tokenClaims struct {
	issuer, subject, audience, keyID, jti string
	scopes                                []string
	now, exp                              time.Time
}

func sign(signer *Signer, c tokenClaims) (string, error) {
	b := jwt.NewBuilder().
		Issuer(c.issuer).
		Subject(c.subject).
		IssuedAt(c.now).
		NotBefore(c.now).
		Expiration(c.exp).
		JwtID(c.jti).
		Claim("client_id", c.keyID).
		Claim(gatehousev1.ClaimAPIKeyID, c.keyID).
		Claim("scope", strings.Join(c.scopes, " "))
	if c.audience != "" {
		b = b.Audience([]string{c.audience})
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("building claims: %w", err)
	}
	alg, ok := signer.Key.Algorithm().(jwa.SignatureAlgorithm)
	if !ok || alg == "" || alg == jwa.NoSignature {
		return "", errors.New("signing key has no signature algorithm")
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "at+jwt"); err != nil {
		return "", err
	}
	out, err := jwt.Sign(tok, jwt.WithKey(alg, signer.Key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	return string(out), nil
}
