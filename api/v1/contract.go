package v1

// Labels, annotations and data keys shared by the operator (which writes them)
// and the sidecar and token endpoint (which read them). Changing any of these
// is a breaking change of the on-cluster format.
//
// Where things live, and why:
//
//   - API key hashes live in the APIKey's status (APIKeyStatus.Keys), which
//     only the operator may write (status subresource). They hold nothing
//     secret (a SHA-256 of a 256-bit random key cannot be inverted), so
//     sidecars read APIKeys with a namespace Role. Validators never trust a
//     ConfigMap for API keys: anyone with ConfigMap write could forge one.
//   - A SigningKey's public JWKS lives in its status (SigningKeyStatus.JWKS),
//     also operator-only. The only JWKS ConfigMaps validators read are
//     static ones that an AuthPolicy names explicitly (jwks.configMapKeyRef):
//     the AuthPolicy's author vouches for them.
//   - Plaintext API keys (delivery Secrets) and private signing keys are
//     Secrets. Sidecars get no access to Secrets at all: Kubernetes RBAC
//     cannot restrict access by label, so any Secret read permission in a
//     namespace would expose every delivery Secret and private key in it.
const (
	// LabelRecord marks a ConfigMap that holds validation data. Its value
	// says what: RecordJWKS (a static JWKS an AuthPolicy names) or
	// RecordAPIKey (a previous version's record, migrated and deleted).
	// The label vouches for nothing: sidecars read a JWKS ConfigMap only
	// when an AuthPolicy names it.
	LabelRecord = "auth.gatehouse.dev/record"
	// RecordAPIKey is the LabelRecord value of the API key hash-record
	// ConfigMaps that previous versions wrote. Nothing reads them any more
	// except the one-time migration into APIKey status, which then deletes
	// them.
	RecordAPIKey = "apikey"
	// RecordJWKS is the LabelRecord value of a static JWKS ConfigMap that
	// an AuthPolicy names (jwks.configMapKeyRef). Earlier versions also
	// wrote SigningKey JWKS ConfigMaps with it; those are never trusted now
	// (the JWKS is in SigningKey status) and the operator deletes them.
	RecordJWKS = "jwks"

	// LabelOwnerName names the APIKey or SigningKey an object belongs to.
	LabelOwnerName = "auth.gatehouse.dev/owner"

	// LabelManagedBy is set to ManagedByValue on every object the operator
	// creates, so that users and tools can tell them apart from their own.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "gatehouse"

	// AnnotationRotateRequestedAt asks the operator to rotate an APIKey or a
	// SigningKey now. Its value is an RFC 3339 time; a rotation happens once
	// for every value later than the last rotation (like `cmctl renew`).
	AnnotationRotateRequestedAt = "auth.gatehouse.dev/rotate-requested-at"

	// LabelInject opts a pod in to sidecar injection: the webhook
	// configuration sends only pods labelled LabelInject=true to the
	// injector. A label rather than an annotation because only labels can
	// be selected in the API server.
	LabelInject = "auth.gatehouse.dev/inject"
	// AnnotationInject set to "false" opts a pod out again, e.g. one pod of
	// a Deployment whose template carries LabelInject.
	AnnotationInject = "auth.gatehouse.dev/inject"
	// AnnotationXDSCABundle holds, on a pod whose sidecar takes its state
	// over xDS, the PEM bundle of the CAs that sign the operator's xDS
	// certificate, written by the injector at admission and projected into
	// the sidecar by the downward API. It is the pod's own: whoever may
	// edit the pod only changes what its own sidecar trusts.
	AnnotationXDSCABundle = "auth.gatehouse.dev/xds-ca-bundle"
	// AnnotationSidecarSource set to "kubernetes" on a pod gives it a sidecar
	// that lists and watches the API server even where injected sidecars
	// default to xDS; "xds" insists on xDS. Read once, at injection.
	AnnotationSidecarSource = "auth.gatehouse.dev/sidecar-source"

	// SigningKeySecretType is the type of the Secret holding a SigningKey's
	// private keys (internal/keyring's key-set document).
	SigningKeySecretType = "auth.gatehouse.dev/signing-keys"

	// RecordDataKey is the data key of a previous version's API key hash
	// record (a JSON document, see internal/apikeyformat.Record) in its
	// ConfigMap; read once, by the migration.
	RecordDataKey = "record.json"
	// JWKSDataKey is the data key of the public JWKS in its ConfigMap.
	JWKSDataKey = "jwks.json"
	// JWKSIssuerKey is the data key of the issuer the JWKS belongs to.
	JWKSIssuerKey = "issuer"

	// DeliveryKeyDataKey is the data key of the plaintext API key in the
	// delivery Secret named by APIKeySpec.SecretName.
	DeliveryKeyDataKey = "api-key"
	// DeliveryKeyIDDataKey is the data key of the public key ID in the
	// delivery Secret.
	DeliveryKeyIDDataKey = "key-id"

	// ClaimAPIKeyID is the JWT claim naming the API key ID a token was
	// exchanged for at the token endpoint. Validators deny such a token as
	// soon as that key is no longer valid.
	ClaimAPIKeyID = "gatehouse_key_id"
)

