// Package authz is the sidecar's decision engine: it finds the credential of
// a request, verifies it against the current snapshot (API key hash records,
// JWKS, the AuthPolicy), applies the policy's rules and per-key rate limits,
// and returns a Decision. It knows nothing of gRPC or HTTP; the server
// package translates requests and decisions.
//
// Every deny reason is a static code (Reason). The engine fails closed: no
// snapshot, no policy, an unmatched request or an internal error (a panic is
// recovered per request) all deny.
package authz

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/golang-lru/v2/expirable"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/canonical"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// Defaults of Options.
const (
	DefaultMaxHeaders = 128
	DefaultCacheSize  = 10000
	// DefaultCacheTTL bounds how long an entry stays in memory; entries
	// are never used past their token's expiry whatever this is.
	DefaultCacheTTL = 10 * time.Minute
)

// Options configure an Engine.
type Options struct {
	// Clock is the time source; time.Now when nil. Tests inject one.
	Clock func() time.Time
	// MaxTokenBytes bounds bearer tokens (DefaultMaxTokenBytes when 0).
	MaxTokenBytes int
	// MaxHeaders bounds the number of request header fields
	// (DefaultMaxHeaders when 0).
	MaxHeaders int
	// CacheSize is the number of verified tokens kept (DefaultCacheSize
	// when 0; negative disables the cache).
	CacheSize int
	// Log receives recovered panics.
	Log logr.Logger
}

// Identity is who a credential says the caller is. It never holds the
// credential itself.
type Identity struct {
	Credential CredentialKind
	Subject    string
	Scopes     []string
	// KeyID is the API key ID (API keys, and tokens exchanged from one).
	KeyID string
	// Issuer is the token's iss (JWTs).
	Issuer string
	// TokenID is the token's jti (JWTs).
	TokenID string

	// scopesJoined caches ScopesJoined when the engine knows it.
	scopesJoined string
}

// ScopesJoined is Scopes joined by single spaces, as the identity header
// carries them.
func (id *Identity) ScopesJoined() string {
	if id.scopesJoined != "" || len(id.Scopes) == 0 {
		return id.scopesJoined
	}
	return strings.Join(id.Scopes, " ")
}

// Decision is the engine's answer.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Status is the HTTP status of a denial (200 on allow).
	Status int
	// Challenge is the WWW-Authenticate value of a 401 or 403, if any.
	Challenge string
	// RetryAfter is set on RateLimited.
	RetryAfter time.Duration
	// Identity is the verified identity (allow, and 403 after
	// authentication); nil otherwise.
	Identity *Identity
	// CredentialHeader is the lower-case header the credential came from.
	CredentialHeader string
	// Policy and Rule name what decided, for logs and metadata.
	Policy string
	Rule   string
}

// Engine decides requests. It is safe for concurrent use.
type Engine struct {
	store    *snapshot.Store
	opts     Options
	cache    *expirable.LRU[[sha256.Size]byte, *verifiedToken]
	limiters *limiters
}

