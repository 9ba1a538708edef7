package snapshot

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"gatehouse.dev/gatehouse/sidecar/rsapkcs1"
)

// MaxJWKSBytes bounds a JWKS document, local or fetched.
const MaxJWKSBytes = 1 << 20

// minRSABits is the smallest RSA modulus accepted for verification, under
// any RSA algorithm: the one rsapkcs1 requires for RS256/384/512.
const minRSABits = rsapkcs1.MinBits

// VerificationKey is a public key together with the one algorithm that
// tokens signed by it may use. The algorithm comes from the key (its JWK
// "alg", or its type and curve), never from a token header.
type VerificationKey struct {
	KeyID     string
	Algorithm jwa.SignatureAlgorithm
	// Public is an *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey.
	Public any
	// verify checks a signature under Algorithm, prepared with the key.
	verify func(input, sig []byte) error
}

// Verify checks sig over the signing input under the key's own algorithm.
func (k *VerificationKey) Verify(input, sig []byte) error {
	return k.verify(input, sig)
}

// rsaPKCS1Hashes are the algorithms whose RSA keys are prepared once
// (rsapkcs1) instead of on every verification (crypto/rsa).
var rsaPKCS1Hashes = map[jwa.SignatureAlgorithm]crypto.Hash{
	jwa.RS256: crypto.SHA256,
	jwa.RS384: crypto.SHA384,
	jwa.RS512: crypto.SHA512,
}

// verifierFor prepares the verification of signatures under alg with pub:
// RSASSA-PKCS1-v1_5 with the modulus prepared once, every other algorithm
// with jwx's verifier.
func verifierFor(alg jwa.SignatureAlgorithm, pub any) (func(input, sig []byte) error, string) {
	if h, ok := rsaPKCS1Hashes[alg]; ok {
		rsaPub, _ := pub.(*rsa.PublicKey)
		k, err := rsapkcs1.New(rsaPub, h)
		if err != nil {
			return nil, "unusable rsa key: " + err.Error()
		}
		return k.Verify, ""
	}
	v, err := jws.NewVerifier(alg)
	if err != nil {
		return nil, "no verifier for " + alg.String()
	}
	return func(input, sig []byte) error { return v.Verify(input, sig, pub) }, ""
}

// KeySet finds verification keys by kid. Implementations must be safe for
// concurrent use and must not block: remote key sets answer from memory and
// refresh in the background.
type KeySet interface {
	Key(kid string) (*VerificationKey, bool)
}

// StaticKeySet is an immutable KeySet parsed from a JWKS document.
type StaticKeySet struct {
	keys map[string]*VerificationKey
}

// Key implements KeySet.
func (s *StaticKeySet) Key(kid string) (*VerificationKey, bool) {
	if s == nil {
		return nil, false
	}
	k, ok := s.keys[kid]
	return k, ok
}

// Len is the number of usable keys.
func (s *StaticKeySet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

// EmptyKeySet holds no key: every token of its issuer is denied.
var EmptyKeySet = &StaticKeySet{}

// ParseJWKS parses a public JWKS. Keys that cannot be used for signature
// verification are skipped and described in problems (symmetric keys,
// private key material, "use" other than "sig", a missing kid, an "alg"
// that does not fit the key, weak RSA); a kid that appears twice is dropped
// altogether because it is ambiguous. The error is set only when the
// document itself is unusable.
func ParseJWKS(data []byte) (set *StaticKeySet, problems []string, err error) {
	if len(data) > MaxJWKSBytes {
		return nil, nil, errors.New("jwks document is too large")
	}
	parsed, err := jwk.Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing jwks: %w", err)
	}
	set = &StaticKeySet{keys: make(map[string]*VerificationKey, parsed.Len())}
	dup := map[string]bool{}
	for i := 0; i < parsed.Len(); i++ {
		k, _ := parsed.Key(i)
		vk, problem := verificationKey(k)
		if problem != "" {
			problems = append(problems, fmt.Sprintf("jwks key %d skipped: %s", i, problem))
			continue
		}
		if _, seen := set.keys[vk.KeyID]; seen || dup[vk.KeyID] {
			dup[vk.KeyID] = true
			delete(set.keys, vk.KeyID)
			problems = append(problems, fmt.Sprintf("jwks key %d skipped: kid %q appears more than once", i, vk.KeyID))
			continue
		}
		set.keys[vk.KeyID] = vk
	}
	return set, problems, nil
}

func verificationKey(k jwk.Key) (*VerificationKey, string) {
	kid := k.KeyID()
	if kid == "" {
		return nil, "no kid"
	}
	if use := k.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		return nil, "use is not sig"
	}
	var raw any
	if err := k.Raw(&raw); err != nil {
		return nil, "unreadable key"
	}
	var implied jwa.SignatureAlgorithm
	allowed := map[jwa.SignatureAlgorithm]bool{}
	switch pub := raw.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve.Params().BitSize {
		case 256:
			implied = jwa.ES256
		case 384:
			implied = jwa.ES384
		case 521:
			implied = jwa.ES512
		default:
			return nil, "unsupported curve"
		}
		allowed[implied] = true
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return nil, "rsa key shorter than 2048 bits"
		}
		implied = jwa.RS256
		for _, a := range []jwa.SignatureAlgorithm{jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512} {
			allowed[a] = true
		}
	case ed25519.PublicKey:
		implied = jwa.EdDSA
		allowed[implied] = true
	case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
		return nil, "private key material in a public jwks"
	default:
		// Symmetric ("oct") keys never verify anything here: accepting them
		// would re-open HMAC key confusion.
		return nil, "not an asymmetric public key"
	}
	alg := implied
	if a := k.Algorithm(); a != nil && a.String() != "" {
		alg = jwa.SignatureAlgorithm(a.String())
		if !allowed[alg] {
			return nil, "alg does not fit the key type"
		}
	}
	verify, problem := verifierFor(alg, raw)
	if problem != "" {
		return nil, problem
	}
	return &VerificationKey{KeyID: kid, Algorithm: alg, Public: raw, verify: verify}, ""
}
