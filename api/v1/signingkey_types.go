package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SigningAlgorithm is a JWS algorithm the operator can generate keys for.
// +kubebuilder:validation:Enum=ES256;ES384;RS256;PS256;EdDSA
type SigningAlgorithm string

// Supported signing algorithms.
const (
	ES256 SigningAlgorithm = "ES256"
	ES384 SigningAlgorithm = "ES384"
	RS256 SigningAlgorithm = "RS256"
	PS256 SigningAlgorithm = "PS256"
	EdDSA SigningAlgorithm = "EdDSA"
)

// SigningKeySpec declares a rotated set of asymmetric signing keys for one
// issuer.
//
// +kubebuilder:validation:XValidation:rule="!has(self.rsaKeySize) || self.algorithm in ['RS256', 'PS256']",message="spec.rsaKeySize is only valid with spec.algorithm RS256 or PS256"
type SigningKeySpec struct {
	// algorithm is the JWS algorithm of every key of this SigningKey.
	// Defaults to ES256. Verifiers take the algorithm from the published
	// key, never from a token header.
	// +optional
	// +kubebuilder:default=ES256
	Algorithm SigningAlgorithm `json:"algorithm,omitempty"`

	// rsaKeySize is the modulus size in bits for RS256 and PS256.
	// Defaults to 2048 for those algorithms; one of 2048, 3072, 4096.
	// +optional
	// +kubebuilder:validation:Enum=2048;3072;4096
	RSAKeySize *int32 `json:"rsaKeySize,omitempty"`

	// issuer is the `iss` of tokens signed with these keys and the base of
	// the OIDC discovery document: an https URL without query or fragment.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",message="spec.issuer must be an https URL"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="spec.issuer must not have a query or fragment"
	Issuer string `json:"issuer"`

	// rotation schedules key rotation. Every rotation publishes the next key
	// propagation before it starts signing, and keeps the retired key
	// published for overlap after it stops.
	// +optional
	// +kubebuilder:default={every: "720h", overlap: "1h", propagation: "5m"}
	Rotation *SigningKeyRotation `json:"rotation,omitempty"`

	// jwksConfigMapName is deprecated and ignored: the public JWKS is
	// published in status.jwks. The operator deletes the JWKS ConfigMaps
	// that earlier versions wrote.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	JWKSConfigMapName string `json:"jwksConfigMapName,omitempty"`

	// revokedKeyIDs are key IDs (kid) withdrawn at once: removed from the
	// JWKS on the next reconcile whatever their phase, for example after a
	// private key leaked. Revoking the active key makes the operator
	// generate and activate a new one immediately.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	RevokedKeyIDs []string `json:"revokedKeyIDs,omitempty"`
}

// SigningKeyRotation is the rotation schedule of a SigningKey.
//
// +kubebuilder:validation:XValidation:rule="duration(self.overlap) < duration(self.every)",message="spec.rotation.overlap must be shorter than spec.rotation.every"
// +kubebuilder:validation:XValidation:rule="duration(self.propagation) < duration(self.every)",message="spec.rotation.propagation must be shorter than spec.rotation.every"
type SigningKeyRotation struct {
	// every is how long a key signs before the next one takes over, as a Go
	// duration. Defaults to 720h (30 days); minimum 1h.
	// +optional
	// +kubebuilder:default="720h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="spec.rotation.every must be at least 1h"
	Every *metav1.Duration `json:"every,omitempty"`

	// overlap is how long a retired key stays published after it stops
	// signing. It must be at least the longest lifetime of a token signed
	// with it (the token endpoint caps lifetimes at it). Defaults to 1h;
	// minimum 1m; shorter than every.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="spec.rotation.overlap must be at least 1m"
	Overlap *metav1.Duration `json:"overlap,omitempty"`

	// propagation is how long the next key is published before it starts
	// signing, so that every verifier has fetched it first. Defaults to 5m;
	// it should exceed the JWKS cache time of every verifier.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="spec.rotation.propagation must not be negative"
	Propagation *metav1.Duration `json:"propagation,omitempty"`
}

// KeyPhase is where a key is in its life.
// +kubebuilder:validation:Enum=Next;Active;Retired;Revoked
type KeyPhase string

// Key phases. A key moves Next → Active → Retired and is then dropped;
// Revoked keys are dropped from the JWKS at once.
const (
	KeyPhaseNext    KeyPhase = "Next"
	KeyPhaseActive  KeyPhase = "Active"
	KeyPhaseRetired KeyPhase = "Retired"
	KeyPhaseRevoked KeyPhase = "Revoked"
)

// SigningKeyStatusKey describes one key of a SigningKey.
type SigningKeyStatusKey struct {
	// kid is the key ID: the RFC 7638 thumbprint of the public key.
	// +required
	KeyID string `json:"kid"`

	// phase is Next, Active, Retired or Revoked.
	// +required
	Phase KeyPhase `json:"phase"`

	// createdAt is when the key was generated and published.
	// +optional
	CreatedAt *metav1.Time `json:"createdAt,omitempty"`

	// activatesAt is when the key starts (or started) signing.
	// +optional
	ActivatesAt *metav1.Time `json:"activatesAt,omitempty"`

	// retiresAt is when the key stops (or stopped) signing.
	// +optional
	RetiresAt *metav1.Time `json:"retiresAt,omitempty"`

	// removeAt is when the key leaves the JWKS.
	// +optional
	RemoveAt *metav1.Time `json:"removeAt,omitempty"`
}

// SigningKeyStatus is written by the SigningKey controller.
type SigningKeyStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// activeKeyID is the kid of the key that signs now.
	// +optional
	ActiveKeyID string `json:"activeKeyID,omitempty"`

	// nextRotationTime is when the next key becomes active.
	// +optional
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`

	// lastRotationTime is when the active key became active.
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`

	// keys lists every key the operator still holds, newest first.
	// +optional
	// +listType=map
	// +listMapKey=kid
	Keys []SigningKeyStatusKey `json:"keys,omitempty"`

	// secretName is the Secret holding the private keys. Only the operator
	// reads it.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// jwks is the public JWKS (RFC 7517) of the keys published now: Next,
	// Active and Retired keys, never a private part. Written by the
	// SigningKey controller alone (the status subresource); the sidecars,
	// the token endpoint and discovery trust no other copy. Empty while
	// the SigningKey is not served (for example Ready=False with reason
	// IssuerConflict).
	// +optional
	// +kubebuilder:validation:MaxLength=262144
	JWKS string `json:"jwks,omitempty"`

	// issuer is the spec.issuer this status's JWKS was published for; it
	// differs from spec.issuer only until the controller has looked at a
	// changed spec.
	// +optional
	Issuer string `json:"issuer,omitempty"`
}

// SigningKey is a rotated set of asymmetric keys that sign JWTs for one
// issuer. The private keys stay in an operator-written Secret; the public
// keys are published in status.jwks and over OIDC discovery.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sk,categories=gatehouse
// +kubebuilder:printcolumn:name="Algorithm",type=string,JSONPath=`.spec.algorithm`
// +kubebuilder:printcolumn:name="Active Kid",type=string,JSONPath=`.status.activeKeyID`
// +kubebuilder:printcolumn:name="Next Rotation",type=string,JSONPath=`.status.nextRotationTime`,description="When the next key becomes active (RFC 3339, UTC)."
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SigningKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the keys.
	// +required
	Spec SigningKeySpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status SigningKeyStatus `json:"status,omitempty"`
}

// SigningKeyList is a list of SigningKeys.
//
// +kubebuilder:object:root=true
type SigningKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SigningKey `json:"items"`
}
