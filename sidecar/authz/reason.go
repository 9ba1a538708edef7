package authz

import (
	"net/http"
	"strings"

	"gatehouse.dev/gatehouse/sidecar/canonical"
)

// Reason is a static code saying why a request was allowed or denied. It is
// safe for responses, logs and metric labels: it never carries input.
type Reason string

// Allow reasons.
const (
	Authenticated Reason = "authenticated"
	Anonymous     Reason = "anonymous"
)

// Deny reasons. docs/sidecar.md lists them with their HTTP status.
const (
	NotReady       Reason = "not_ready"
	NoPolicy       Reason = "no_policy"
	NoMatchingRule Reason = "no_matching_rule"
	DeniedByRule   Reason = "denied_by_rule"
	InvalidPath    Reason = "invalid_path"
	AmbiguousPath  Reason = "ambiguous_path"
	InvalidMethod  Reason = "invalid_method"
	TooManyHeaders Reason = "too_many_headers"
	InternalError  Reason = "internal_error"

	MissingCredential     Reason = "missing_credential"
	MultipleCredentials   Reason = "multiple_credentials"
	CredentialNotAccepted Reason = "credential_not_accepted"

	MalformedAPIKey     Reason = "malformed_api_key"
	UnknownAPIKey       Reason = "unknown_api_key"
	WrongAPIKey         Reason = "wrong_api_key"
	APIKeyRevoked       Reason = "api_key_revoked"
	APIKeyExpired       Reason = "api_key_expired"
	APIKeyNotYetValid   Reason = "api_key_not_yet_valid"
	APIKeyGracePeriod   Reason = "api_key_grace_period_over"
	InvalidAPIKeyRecord Reason = "invalid_api_key_record"
	RateLimited         Reason = "rate_limited"

	TokenTooLarge       Reason = "token_too_large"
	MalformedToken      Reason = "malformed_token"
	AlgorithmNotAllowed Reason = "algorithm_not_allowed"
	UnknownIssuer       Reason = "unknown_issuer"
	UnknownKeyID        Reason = "unknown_kid"
	InvalidSignature    Reason = "invalid_signature"
	MalformedClaims     Reason = "malformed_claims"
	MissingExpiry       Reason = "missing_exp"
	TokenExpired        Reason = "token_expired"
	TokenNotYetValid    Reason = "token_not_yet_valid"
	WrongAudience       Reason = "wrong_audience"
	TokenRevoked        Reason = "token_revoked"

	InsufficientScope  Reason = "insufficient_scope"
	ClaimsNotSatisfied Reason = "claims_not_satisfied"
)

// AllReasons lists every reason, for documentation tests and metrics
// initialisation.
var AllReasons = []Reason{
	Authenticated, Anonymous,
	NotReady, NoPolicy, NoMatchingRule, DeniedByRule, InvalidPath, AmbiguousPath, InvalidMethod, TooManyHeaders, InternalError,
	MissingCredential, MultipleCredentials, CredentialNotAccepted,
	MalformedAPIKey, UnknownAPIKey, WrongAPIKey, APIKeyRevoked, APIKeyExpired, APIKeyNotYetValid, APIKeyGracePeriod, InvalidAPIKeyRecord, RateLimited,
	TokenTooLarge, MalformedToken, AlgorithmNotAllowed, UnknownIssuer, UnknownKeyID, InvalidSignature, MalformedClaims, MissingExpiry, TokenExpired, TokenNotYetValid, WrongAudience, TokenRevoked,
	InsufficientScope, ClaimsNotSatisfied,
}

// Status is the HTTP status a denial with this reason gets (200 for allow
// reasons). Internal failures and a missing state get 403, not 5xx: Envoy
// treats a 5xx from an HTTP authorization service as an error and, with
// failure_mode_allow set, would let the request through.
func (r Reason) Status() int {
	switch r {
	case Authenticated, Anonymous:
		return http.StatusOK
	case InvalidPath, AmbiguousPath, InvalidMethod:
		return http.StatusBadRequest
	case TooManyHeaders:
		return http.StatusRequestHeaderFieldsTooLarge
	case RateLimited:
		return http.StatusTooManyRequests
	case NotReady, NoPolicy, NoMatchingRule, DeniedByRule, InternalError, InsufficientScope, ClaimsNotSatisfied:
		return http.StatusForbidden
	default:
		return http.StatusUnauthorized
	}
}

// refusalReason is the deny reason of a request the canonicaliser refused:
// invalid_method, ambiguous_path for a well-formed path the upstream could
// read otherwise than the rules (dot segments, encoded separators, "//",
// ";" parameters, double encoding), invalid_path for a malformed one.
func refusalReason(err error) Reason {
	r, ok := canonical.AsRefusal(err)
	switch {
	case !ok:
		return InternalError
	case r == canonical.ErrInvalidMethod:
		return InvalidMethod
	case r.Ambiguous():
		return AmbiguousPath
	default:
		return InvalidPath
	}
}

// credentialKind of a reason: which credential type the failure is about,
// to pick the WWW-Authenticate scheme.
func (r Reason) credentialKind() CredentialKind {
	switch r {
	case MalformedAPIKey, UnknownAPIKey, WrongAPIKey, APIKeyRevoked, APIKeyExpired, APIKeyNotYetValid, APIKeyGracePeriod, InvalidAPIKeyRecord, RateLimited:
		return CredentialAPIKey
	case TokenTooLarge, MalformedToken, AlgorithmNotAllowed, UnknownIssuer, UnknownKeyID, InvalidSignature, MalformedClaims, MissingExpiry, TokenExpired, TokenNotYetValid, WrongAudience, TokenRevoked:
		return CredentialJWT
	}
	return ""
}

// Realm is the realm of every challenge.
const Realm = "gatehouse"

// APIKeyScheme is the HTTP authentication scheme of API keys, distinct from
// Bearer so that clients can tell which credential a challenge asks for.
const APIKeyScheme = "ApiKey"

func challenge(kind CredentialKind, errCode string, scopes []string) string {
	if len(scopes) == 0 {
		if s, ok := fixedChallenges[challengeKey{kind, errCode}]; ok {
			return s
		}
	}
	return buildChallenge(kind, errCode, scopes)
}

func buildChallenge(kind CredentialKind, errCode string, scopes []string) string {
	scheme := "Bearer"
	if kind == CredentialAPIKey {
		scheme = APIKeyScheme
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString(` realm="` + Realm + `"`)
	if errCode != "" {
		b.WriteString(`, error="` + errCode + `"`)
	}
	if len(scopes) > 0 {
		b.WriteString(`, scope="` + strings.Join(scopes, " ") + `"`)
	}
	return b.String()
}

type challengeKey struct {
	kind CredentialKind
	code string
}

// fixedChallenges are the challenges without scopes, built once: every
// denied credential gets one, and a flood of bad credentials should not
// build the same string again each time.
var fixedChallenges = func() map[challengeKey]string {
	m := map[challengeKey]string{}
	for _, kind := range []CredentialKind{"", CredentialJWT, CredentialAPIKey} {
		for _, code := range []string{"", "invalid_request", "invalid_token", "invalid_key", "insufficient_scope"} {
			m[challengeKey{kind, code}] = buildChallenge(kind, code, nil)
		}
	}
	return m
}()
