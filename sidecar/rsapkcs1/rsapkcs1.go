// Package rsapkcs1 verifies RSASSA-PKCS1-v1_5 signatures (RFC 8017,
// section 8.2.2) with a public key prepared once.
//
// crypto/rsa prepares the modulus for Montgomery arithmetic (R² mod n) on
// every call to VerifyPKCS1v15, about a third of a 2048-bit verification;
// BoringSSL, which Envoy uses, keeps that context with the key. A Key does
// the same: the modulus is prepared by New, with filippo.io/bigmod (the
// standard library's own modular arithmetic, published as a module), and
// each Verify runs only the exponentiation and the comparison.
//
// The comparison is the RFC's encode-and-compare: the expected encoded
// message EM' = 0x00 || 0x01 || PS || 0x00 || DigestInfo(hash) is built in
// full and compared with s^e mod n, byte for byte, as crypto/rsa does. No
// part of EM is parsed, so none of the padding or ASN.1 leniencies that
// signature forgeries feed on (short padding, garbage after the digest,
// other DigestInfo encodings) can be accepted.
package rsapkcs1

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"

	"filippo.io/bigmod"
)

// MinBits is the smallest modulus New accepts.
const MinBits = 2048

// ErrVerification is returned for every signature that does not verify,
// whatever the reason.
var ErrVerification = errors.New("rsapkcs1: verification error")

// digestInfoPrefixes are the DER encodings of DigestInfo up to the digest
// (RFC 8017, section 9.2, note 1), for the hashes of RS256, RS384 and RS512.
var digestInfoPrefixes = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// Key is an RSA public key prepared for PKCS #1 v1.5 verification under
// one hash. It is immutable and safe for concurrent use.
type Key struct {
	n    *bigmod.Modulus
	size int // of n, in bytes
	e    uint
	hash crypto.Hash
	// emPrefix is the expected encoded message up to the digest:
	// 0x00 0x01 0xff… 0x00 and the DigestInfo prefix.
	emPrefix []byte
}

// New prepares pub for signatures over hash (SHA-256, SHA-384 or
// SHA-512). It refuses what crypto/rsa would refuse to verify with, and
// moduli shorter than MinBits.
func New(pub *rsa.PublicKey, hash crypto.Hash) (*Key, error) {
	digestInfo, ok := digestInfoPrefixes[hash]
	if !ok {
		return nil, fmt.Errorf("rsapkcs1: unsupported hash %v", hash)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	n, err := bigmod.NewModulus(pub.N.Bytes())
	if err != nil {
		return nil, fmt.Errorf("rsapkcs1: %w", err)
	}
	k := n.Size()
	em := make([]byte, k-hash.Size())
	em[1] = 0x01
	pad := em[2 : len(em)-len(digestInfo)-1]
	for i := range pad {
		pad[i] = 0xff
	}
	copy(em[len(em)-len(digestInfo):], digestInfo)
	return &Key{n: n, size: k, e: uint(pub.E), hash: hash, emPrefix: em}, nil
}

// checkPublicKey refuses what crypto/rsa refuses (an even modulus, an
// exponent that is even, below 2 or above 2³¹−1) and moduli shorter than
// MinBits.
func checkPublicKey(pub *rsa.PublicKey) error {
	switch {
	case pub == nil || pub.N == nil || pub.N.Sign() <= 0:
		return errors.New("rsapkcs1: missing public modulus")
	case pub.N.BitLen() < MinBits:
		return fmt.Errorf("rsapkcs1: %d-bit modulus is shorter than %d bits", pub.N.BitLen(), MinBits)
	case pub.N.Bit(0) == 0:
		return errors.New("rsapkcs1: public modulus is even")
	case pub.E < 3 || pub.E&1 == 0:
		return errors.New("rsapkcs1: public exponent is too small or even")
	case pub.E > 1<<31-1:
		return errors.New("rsapkcs1: public exponent is too large")
	}
	return nil
}

// Verify checks sig, a signature over message (not over its digest: Verify
// hashes it), and returns ErrVerification if it does not hold.
func (k *Key) Verify(message, sig []byte) error {
	var sum [sha512.Size]byte
	digest := k.digest(message, &sum)
	// RFC 8017, 8.2.2 step 1: a signature of any other length is invalid.
	if len(sig) != k.size {
		return ErrVerification
	}
	// Step 2 (RSAVP1): s must be below n.
	s, err := bigmod.NewNat().SetBytes(sig, k.n)
	if err != nil {
		return ErrVerification
	}
	em := bigmod.NewNat().ExpShortVarTime(s, k.e, k.n).Bytes(k.n)
	// Steps 3 and 4: compare with the encoding of the expected digest.
	prefixOK := subtle.ConstantTimeCompare(em[:len(k.emPrefix)], k.emPrefix)
	digestOK := subtle.ConstantTimeCompare(em[len(k.emPrefix):], digest)
	if prefixOK&digestOK != 1 {
		return ErrVerification
	}
	return nil
}

// digest hashes message into sum without allocating.
func (k *Key) digest(message []byte, sum *[sha512.Size]byte) []byte {
	switch k.hash {
	case crypto.SHA256:
		*(*[sha256.Size]byte)(sum[:]) = sha256.Sum256(message)
	case crypto.SHA384:
		*(*[sha512.Size384]byte)(sum[:]) = sha512.Sum384(message)
	default:
		*sum = sha512.Sum512(message)
	}
	return sum[:k.hash.Size()]
}

// Size is the length of the key's signatures in bytes.
func (k *Key) Size() int { return k.size }
