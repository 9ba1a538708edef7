package tokenendpoint

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
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

// oauthError is a refusal. description is a fixed sentence: it never echoes
// what the client sent.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  time.Duration
}

func (s *Server) writeError(w http.ResponseWriter, e oauthError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if e.status == http.StatusUnauthorized {
		// RFC 6749 §5.2: a 401 must say which scheme the client may use.
		h.Set("WWW-Authenticate", `Basic realm="gatehouse", charset="UTF-8"`)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(e.retryAfter.Round(time.Second)/time.Second)+1))
	}
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": e.code, "error_description": e.description})
}
