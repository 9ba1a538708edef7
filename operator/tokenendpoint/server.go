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

// noHash is a well-formed stored hash that no key has, to compare an
// unknown key against.
var noHash = strings.Repeat("0", 64)

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
	// TrustedProxies are the proxies whose X-Forwarded-For names the
	// client address that failures count against (none by default).
	TrustedProxies TrustedProxies

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
		log = log.WithValues("reason", string(e.reason))
		if res.failure != "" && res.failure != e.reason {
			log = log.WithValues("failure", string(res.failure))
		}
		if res.keyFailuresExceeded {
			log = log.WithValues("keyFailuresExceeded", true)
		}
		log.Info("token refused")
		s.metrics.observe(e.reason.Code())
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
	return e.reason.Code()
}

// issued is what a request produced, for the response, the log and metrics.
// It never holds the API key or the token outside body.
type issued struct {
	body      tokenResponse
	keyID     string
	subject   string
	namespace string
	jti       string
	// failure is the authentication failure behind a slow-down answer.
	failure Reason
	// keyFailuresExceeded says the key ID has failed more often than the
	// limit allows: logged for operators, never shown to the client.
	keyFailuresExceeded bool
}

// tokenRequest is a well-formed client_credentials request.
type tokenRequest struct {
	form     url.Values
	clientID string
	secret   string
}

// issue runs the steps of a token request: read it, authenticate the
// client (and account for a failure), authorise the scopes and audience
// asked for, and mint the token.
func (s *Server) issue(r *http.Request, now time.Time) (issued, *oauthError) {
	var res issued
	req, e := readRequest(r)
	if e != nil {
		return res, e
	}
	key, rec, e := s.authenticate(r.Context(), req, now)
	if key != nil {
		res.keyID = key.ID()
	}
	if e != nil {
		return s.accountFailure(res, r, rec != nil, e, now)
	}
	res.subject, res.namespace = rec.Subject, rec.Namespace
	grant, e := authorize(req.form, rec)
	if e != nil {
		return res, e
	}
	res.body, res.jti, e = s.mint(r.Context(), *key, rec, grant, now)
	return res, e
}

// readRequest checks the method, the form and the grant type, and reads
// the client's credentials.
func readRequest(r *http.Request) (tokenRequest, *oauthError) {
	if r.Method != http.MethodPost {
		return tokenRequest{}, refuse(MethodNotAllowed)
	}
	form, e := parseForm(r)
	if e != nil {
		return tokenRequest{}, e
	}
	switch form.Get("grant_type") {
	case "":
		return tokenRequest{}, refuse(MissingGrantType)
	case "client_credentials":
	default:
		return tokenRequest{}, refuse(UnsupportedGrantType)
	}
	clientID, secret, e := clientCredentials(r, form)
	if e != nil {
		return tokenRequest{}, e
	}
	return tokenRequest{form: form, clientID: clientID, secret: secret}, nil
}

// authenticate verifies the API key. It returns the parsed key when the
// secret is well-formed and the record when the key ID exists, also on
// failure, so that the caller can account for the failure. Every
// authentication failure gets the same answer (see refusals).
func (s *Server) authenticate(ctx context.Context, req tokenRequest, now time.Time) (*apikeyformat.Key, *apikeyformat.Record, *oauthError) {
	key, err := apikeyformat.Parse(req.secret)
	if err != nil {
		return nil, nil, refuse(MalformedKey)
	}
	rec, err := s.Store.RecordForKey(ctx, key)
	if errors.Is(err, ErrNotFound) {
		// Hash the key anyway, as Check would, so that an unknown key
		// ID costs the same work as a wrong secret for a known one.
		_ = apikeyformat.HashMatches(key, noHash)
		return &key, nil, refuse(UnknownKey)
	}
	if err != nil {
		s.Log.Error(err, "reading api key record", "keyID", key.ID())
		return &key, nil, refuse(StoreError)
	}
	if d := rec.Check(key, now); d != apikeyformat.Accepted {
		return &key, rec, refuse(reasonOf(d))
	}
	if req.clientID != "" && req.clientID != key.ID() {
		return &key, rec, refuse(ClientIDMismatch)
	}
	return &key, rec, nil
}

