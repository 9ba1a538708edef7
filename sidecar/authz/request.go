package authz

import (
	"strings"
)

// Request is what the engine decides on, independent of the protocol
// (gRPC CheckRequest or HTTP) it arrived by.
type Request struct {
	Method string
	// Host is the :authority, possibly with a port.
	Host string
	// Path is the request target as sent: with the query string.
	Path    string
	Headers Headers
	// IdentityRoom, when set, is where the engine writes an API key's
	// identity instead of allocating one: the decision's Identity then
	// points to it. The caller must not reuse it while the decision is in
	// use, and must clear it before reusing it (its strings point into
	// the request).
	IdentityRoom *Identity
}

// Headers reads request headers.
type Headers interface {
	// Values returns every value of the header with this lower-case name:
	// one element per header field as received (a proxy that joins
	// repeated headers with commas yields one element with commas).
	Values(name string) []string
	// Count is the number of header fields.
	Count() int
}

// FirstValuer is implemented by Headers that can give the first of a
// header's values and their number without building the list of them.
type FirstValuer interface {
	// FirstValue returns Values(name)[0] (or "") and len(Values(name)).
	FirstValue(name string) (string, int)
}

// CountBounder is implemented by Headers that know an upper bound of
// Count without counting: the fields as received, a repeated name
// counting each time. The engine counts only when the bound exceeds its
// limit.
type CountBounder interface {
	// CountBound is at least Count.
	CountBound() int
}

// countAbove reports whether h.Count() > limit, without counting when
// h's bound says it cannot be.
func countAbove(h Headers, limit int) bool {
	if b, ok := h.(CountBounder); ok && b.CountBound() <= limit {
		return false
	}
	return h.Count() > limit
}

func firstValue(h Headers, name string) (string, int) {
	if f, ok := h.(FirstValuer); ok {
		return f.FirstValue(name)
	}
	vs := h.Values(name)
	if len(vs) == 0 {
		return "", 0
	}
	return vs[0], len(vs)
}

// CredentialKind is the type of a credential.
type CredentialKind string

// Credential kinds, as sent in the x-gatehouse-credential header.
const (
	CredentialAPIKey CredentialKind = "apikey"
	CredentialJWT    CredentialKind = "jwt"
)

// Credential is a credential found in a request. Value is secret: never log
// or echo it.
type Credential struct {
	Kind  CredentialKind
	Value string
	// Header is the lower-case name of the header it came from.
	Header string
}

// ExtractCredential finds the one credential of a request: a bearer token
// or "ApiKey" in Authorization, or an API key in apiKeyHeader (when
// apiKeyHeader is not empty). It returns a zero Credential when there is
// none. Two credentials, a repeated header, or a value with a comma (a
// proxy's join of repeated headers; neither keys nor JWTs contain commas)
// yield MultipleCredentials: which one to believe is ambiguous.
func ExtractCredential(h Headers, apiKeyHeader string) (Credential, Reason) {
	var found Credential
	auth, n := firstValue(h, "authorization")
	if n > 1 {
		return Credential{}, MultipleCredentials
	}
	if n == 1 {
		v := strings.TrimSpace(auth)
		if strings.IndexByte(v, ',') >= 0 {
			return Credential{}, MultipleCredentials
		}
		scheme, rest, _ := strings.Cut(v, " ")
		rest = strings.TrimLeft(rest, " ")
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			if rest == "" {
				return Credential{}, MalformedToken
			}
			found = Credential{Kind: CredentialJWT, Value: rest, Header: "authorization"}
		case strings.EqualFold(scheme, APIKeyScheme):
			if rest == "" {
				return Credential{}, MalformedAPIKey
			}
			found = Credential{Kind: CredentialAPIKey, Value: rest, Header: "authorization"}
		}
		// Other schemes (Basic, ...) are not Gatehouse credentials; they
		// are left to the upstream and count as no credential here.
	}
	if apiKeyHeader == "" || apiKeyHeader == "authorization" {
		return found, ""
	}
	key, n := firstValue(h, apiKeyHeader)
	switch {
	case n == 0:
		return found, ""
	case n > 1 || found.Kind != "" || strings.IndexByte(key, ',') >= 0:
		return Credential{}, MultipleCredentials
	}
	v := strings.TrimSpace(key)
	if v == "" {
		return Credential{}, MalformedAPIKey
	}
	return Credential{Kind: CredentialAPIKey, Value: v, Header: apiKeyHeader}, ""
}
