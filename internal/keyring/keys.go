// Package keyring is the pure logic behind SigningKeys: key generation
// per algorithm, key IDs (RFC 7638 thumbprints), the private key-set format
// kept in the operator-only Secret, the three-phase rotation schedule as a
// function of (state, policy, now), and assembly of the public JWKS.
//
// Nothing here talks to the API server, so every decision is unit tested
// with a fixed clock. The controller (controllers/signingkeys) reads the
// Secret and the JWKS ConfigMap, calls Decide, and writes the results; the
// token endpoint calls LoadKeySet and ActiveSigningKey to sign.
package keyring

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// DefaultRSABits is the RSA modulus size when spec.rsaKeySize is unset.
const DefaultRSABits = 2048

// Generator makes a new private key for alg. rsaBits is only used for RS256
// and PS256. It is a seam: tests inject pre-generated keys because RSA key
// generation is slow.
type Generator func(alg jwa.SignatureAlgorithm, rsaBits int) (jwk.Key, error)

// NewGenerator returns a Generator drawing from random (crypto/rand.Reader
// in production).
func NewGenerator(random io.Reader) Generator {
	return func(alg jwa.SignatureAlgorithm, rsaBits int) (jwk.Key, error) {
		return Generate(alg, rsaBits, random)
	}
}

// Generate returns a new private JWK for alg with kid (its RFC 7638
// thumbprint), alg and use=sig set.
func Generate(alg jwa.SignatureAlgorithm, rsaBits int, random io.Reader) (jwk.Key, error) {
	var raw any
	var err error
	switch alg {
	case jwa.ES256:
		raw, err = ecdsa.GenerateKey(elliptic.P256(), random)
	case jwa.ES384:
		raw, err = ecdsa.GenerateKey(elliptic.P384(), random)
	case jwa.RS256, jwa.PS256:
		if !ValidRSABits(rsaBits) {
			return nil, fmt.Errorf("unsupported rsa key size %d", rsaBits)
		}
		raw, err = rsa.GenerateKey(random, rsaBits)
	case jwa.EdDSA:
		_, raw, err = ed25519.GenerateKey(random)
	default:
		return nil, fmt.Errorf("unsupported signing algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", alg, err)
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("converting %s key to jwk: %w", alg, err)
	}
	if err := Decorate(key, alg); err != nil {
		return nil, err
	}
	return key, nil
}

// ValidRSABits reports whether bits is a modulus size keys are made with.
func ValidRSABits(bits int) bool {
	return bits == 2048 || bits == 3072 || bits == 4096
}

// Decorate sets kid, alg and use on key.
func Decorate(key jwk.Key, alg jwa.SignatureAlgorithm) error {
	kid, err := Thumbprint(key)
	if err != nil {
		return err
	}
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: alg, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := key.Set(k, v); err != nil {
			return fmt.Errorf("setting %s: %w", k, err)
		}
	}
	return nil
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of key's public part,
// base64url without padding: the kid of every Gatehouse key. A private key
// and its public key have the same thumbprint.
func Thumbprint(key jwk.Key) (kid string, err error) {
	// jwx panics on some malformed keys (an EC coordinate wider than its
	// curve, found by FuzzParseKeySet); documents read here may be hand
	// edited, so a bad key is an error, never a crash.
	defer func() {
		if recover() != nil {
			kid, err = "", errors.New("computing jwk thumbprint: malformed key")
		}
	}()
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("computing jwk thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// PublicKey returns the public JWK of key carrying only the public members
// plus kid, alg and use=sig: nothing else of the stored key is copied, so
// no private member can leak into a JWKS.
func PublicKey(key jwk.Key) (jwk.Key, error) {
	var raw any
	if err := key.Raw(&raw); err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	pubRaw, err := jwk.PublicRawKeyOf(raw)
	if err != nil {
		return nil, fmt.Errorf("deriving public key: %w", err)
	}
	pub, err := jwk.FromRaw(pubRaw)
	if err != nil {
		return nil, fmt.Errorf("converting public key to jwk: %w", err)
	}
	alg, ok := key.Algorithm().(jwa.SignatureAlgorithm)
	if !ok {
		return nil, errors.New("key has no signature algorithm")
	}
	if err := Decorate(pub, alg); err != nil {
		return nil, err
	}
	if IsPrivate(pub) {
		return nil, errors.New("public key derivation kept private material")
	}
	return pub, nil
}

// IsPrivate reports whether key holds private material (or cannot be
// told apart from a key that does: fail closed).
func IsPrivate(key jwk.Key) bool {
	p, err := jwk.IsPrivateKey(key)
	return err != nil || p
}

// CheckAlgorithm reports whether key's type fits alg, so that the algorithm
// a verifier takes from the key can never be one the key was not made for.
func CheckAlgorithm(key jwk.Key, alg jwa.SignatureAlgorithm) error {
	var raw any
	if err := key.Raw(&raw); err != nil {
		return fmt.Errorf("reading key: %w", err)
	}
	pub, err := jwk.PublicRawKeyOf(raw)
	if err != nil {
		return fmt.Errorf("deriving public key: %w", err)
	}
	ok := false
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		ok = (alg == jwa.ES256 && p.Curve == elliptic.P256()) || (alg == jwa.ES384 && p.Curve == elliptic.P384())
		if ok {
			// The point must be on the curve: ECDH refuses one that is not.
			_, err := p.ECDH()
			ok = err == nil
		}
	case *rsa.PublicKey:
		ok = (alg == jwa.RS256 || alg == jwa.PS256) && p.N.BitLen() >= 2048
	case ed25519.PublicKey:
		ok = alg == jwa.EdDSA
	}
	if !ok {
		return fmt.Errorf("key of type %T does not fit algorithm %s", pub, alg)
	}
	return nil
}

// RSABits is the modulus size of an RSA key, 0 for other keys.
func RSABits(key jwk.Key) int {
	var raw any
	if key == nil || key.Raw(&raw) != nil {
		return 0
	}
	switch k := raw.(type) {
	case *rsa.PrivateKey:
		return k.N.BitLen()
	case *rsa.PublicKey:
		return k.N.BitLen()
	}
	return 0
}

// Algorithm maps the API enum to the jwx algorithm.
func Algorithm(a gatehousev1.SigningAlgorithm) (jwa.SignatureAlgorithm, error) {
	switch a {
	case "", gatehousev1.ES256:
		return jwa.ES256, nil
	case gatehousev1.ES384:
		return jwa.ES384, nil
	case gatehousev1.RS256:
		return jwa.RS256, nil
	case gatehousev1.PS256:
		return jwa.PS256, nil
	case gatehousev1.EdDSA:
		return jwa.EdDSA, nil
	}
	return "", fmt.Errorf("unsupported signing algorithm %q", a)
}
