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
//   - Public JWKS documents are ConfigMaps labelled LabelRecord.
//   - Plaintext API keys (delivery Secrets) and private signing keys are
//     Secrets. Sidecars get no access to Secrets at all: Kubernetes RBAC
//     cannot restrict access by label, so any Secret read permission in a
//     namespace would expose every delivery Secret and private key in it.
const (
	// LabelRecord marks an object written by the operator for validators.
	// Its value says what the object holds: RecordAPIKey or RecordJWKS.
	// Sidecars select the objects of their namespace with this label.
	LabelRecord = "auth.gatehouse.dev/record"
	// RecordAPIKey is the LabelRecord value of the API key hash-record
	// ConfigMaps that previous versions wrote. Nothing reads them any more
	// except the one-time migration into APIKey status, which then deletes
	// them.
	RecordAPIKey = "apikey"
	// RecordJWKS is the LabelRecord value of a public JWKS ConfigMap.
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
