package tokenendpoint

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// OAuth 2.0 error codes (RFC 6749 §5.2, RFC 8707 §2). They double as the
// static result labels of the metrics and logs.
const (
	errInvalidRequest       = "invalid_request"
	errInvalidClient        = "invalid_client"
	errUnauthorizedClient   = "unauthorized_client"
	errUnsupportedGrantType = "unsupported_grant_type"
	errInvalidScope         = "invalid_scope"
	errInvalidTarget        = "invalid_target"
	errTemporarilyUnavail   = "temporarily_unavailable"
	errSlowDown             = "slow_down"
)

// Reason is a static code saying why a token request was refused. It goes
// to the log line of the request, never to the client (the client gets the
// OAuth error code and a fixed description), and never carries input.
// docs/token-endpoint.md lists every reason with its status and code.
type Reason string

// Refusal reasons.
const (
	MethodNotAllowed     Reason = "method_not_allowed"
	NotAForm             Reason = "not_a_form"
	UnreadableBody       Reason = "unreadable_body"
	ParametersInURL      Reason = "parameters_in_url"
	RepeatedParameter    Reason = "repeated_parameter"
	MissingGrantType     Reason = "missing_grant_type"
	UnsupportedGrantType Reason = "unsupported_grant_type"
	TwoAuthMethods       Reason = "two_authentication_methods"
	MissingCredentials   Reason = "missing_credentials"
	MalformedCredentials Reason = "malformed_credentials"
	MalformedKey         Reason = "malformed_key"
	ClientIDMismatch     Reason = "client_id_mismatch"
	UnknownKey           Reason = "unknown_key"
	WrongKey             Reason = "wrong_key"
	KeyRevoked           Reason = "key_revoked"
	KeyExpired           Reason = "key_expired"
	KeyNotYetValid       Reason = "key_not_yet_valid"
	KeyGracePeriodOver   Reason = "key_grace_period_over"
	InvalidRecord        Reason = "invalid_record"
	AddressSlowedDown    Reason = "address_slowed_down"
	ExchangeNotEnabled   Reason = "exchange_not_enabled"
	ScopeNotGranted      Reason = "scope_not_granted"
	AudienceNotAllowed   Reason = "audience_not_allowed"
	StoreError           Reason = "store_error"
	NoActiveSigningKey   Reason = "no_active_signing_key"
	RandomnessFailed     Reason = "randomness_failed"
	SigningFailed        Reason = "signing_failed"
)

// AllReasons lists every reason, for the documentation test.
var AllReasons = []Reason{
	MethodNotAllowed, NotAForm, UnreadableBody, ParametersInURL, RepeatedParameter,
	MissingGrantType, UnsupportedGrantType, TwoAuthMethods,
	MissingCredentials, MalformedCredentials, MalformedKey, ClientIDMismatch,
	UnknownKey, WrongKey, KeyRevoked, KeyExpired, KeyNotYetValid, KeyGracePeriodOver, InvalidRecord,
	AddressSlowedDown,
	ExchangeNotEnabled, ScopeNotGranted, AudienceNotAllowed,
	StoreError, NoActiveSigningKey, RandomnessFailed, SigningFailed,
}

// refusal is what the client sees for a reason: status, OAuth error code
// and a fixed sentence that never echoes what the client sent. Every
// failed client authentication looks the same, whatever the reason, so
// that the answer tells no one whether a key ID exists.
type refusal struct {
	status      int
	code        string
	description string
}

var authFailed = refusal{http.StatusUnauthorized, errInvalidClient, "Client authentication failed."}

var refusals = map[Reason]refusal{
	MethodNotAllowed:     {http.StatusMethodNotAllowed, errInvalidRequest, "The token endpoint accepts POST only."},
	NotAForm:             {http.StatusBadRequest, errInvalidRequest, "The body must be application/x-www-form-urlencoded."},
	UnreadableBody:       {http.StatusBadRequest, errInvalidRequest, "The request body is unreadable, too large or not a valid form."},
	ParametersInURL:      {http.StatusBadRequest, errInvalidRequest, "Parameters must be sent in the body, not the URL."},
	RepeatedParameter:    {http.StatusBadRequest, errInvalidRequest, "A parameter was sent more than once."},
	MissingGrantType:     {http.StatusBadRequest, errInvalidRequest, "grant_type is required."},
	UnsupportedGrantType: {http.StatusBadRequest, errUnsupportedGrantType, "Only the client_credentials grant is supported."},
	TwoAuthMethods:       {http.StatusBadRequest, errInvalidRequest, "Use one client authentication method, not two."},
	MissingCredentials:   {http.StatusUnauthorized, errInvalidClient, "Client authentication is required: the API key is the client secret."},
	MalformedCredentials: authFailed,
	MalformedKey:         authFailed,
	ClientIDMismatch:     authFailed,
	UnknownKey:           authFailed,
	WrongKey:             authFailed,
	KeyRevoked:           authFailed,
	KeyExpired:           authFailed,
	KeyNotYetValid:       authFailed,
	KeyGracePeriodOver:   authFailed,
	InvalidRecord:        authFailed,
	AddressSlowedDown:    {http.StatusTooManyRequests, errSlowDown, "Too many failed attempts from this address."},
	ExchangeNotEnabled:   {http.StatusBadRequest, errUnauthorizedClient, "This API key may not be exchanged for tokens (spec.tokenExchange is not set)."},
	ScopeNotGranted:      {http.StatusBadRequest, errInvalidScope, "A requested scope is not granted to this API key."},
	AudienceNotAllowed:   {http.StatusBadRequest, errInvalidTarget, "The requested audience is not allowed for this API key."},
	StoreError:           {http.StatusServiceUnavailable, errTemporarilyUnavail, "The token endpoint cannot read its state; try again later."},
	NoActiveSigningKey:   {http.StatusServiceUnavailable, errTemporarilyUnavail, "No signing key is active for this API key; try again later."},
	RandomnessFailed:     {http.StatusServiceUnavailable, errTemporarilyUnavail, "The token endpoint could not create a token; try again later."},
	SigningFailed:        {http.StatusServiceUnavailable, errTemporarilyUnavail, "The token endpoint could not sign a token; try again later."},
}

// Status is the HTTP status of a refusal with this reason.
func (r Reason) Status() int { return refusals[r].status }

// Code is the OAuth 2.0 error code of a refusal with this reason.
func (r Reason) Code() string { return refusals[r].code }

// reasonOf maps a record check's outcome to a reason.
func reasonOf(d apikeyformat.Decision) Reason {
	switch d {
	case apikeyformat.UnknownKey:
		return UnknownKey
	case apikeyformat.WrongKey:
		return WrongKey
	case apikeyformat.Revoked:
		return KeyRevoked
	case apikeyformat.Expired:
		return KeyExpired
	case apikeyformat.NotYetValid:
		return KeyNotYetValid
	case apikeyformat.GraceOver:
		return KeyGracePeriodOver
	default:
		return InvalidRecord
	}
}

// oauthError is a refusal of one request.
type oauthError struct {
	reason     Reason
	retryAfter time.Duration
}

func refuse(r Reason) *oauthError { return &oauthError{reason: r} }

func (s *Server) writeError(w http.ResponseWriter, e oauthError) {
	ref := refusals[e.reason]
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if ref.status == http.StatusUnauthorized {
		// RFC 6749 §5.2: a 401 must say which scheme the client may use.
		h.Set("WWW-Authenticate", `Basic realm="gatehouse", charset="UTF-8"`)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(e.retryAfter.Round(time.Second)/time.Second)+1))
	}
	w.WriteHeader(ref.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": ref.code, "error_description": ref.description})
}