// New returns an Engine reading snapshots from store.
func New(store *snapshot.Store, opts Options) *Engine {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.MaxTokenBytes <= 0 {
		opts.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if opts.MaxHeaders <= 0 {
		opts.MaxHeaders = DefaultMaxHeaders
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	e := &Engine{store: store, opts: opts, limiters: newLimiters()}
	if opts.CacheSize > 0 {
		e.cache = expirable.NewLRU[[sha256.Size]byte, *verifiedToken](opts.CacheSize, nil, DefaultCacheTTL)
	}
	return e
}

func deny(r Reason) Decision { return Decision{Reason: r, Status: r.Status()} }

// Clock is the engine's time source (Options.Clock, time.Now by default),
// for callers that read the time of a check once and pass it to CheckAt.
func (e *Engine) Clock() func() time.Time { return e.opts.Clock }

// Check decides one request at the engine's clock's current time. It
// never panics and never returns an allow by accident: any failure is a
// denial with a reason.
func (e *Engine) Check(req *Request) Decision { return e.CheckAt(req, e.opts.Clock()) }

// CheckAt decides one request at now, as Check does: a caller that reads
// the clock for its own purposes (the server's latency and log sampling)
// passes its reading rather than have the engine read the clock again.
func (e *Engine) CheckAt(req *Request, now time.Time) (d Decision) {
	defer func() {
		if p := recover(); p != nil {
			// The panic value may describe input; log only its type.
			e.opts.Log.Error(fmt.Errorf("panic of type %T in check", p), "check panicked; denying")
			d = deny(InternalError)
		}
	}()
	snap := e.store.Load()
	if snap == nil {
		return deny(NotReady)
	}
	pol := snap.Policy
	if pol == nil {
		return deny(NoPolicy)
	}
	if countAbove(req.Headers, e.opts.MaxHeaders) {
		d = deny(TooManyHeaders)
		d.Policy = pol.Name
		return d
	}
	d = e.decide(snap, pol, req, now)
	d.Policy = pol.Name
	return d
}

func (e *Engine) decide(snap *snapshot.Snapshot, pol *snapshot.Policy, req *Request, now time.Time) Decision {
	method, path, err := canonical.Request(req.Method, req.Path, pol.PathOptions)
	if err != nil {
		return deny(refusalReason(err))
	}
	rule := pol.Match(method, req.Host, path)
	if rule == nil {
		return deny(NoMatchingRule)
	}
	d := e.decideRule(snap, pol, rule, req, now)
	d.Rule = rule.Name
	return d
}

func (e *Engine) decideRule(snap *snapshot.Snapshot, pol *snapshot.Policy, rule *snapshot.Rule, req *Request, now time.Time) Decision {
	if rule.Action == gatehousev1.ActionDeny {
		return deny(DeniedByRule)
	}
	anonymous := rule.Action == gatehousev1.ActionAllowAnonymous
	acceptKeys := rule.AcceptAPIKey && !pol.APIKeysDisabled
	// The key header is read even where keys are not accepted, so that a
	// key sent to a JWT-only route is refused as such, not as missing.
	keyHeader := ""
	if !pol.APIKeysDisabled {
		keyHeader = pol.APIKeyHeader
	}
	cred, reason := ExtractCredential(req.Headers, keyHeader)
	if reason != "" {
		return e.denyCredential(reason, rule)
	}
	if cred.Kind == "" {
		if anonymous {
			return Decision{Allowed: true, Reason: Anonymous, Status: 200}
		}
		d := deny(MissingCredential)
		d.Challenge = challenges(acceptKeys, rule.AcceptJWT && len(pol.Issuers) > 0)
		return d
	}
	if (cred.Kind == CredentialAPIKey && !acceptKeys) || (cred.Kind == CredentialJWT && !rule.AcceptJWT) {
		return e.denyCredential(CredentialNotAccepted, rule)
	}
	var id *Identity
	var token *verifiedToken
	var retryAfter time.Duration
	switch cred.Kind {
	case CredentialAPIKey:
		id, reason, retryAfter = e.checkAPIKey(snap, cred.Value, now, req.IdentityRoom)
	case CredentialJWT:
		token, reason, retryAfter = e.checkJWT(snap, pol, cred.Value, now)
		if token != nil {
			id = token.identity
		}
	}
	if reason != "" {
		// A presented credential that fails is refused even on anonymous
		// routes: a client sending a bad key should learn it, and a
		// half-trusted identity is worse than none.
		d := e.denyCredential(reason, rule)
		d.RetryAfter = retryAfter
		return d
	}
	d := Decision{Allowed: true, Reason: Authenticated, Status: 200, Identity: id, CredentialHeader: cred.Header}
	if anonymous {
		return d
	}
	if missing := missingScopes(id.Scopes, rule.Scopes); missing {
		d = deny(InsufficientScope)
		d.Identity = id
		d.Challenge = challenge(id.Credential, "insufficient_scope", rule.Scopes)
		return d
	}
	if len(rule.Claims) > 0 && (token == nil || !claimsSatisfied(token.allClaims(), rule.Claims)) {
		d = deny(ClaimsNotSatisfied)
		d.Identity = id
		d.Challenge = challenge(id.Credential, "insufficient_scope", nil)
		return d
	}
	return d
}

func (e *Engine) denyCredential(r Reason, rule *snapshot.Rule) Decision {
	d := deny(r)
	switch r {
	case MultipleCredentials, CredentialNotAccepted:
		d.Challenge = challenge(CredentialJWT, "invalid_request", nil)
	case RateLimited:
	default:
		kind := r.credentialKind()
		code := "invalid_token"
		if kind == CredentialAPIKey {
			code = "invalid_key"
		}
		d.Challenge = challenge(kind, code, nil)
	}
	return d
}

// challenges lists one challenge per credential type the route accepts;
// a 401 always carries at least the Bearer one (RFC 9110 11.6.1).
func challenges(apiKeys, jwts bool) string {
	if !apiKeys && !jwts {
		jwts = true
	}
	return challengeLists[b2i(apiKeys)][b2i(jwts)]
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// challengeLists are challenges' answers, by [apiKeys][jwts], built once.
var challengeLists = func() (out [2][2]string) {
	for _, apiKeys := range []bool{false, true} {
		for _, jwts := range []bool{false, true} {
			var parts []string
			if jwts {
				parts = append(parts, challenge(CredentialJWT, "", nil))
			}
			if apiKeys {
				parts = append(parts, challenge(CredentialAPIKey, "", nil))
			}
			out[b2i(apiKeys)][b2i(jwts)] = strings.Join(parts, ", ")
		}
	}
	return out
}()

// checkAPIKey checks an API key and returns its identity, written to room
// when room is not nil (Request.IdentityRoom), else allocated.
func (e *Engine) checkAPIKey(snap *snapshot.Snapshot, value string, now time.Time, room *Identity) (*Identity, Reason, time.Duration) {
	key, err := apikeyformat.Parse(value)
	if err != nil {
		return nil, MalformedAPIKey, 0
	}
	rec, ok := snap.Record(key.ID())
	if !ok {
		return nil, UnknownAPIKey, 0
	}
	switch rec.Check(key, now) {
	case apikeyformat.Accepted:
	case apikeyformat.UnknownKey:
		return nil, UnknownAPIKey, 0
	case apikeyformat.WrongKey:
		return nil, WrongAPIKey, 0
	case apikeyformat.Revoked:
		return nil, APIKeyRevoked, 0
	case apikeyformat.Expired:
		return nil, APIKeyExpired, 0
	case apikeyformat.NotYetValid:
		return nil, APIKeyNotYetValid, 0
	case apikeyformat.GraceOver:
		return nil, APIKeyGracePeriod, 0
	default:
		return nil, InvalidAPIKeyRecord, 0
	}
	subject, scopes := rec.Subject(), rec.Scopes()
	if !headerSafe(subject) || !allHeaderSafe(scopes) {
		return nil, InvalidAPIKeyRecord, 0
	}
	if wait := e.limiters.take(rec, now); wait > 0 {
		return nil, RateLimited, wait
	}
	if room == nil {
		room = new(Identity)
	}
	*room = Identity{Credential: CredentialAPIKey, Subject: subject, Scopes: scopes, KeyID: key.ID(), scopesJoined: rec.ScopesJoined()}
	return room, "", 0
}

// checkJWT verifies a bearer token, or finds its verification in the
// cache, and returns it with the identity it carries.
func (e *Engine) checkJWT(snap *snapshot.Snapshot, pol *snapshot.Policy, token string, now time.Time) (*verifiedToken, Reason, time.Duration) {
	if len(token) > e.opts.MaxTokenBytes {
		return nil, TokenTooLarge, 0
	}
	var vt *verifiedToken
	var sum [sha256.Size]byte
	if e.cache != nil {
		sum = tokenSum(token)
		if c, ok := e.cache.Get(sum); ok && e.stillTrusted(pol, c) {
			vt = c
		}
	}
	if vt == nil {
		// Times are checked before the signature: an expired or replayed
		// token costs no verification, and is never cached.
		var reason Reason
		vt, reason = verifyToken(pol, token, e.opts.MaxTokenBytes, now)
		if reason != "" {
			return nil, reason, 0
		}
		if e.cache != nil {
			e.cache.Add(sum, vt)
		}
	} else {
		// A cached verification is re-checked against the current clock
		// and the issuer's current skew.
		iss, _ := pol.IssuerFor(vt.iss)
		if reason := vt.checkTimes(now, iss.ClockSkew); reason != "" {
			return nil, reason, 0
		}
	}
	// Revocation is checked on every use, cached or not: a token exchanged
	// from an API key dies with the key. Its rate limit is the key's: one
	// bucket per APIKey, spent by the key and every token exchanged from
	// it alike, or exchanging the key would lift its limit.
	if kid := vt.identity.KeyID; kid != "" {
		rec, ok := snap.Record(kid)
		if !ok || !rec.KeyValid(now) {
			return nil, TokenRevoked, 0
		}
		if wait := e.limiters.take(rec, now); wait > 0 {
			return nil, RateLimited, wait
		}
	}
	return vt, "", 0
}

// stackHashedTokenBytes bounds the tokens tokenSum hashes from a copy on
// the stack: most tokens, and a frame the stacks of the gRPC server's
// workers already hold.
const stackHashedTokenBytes = 2 << 10

// tokenSum is sha256.Sum256([]byte(token)), the token cache's key. The
// conversion copied every token (a few hundred bytes) to the heap on
// every check; tokens up to stackHashedTokenBytes are hashed from a copy
// on the stack, cleared after (it is a credential).
func tokenSum(token string) [sha256.Size]byte {
	if len(token) > stackHashedTokenBytes {
		return sha256.Sum256([]byte(token))
	}
	var buf [stackHashedTokenBytes]byte
	n := copy(buf[:], token)
	sum := sha256.Sum256(buf[:n])
	clear(buf[:n])
	return sum
}

// stillTrusted says whether a cached verification still holds under the
// current policy: same issuer settings and the very same key still
// published under its kid.
func (e *Engine) stillTrusted(pol *snapshot.Policy, vt *verifiedToken) bool {
	iss, ok := pol.IssuerFor(vt.iss)
	if !ok || iss.Fingerprint != vt.fingerprint {
		return false
	}
	k, ok := iss.Keys.Key(vt.key.KeyID)
	return ok && k == vt.key
}

// PruneLimiters forgets the rate limiters of records no longer in snap.
// Call it after each swap, off the request path.
func (e *Engine) PruneLimiters(snap *snapshot.Snapshot) { e.limiters.prune(snap) }

func missingScopes(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return true
		}
	}
	return false
}

func claimsSatisfied(claims map[string]any, reqs []gatehousev1.ClaimRequirement) bool {
	for _, r := range reqs {
		vals, ok := stringOrList(claims[r.Name])
		if !ok || !intersects(vals, r.Values) {
			return false
		}
	}
	return true
}
