package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// APIKeySpec declares a long-lived API key: who it identifies, what it may do,
// and how its plaintext reaches its owner.
//
// Exactly one of secretName (the operator generates the key) and hash (the key
// was generated off-cluster with `gatehouse keys mint`) is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.secretName) != has(self.hash)",message="exactly one of spec.secretName and spec.hash must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.rotation) || has(self.secretName)",message="spec.rotation requires spec.secretName: the operator can only rotate keys it generates"
type APIKeySpec struct {
	// subject is the identity the key authenticates, passed upstream in the
	// x-gatehouse-subject header and as the `sub` claim of exchanged tokens.
	// For example "service:billing" or "team-a/ci".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Subject string `json:"subject"`

	// scopes are the permissions granted to the key, matched against the
	// scopes an AuthPolicy rule requires. Each scope is a non-empty string
	// without whitespace, such as "orders:read".
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^[!#-\[\]-~]+$`
	Scopes []string `json:"scopes,omitempty"`

	// expiresAt is when the key stops being accepted. Unset means the key does
	// not expire (rotation may still replace it).
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// disabled revokes the key at once while keeping the resource and its
	// record; validators deny it on the next request. Set it back to false to
	// re-enable the same key.
	// +optional
	// +kubebuilder:default=false
	Disabled bool `json:"disabled,omitempty"`

	// secretName is the Secret, in the APIKey's namespace, that the operator
	// creates to deliver the generated plaintext key to its owner (data keys
	// "api-key" and "key-id"). The operator owns that Secret: it refuses a
	// name already used by a Secret it did not create.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName,omitempty"`

	// hash is the hash of a key generated off-cluster (`gatehouse keys
	// mint`). The plaintext never enters the cluster; the owner already
	// holds it. Keys given by hash cannot be rotated by the operator.
	// +optional
	Hash *APIKeyHash `json:"hash,omitempty"`

	// rotation replaces the generated key on a schedule, keeping the previous
	// key valid for a grace period so that clients can pick up the new one
	// without an outage. Requires secretName.
	// +optional
	Rotation *APIKeyRotation `json:"rotation,omitempty"`

	// rateLimit bounds the requests each sidecar accepts with this key. The
	// limit is enforced per sidecar (per pod), not across the cluster.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`

	// tokenExchange lets the key be exchanged for short-lived JWTs at the
	// operator's token endpoint (POST /oauth2/token). Unset: the endpoint
	// refuses this key.
	// +optional
	TokenExchange *TokenExchange `json:"tokenExchange,omitempty"`
}

// APIKeyHash identifies a key generated off-cluster.
type APIKeyHash struct {
	// keyID is the public key ID embedded in the key (the part after
	// "gth_"): 16 lowercase base32 characters.
	// +required
	// +kubebuilder:validation:Pattern=`^[a-z2-7]{16}$`
	KeyID string `json:"keyID"`

	// sha256 is the lowercase hex SHA-256 of the whole key string.
	// +required
	// +kubebuilder:validation:Pattern=`^[a-f0-9]{64}$`
	SHA256 string `json:"sha256"`
}

// APIKeyRotation schedules the replacement of a generated key.
//
// +kubebuilder:validation:XValidation:rule="duration(self.gracePeriod) < duration(self.every)",message="spec.rotation.gracePeriod must be shorter than spec.rotation.every"
type APIKeyRotation struct {
	// every is the time between rotations, as a Go duration ("720h").
	// Minimum 1h.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="spec.rotation.every must be at least 1h"
	Every metav1.Duration `json:"every"`

	// gracePeriod is how long the previous key stays valid after a rotation.
	// Defaults to 24h; must be shorter than every.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="spec.rotation.gracePeriod must not be negative"
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	// requestsPerSecond is the sustained rate. Minimum 1.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	RequestsPerSecond int32 `json:"requestsPerSecond"`

	// burst is the bucket size: how many requests may arrive at once.
	// Defaults to requestsPerSecond.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	Burst *int32 `json:"burst,omitempty"`
}

// TokenExchange configures the JWTs an API key can be exchanged for.
type TokenExchange struct {
	// signingKeyName is the SigningKey, in the APIKey's namespace, whose
	// active key signs the tokens.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SigningKeyName string `json:"signingKeyName"`

	// audiences are the `aud` values a client may request. The first is used
	// when the client asks for none. Empty: tokens carry no audience.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	Audiences []string `json:"audiences,omitempty"`

	// maxLifetime caps the lifetime of issued tokens. Defaults to 15m;
	// between 1m and 24h. The token endpoint also caps it at the
	// SigningKey's rotation overlap.
	// +optional
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="spec.tokenExchange.maxLifetime must be between 1m and 24h"
	MaxLifetime *metav1.Duration `json:"maxLifetime,omitempty"`
}

// APIKeyState is the state of an API key as the operator recorded it for
// validators.
// +kubebuilder:validation:Enum=Active;Revoked;Expired
type APIKeyState string

// API key states. Validators accept only APIKeyActive.
const (
	APIKeyActive  APIKeyState = "Active"
	APIKeyRevoked APIKeyState = "Revoked"
	APIKeyExpired APIKeyState = "Expired"
)

// APIKeyStatusKey is one hashed key the operator recorded for validators.
type APIKeyStatusKey struct {
	// keyID is the public key ID (the part after "gth_").
	// +required
	// +kubebuilder:validation:Pattern=`^[a-z2-7]{16}$`
	KeyID string `json:"keyID"`

	// sha256 is the lowercase hex SHA-256 of the whole key string.
	// +required
	// +kubebuilder:validation:Pattern=`^[a-f0-9]{64}$`
	SHA256 string `json:"sha256"`

	// issuedAt is when the key was generated, or first recorded for a
	// caller-supplied hash. Informational: validators ignore it.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// notAfter ends the key's validity: set on previous keys, to the end of
	// their rotation grace period. Unset on the current key.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
}

// APIKeyStatus is written by the APIKey controller, through the status
// subresource that only the operator's ServiceAccount may write. It is the
// source of truth for the key's hashes: sidecars and the token endpoint
// accept a key only if status.keys lists it with a matching hash, status.state
// is Active, spec.disabled is false and spec.expiresAt has not passed.
type APIKeyStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Expired, Revoked, Delivered.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// state is the key's state for validators: Active, Revoked (spec.disabled,
	// or the APIKey is being deleted) or Expired (spec.expiresAt passed).
	// Validators also read spec.disabled and spec.expiresAt themselves, so
	// that a revocation does not wait for the operator.
	// +optional
	State APIKeyState `json:"state,omitempty"`

	// keys are the hashes validators accept: keys[0] is the current key,
	// later entries previous keys still inside their rotation grace period
	// (notAfter). At most five.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=5
	Keys []APIKeyStatusKey `json:"keys,omitempty"`

	// deliveredKeyID is the key the operator last wrote to the delivery
	// Secret named deliverySecretName. A current key that differs from it
	// was recorded but never delivered (the operator stopped between the
	// two writes): the next reconcile replaces it.
	// +optional
	DeliveredKeyID string `json:"deliveredKeyID,omitempty"`

	// deliverySecretName is the Secret deliveredKeyID was written to.
	// +optional
	DeliverySecretName string `json:"deliverySecretName,omitempty"`

	// keyID is the public ID of the current key. It is not secret: it is
	// the prefix of the key and how logs and metrics name it.
	// +optional
	KeyID string `json:"keyID,omitempty"`

	// recordConfigMapName is the hash-record ConfigMap a previous version of
	// the operator wrote. The operator takes the hashes over from it once,
	// deletes it and clears this field.
	// +optional
	RecordConfigMapName string `json:"recordConfigMapName,omitempty"`

	// issuedAt is when the current key was generated or first recorded.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// lastRotationTime is when the key was last rotated.
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`

	// nextRotationTime is when the key will next be rotated.
	// +optional
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`

	// previousKeyID is the key replaced by the last rotation, still valid
	// until previousKeyValidUntil.
	// +optional
	PreviousKeyID string `json:"previousKeyID,omitempty"`

	// previousKeyValidUntil is the end of the previous key's grace period.
	// +optional
	PreviousKeyValidUntil *metav1.Time `json:"previousKeyValidUntil,omitempty"`
}

// APIKey is a long-lived credential for a service. The operator stores only
// its SHA-256 hash, in the APIKey's status, which sidecars and the token
// endpoint read.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ak,categories=gatehouse
// +kubebuilder:printcolumn:name="Key ID",type=string,JSONPath=`.status.keyID`
// +kubebuilder:printcolumn:name="Subject",type=string,JSONPath=`.spec.subject`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.spec.expiresAt`,description="When the key expires (RFC 3339, UTC)."
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type APIKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the key.
	// +required
	Spec APIKeySpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status APIKeyStatus `json:"status,omitempty"`
}

// APIKeyList is a list of APIKeys.
//
// +kubebuilder:object:root=true
type APIKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []APIKey `json:"items"`
}