// Condition types and reasons. Reasons are stable, CamelCase and safe to
// match on in automation; messages are for people.
const (
	// ConditionReady is True when the resource's key material is written and
	// usable by validators.
	ConditionReady = "Ready"
	// ConditionExpired is True when an APIKey is past spec.expiresAt.
	ConditionExpired = "Expired"
	// ConditionRevoked is True when an APIKey is disabled.
	ConditionRevoked = "Revoked"
	// ConditionDelivered is True when an APIKey's delivery Secret holds its
	// current key. False never invalidates the key: the status, not the
	// Secret, is what validators read.
	ConditionDelivered = "Delivered"

	ReasonIssued         = "Issued"
	ReasonRotated        = "Rotated"
	ReasonExpired        = "Expired"
	ReasonDisabled       = "Disabled"
	ReasonNotExpired     = "NotExpired"
	ReasonEnabled        = "Enabled"
	ReasonSecretConflict = "SecretConflict"
	ReasonInvalidSpec    = "InvalidSpec"
	ReasonWriteFailed    = "WriteFailed"
	ReasonKeysPublished  = "KeysPublished"
	ReasonKeyRevoked     = "KeyRevoked"
	ReasonKeyLost        = "KeyLost"
	ReasonAccepted       = "Accepted"
	ReasonInvalidIssuer  = "InvalidIssuer"
	ReasonIssuerNotFound = "IssuerNotFound"

	// ReasonIssuerConflict: an older SigningKey (by creationTimestamp, then
	// namespace/name) claims the same spec.issuer. This one is neither
	// published, served by discovery nor signed with.
	ReasonIssuerConflict = "IssuerConflict"
	// ReasonIssuerOutsidePrefix: spec.issuer is not under the operator's
	// --issuer-prefix for the SigningKey's namespace.
	ReasonIssuerOutsidePrefix = "IssuerOutsidePrefix"
	// ReasonKeyTampered: the private key-set Secret held keys whose public
	// key the operator never published (someone wrote the Secret). They
	// are discarded, never published or signed with.
	ReasonKeyTampered = "KeyTampered"
	// ReasonDelivered: the delivery Secret holds the current key.
	ReasonDelivered = "Delivered"
	// ReasonDeliverySecretChanged: the delivery Secret is missing or no
	// longer holds the current key (deleted or edited by someone else). The
	// key stays valid; request a rotation to deliver a new one.
	ReasonDeliverySecretChanged = "DeliverySecretChanged"
	// ReasonNotDelivered: the key is given by spec.hash, nothing is delivered.
	ReasonNotDelivered = "NotDelivered"
	// ReasonMigrated: the hashes of a previous version's record ConfigMap
	// were taken over into status and the ConfigMap deleted.
	ReasonMigrated = "Migrated"
)
