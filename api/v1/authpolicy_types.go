package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AuthPolicySpec says what the sidecars of the selected pods accept.
//
// A request is checked against the rules in order; the first rule whose
// match fits decides. A request no rule matches is denied. A pod that no
// AuthPolicy selects denies every request (fail closed).
type AuthPolicySpec struct {
	// selector picks the pods, in the policy's namespace, whose sidecars
	// apply this policy. An empty selector selects every pod. When several
	// policies select a pod, the oldest one applies and the others report
	// it in their Ready condition.
	// +optional
	Selector metav1.LabelSelector `json:"selector,omitempty"`

	// issuers are the JWT issuers whose bearer tokens are accepted. Empty:
	// no JWT is accepted.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Issuers []TrustedIssuer `json:"issuers,omitempty"`

	// apiKeys says where API keys are read from. API keys of the policy's
	// namespace are accepted unless apiKeys.disabled is true.
	// +optional
	// +kubebuilder:default={header: "x-api-key"}
	APIKeys APIKeySource `json:"apiKeys,omitempty"`

	// pathNormalization relaxes how request paths are read before the
	// rules are matched. By default a path that the upstream could read
	// otherwise than the rules do (empty segments "//", ";" path
	// parameters, dot segments, encoded separators, double encoding) is
	// refused with 400 ambiguous_path. Only the first two can be relaxed,
	// and only when the upstream reads them the way chosen here.
	// +optional
	PathNormalization *PathNormalization `json:"pathNormalization,omitempty"`

	// rules decide each request, first match wins.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=128
	Rules []Rule `json:"rules"`
}

// PathNormalization says how a policy reads request paths that are refused
// by default. Set a field only when the upstream (and every proxy in front
// of it) reads such paths in the same way: otherwise a rule can be bypassed.
type PathNormalization struct {
	// emptySegments is Reject (default): a path with an empty segment
	// ("//admin", "/api//x") is refused with 400 ambiguous_path; or Merge:
	// it is matched as if each run of slashes were one ("/api/x"), as
	// Envoy's merge_slashes and nginx's merge_slashes do. Choose Merge
	// for upstreams that merge slashes or treat "//" as "/".
	// +optional
	// +kubebuilder:default=Reject
	EmptySegments EmptySegmentsAction `json:"emptySegments,omitempty"`

	// pathParameters is Reject (default): a path with a ";" in a segment
	// ("/admin;x=1") is refused with 400 ambiguous_path; or Strip: each
	// segment is matched without its parameters ("/admin"), as Tomcat,
	// Jetty and Spring route such paths. Choose Strip for upstreams that
	// use matrix parameters or jsessionid in paths.
	// +optional
	// +kubebuilder:default=Reject
	PathParameters PathParametersAction `json:"pathParameters,omitempty"`
}

// EmptySegmentsAction is what a policy does with "//" in a path.
// +kubebuilder:validation:Enum=Reject;Merge
type EmptySegmentsAction string

// Empty segment actions.
const (
	EmptySegmentsReject EmptySegmentsAction = "Reject"
	EmptySegmentsMerge  EmptySegmentsAction = "Merge"
)

// PathParametersAction is what a policy does with ";" path parameters.
// +kubebuilder:validation:Enum=Reject;Strip
type PathParametersAction string

// Path parameter actions.
const (
	PathParametersReject PathParametersAction = "Reject"
	PathParametersStrip  PathParametersAction = "Strip"
)

// TrustedIssuer is one accepted JWT issuer. Exactly one of signingKeyRef,
// discovery, jwksURI and jwks says where its keys come from.
//
// +kubebuilder:validation:XValidation:rule="[has(self.signingKeyRef), has(self.discovery), has(self.jwksURI), has(self.jwks)].filter(x, x).size() == 1",message="exactly one of signingKeyRef, discovery, jwksURI and jwks must be set in spec.issuers[]"
// +kubebuilder:validation:XValidation:rule="has(self.signingKeyRef) || has(self.issuer)",message="spec.issuers[].issuer is required unless signingKeyRef is set"
type TrustedIssuer struct {
	// name identifies this entry in the policy and in deny reasons.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// issuer is the expected `iss` claim. Taken from the SigningKey when
	// signingKeyRef is set; required otherwise.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Issuer string `json:"issuer,omitempty"`

	// signingKeyRef names a SigningKey in the policy's namespace; its JWKS
	// ConfigMap supplies the keys.
	// +optional
	SigningKeyRef *LocalObjectReference `json:"signingKeyRef,omitempty"`

	// discovery fetches keys through OIDC discovery from
	// "<issuer>/.well-known/openid-configuration".
	// +optional
	Discovery bool `json:"discovery,omitempty"`

	// jwksURI fetches keys from this https URL.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https'",message="spec.issuers[].jwksURI must be an https URL"
	JWKSURI string `json:"jwksURI,omitempty"`

	// jwks is a static JWKS, inline or from a ConfigMap, for issuers the
	// sidecar cannot reach.
	// +optional
	JWKS *StaticJWKS `json:"jwks,omitempty"`

	// audiences are the accepted `aud` values; a token must carry at least
	// one. Empty: the audience is not checked.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	Audiences []string `json:"audiences,omitempty"`

	// clockSkew is the leeway for `exp`, `nbf` and `iat`. Defaults to 30s;
	// at most 5m.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('5m')",message="spec.issuers[].clockSkew must be between 0s and 5m"
	ClockSkew *metav1.Duration `json:"clockSkew,omitempty"`
}

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// StaticJWKS is a JWKS given inline or in a ConfigMap.
//
// +kubebuilder:validation:XValidation:rule="has(self.inline) != has(self.configMapKeyRef)",message="exactly one of spec.issuers[].jwks.inline and spec.issuers[].jwks.configMapKeyRef must be set"
type StaticJWKS struct {
	// inline is the JWKS document as JSON.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	Inline string `json:"inline,omitempty"`

	// configMapKeyRef selects a key of a ConfigMap in the policy's
	// namespace holding the JWKS document.
	// +optional
	ConfigMapKeyRef *corev1.ConfigMapKeySelector `json:"configMapKeyRef,omitempty"`
}