// accountFailure counts a failed authentication against the client
// address and, when the key ID exists, against the key ID. It runs only
// after verification, so a correct key is never refused because others
// failed. The answer depends on the client address's bucket alone: the
// key ID's bucket is logged, never shown, since a different answer for
// an existing key ID would tell anyone which key IDs exist.
func (s *Server) accountFailure(res issued, r *http.Request, keyExists bool, e *oauthError, now time.Time) (issued, *oauthError) {
	if e.reason.Status() != http.StatusUnauthorized {
		return res, e // not the client's failure (a store error)
	}
	if keyExists {
		res.keyFailuresExceeded, _ = s.byKeyID.fail(res.keyID, now)
	}
	exceeded, wait := s.byAddr.fail(s.TrustedProxies.clientAddr(r), now)
	if !exceeded {
		return res, e
	}
	res.failure = e.reason
	return res, &oauthError{reason: AddressSlowedDown, retryAfter: wait}
}

// grant is what an authorised request may have in its token.
type grant struct {
	exchange *apikeyformat.RecordTokenExchange
	scopes   []string
	audience string
}

// authorize checks that the key may be exchanged, and for the scopes and
// audience asked for.
func authorize(form url.Values, rec *apikeyformat.Record) (grant, *oauthError) {
	te := rec.TokenExchange
	if te == nil {
		return grant{}, refuse(ExchangeNotEnabled)
	}
	scopes, e := grantScopes(form.Get("scope"), rec.Scopes)
	if e != nil {
		return grant{}, e
	}
	audience, e := pickAudience(form, te.Audiences)
	if e != nil {
		return grant{}, e
	}
	return grant{exchange: te, scopes: scopes, audience: audience}, nil
}

// mint signs the token with the active key of the APIKey's SigningKey.
func (s *Server) mint(ctx context.Context, key apikeyformat.Key, rec *apikeyformat.Record, g grant, now time.Time) (tokenResponse, string, *oauthError) {
	signer, err := s.Store.ActiveSigner(ctx, rec.Namespace, g.exchange.SigningKeyName, now)
	if err != nil {
		s.Log.Error(err, "finding the active signing key", "keyID", key.ID(), "namespace", rec.Namespace, "signingKey", g.exchange.SigningKeyName)
		return tokenResponse{}, "", refuse(NoActiveSigningKey)
	}
	exp := s.expiry(key, rec, g.exchange, signer, now)
	jti, err := s.newJTI()
	if err != nil {
		return tokenResponse{}, "", refuse(RandomnessFailed)
	}
	token, err := sign(signer, tokenClaims{
		issuer: signer.Issuer, subject: rec.Subject, audience: g.audience, scopes: g.scopes,
		keyID: key.ID(), jti: jti, now: now, exp: exp,
	})
	if err != nil {
		s.Log.Error(err, "signing a token", "keyID", key.ID(), "jti", jti)
		return tokenResponse{}, "", refuse(SigningFailed)
	}
	return tokenResponse{
		AccessToken: token,
		TokenType:   "Bearer",
		ExpiresIn:   int64(exp.Sub(now).Round(time.Second) / time.Second),
		Scope:       strings.Join(g.scopes, " "),
	}, jti, nil
}

// expiry is the earliest of the lifetime caps, the APIKey's expiry and,
// for a key in its rotation grace period, the end of that period: such a
// key cannot mint tokens that outlive it.
func (s *Server) expiry(key apikeyformat.Key, rec *apikeyformat.Record, te *apikeyformat.RecordTokenExchange, signer *Signer, now time.Time) time.Time {
	exp := now.Add(s.lifetime(te, signer))
	if rec.ExpiresAt != nil && rec.ExpiresAt.Before(exp) {
		exp = *rec.ExpiresAt
	}
	for _, k := range rec.Keys {
		if k.KeyID == key.ID() && k.NotAfter != nil && k.NotAfter.Before(exp) {
			exp = *k.NotAfter
		}
	}
	return exp
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
		return nil, refuse(NotAForm)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil || len(body) > maxBodyBytes {
		return nil, refuse(UnreadableBody)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, refuse(UnreadableBody)
	}
	if len(r.URL.RawQuery) > 0 {
		// Credentials in a URL end up in access logs.
		return nil, refuse(ParametersInURL)
	}
	for _, v := range form {
		if len(v) > 1 {
			return nil, refuse(RepeatedParameter)
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
	switch {
	case basic && postSecret != "":
		return "", "", refuse(TwoAuthMethods)
	case basic:
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || secret == "" {
			return "", "", refuse(MalformedCredentials)
		}
		return id, secret, nil
	case postSecret != "":
		return form.Get("client_id"), postSecret, nil
	case r.Header.Get("Authorization") != "":
		return "", "", refuse(MalformedCredentials)
	default:
		return "", "", refuse(MissingCredentials)
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
			return nil, refuse(ScopeNotGranted)
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
		return "", refuse(AudienceNotAllowed)
	}
	return want, nil
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