// APIKeySource says where a sidecar reads API keys.
type APIKeySource struct {
	// disabled stops the sidecar from accepting API keys.
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// header is the request header carrying the key. Defaults to
	// "x-api-key". Keys are also read from "Authorization: ApiKey <key>".
	// +optional
	// +kubebuilder:default="x-api-key"
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][-A-Za-z0-9_]*$`
	Header string `json:"header,omitempty"`
}

// RuleAction is what a matching rule does.
// +kubebuilder:validation:Enum=Authenticate;AllowAnonymous;Deny
type RuleAction string

// Rule actions.
const (
	// ActionAuthenticate requires a valid credential carrying the rule's
	// scopes and claims.
	ActionAuthenticate RuleAction = "Authenticate"
	// ActionAllowAnonymous allows the request without a credential (a
	// valid credential, if present, still yields identity headers).
	ActionAllowAnonymous RuleAction = "AllowAnonymous"
	// ActionDeny denies the request with 403.
	ActionDeny RuleAction = "Deny"
)

// CredentialType is a kind of credential.
// +kubebuilder:validation:Enum=APIKey;JWT
type CredentialType string

// Credential types.
const (
	CredentialAPIKey CredentialType = "APIKey"
	CredentialJWT    CredentialType = "JWT"
)

// Rule matches requests and decides them.
type Rule struct {
	// name identifies the rule in decision logs and metrics.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`

	// match selects the requests this rule decides.
	// +required
	Match RuleMatch `json:"match"`

	// action is Authenticate (default), AllowAnonymous or Deny.
	// +optional
	// +kubebuilder:default=Authenticate
	Action RuleAction `json:"action,omitempty"`

	// credentials are the accepted credential types. Empty: both.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	Credentials []CredentialType `json:"credentials,omitempty"`

	// scopes the credential must all carry (403 insufficient_scope if not).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^[!#-\[\]-~]+$`
	Scopes []string `json:"scopes,omitempty"`

	// claims a JWT must carry. A request authenticated with an API key
	// fails a rule that requires claims.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Claims []ClaimRequirement `json:"claims,omitempty"`
}

// RuleMatch selects requests. Every field that is set must match; at least
// one must be set.
//
// +kubebuilder:validation:XValidation:rule="has(self.hosts) || has(self.paths) || has(self.methods)",message="spec.rules[].match must set at least one of hosts, paths and methods"
type RuleMatch struct {
	// hosts match the request's :authority without port. "*.example.com"
	// matches one or more leading labels; "*" matches any host.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	Hosts []string `json:"hosts,omitempty"`

	// paths match the canonical request path (without query; see
	// docs/sidecar.md, "Matching"): percent-encoded unreserved characters
	// decoded, other escapes with upper-case hex. A trailing "*" matches
	// any suffix ("/api/*"); otherwise the match is exact. Patterns are
	// put in the same canonical form; one that cannot be (a dot segment,
	// an encoded "/") matches nothing and is reported by the sidecar.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:items:Pattern=`^(/.*|\*)$`
	Paths []string `json:"paths,omitempty"`

	// methods match the HTTP method; a request's method is upper-cased
	// before matching ("get" matches GET).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Enum=GET;HEAD;POST;PUT;PATCH;DELETE;OPTIONS;CONNECT;TRACE
	Methods []string `json:"methods,omitempty"`
}

// ClaimRequirement requires a JWT claim to hold one of some values.
type ClaimRequirement struct {
	// name of the claim, for example "groups".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// values accepted; a claim that is a list matches if any element is
	// one of them.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	Values []string `json:"values"`
}

// AuthPolicyStatus is written by the operator.
type AuthPolicyStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AuthPolicy tells the sidecars of selected pods which credentials and
// requests to accept.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ap,categories=gatehouse
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the policy.
	// +required
	Spec AuthPolicySpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status AuthPolicyStatus `json:"status,omitempty"`
}

// AuthPolicyList is a list of AuthPolicies.
//
// +kubebuilder:object:root=true
type AuthPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthPolicy `json:"items"`
}
