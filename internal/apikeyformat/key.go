// Package apikeyformat defines the API key format and the hash record that the
// operator writes and the sidecar and token endpoint read.
//
// # Key format
//
//		gth_<keyID>_<secret>_<checksum>
//
//	  - "gth_" is a fixed prefix so that secret scanners recognise a leaked key.
//	  - keyID is 16 characters of lowercase base32 (80 random bits). It is
//	    public: logs, metrics and status name keys by it, and validators find
//	    the key's record by it in O(1).
//	  - secret is 52 characters of lowercase base32: 256 bits from crypto/rand.
//	  - checksum is the CRC-32 (IEEE) of everything before it, as 7 characters
//	    of lowercase base32, so that a mistyped or foreign string is rejected
//	    before any lookup.
//
// A key is stored only as the lowercase hex SHA-256 of the whole key string.
// Keys carry 256 bits of entropy, so a fast hash is right; slow password
// hashes would only cost latency on every request.
package apikeyformat

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"sync"
)

// Prefix starts every Gatehouse API key.
const Prefix = "gth_"

const (
	keyIDLen    = 16
	secretLen   = 52
	checksumLen = 7
	// Len is the length of every well-formed key.
	Len = len(Prefix) + keyIDLen + 1 + secretLen + 1 + checksumLen
)

var encoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrMalformed means a string is not a well-formed Gatehouse API key. The
// error never includes the string.
var ErrMalformed = errors.New("malformed api key")

// Key is a parsed, well-formed API key. Its String method returns the
// plaintext: never log it.
type Key struct {
	id    string
	plain string
}

// ID returns the public key ID.
func (k Key) ID() string { return k.id }

// Plaintext returns the whole key. Only the delivery Secret and the CLI that
// prints a new key once may hold it.
func (k Key) Plaintext() string { return k.plain }

// Hash returns the lowercase hex SHA-256 of the key: the only form stored.
func (k Key) Hash() string { return Hash(k.plain) }

// String redacts the key so that it cannot reach a log by accident.
func (k Key) String() string { return Prefix + k.id + "_<redacted>" }

// Generate makes a new key from r (crypto/rand.Reader in production).
func Generate(r io.Reader) (Key, error) {
	if r == nil {
		r = rand.Reader
	}
	var idBytes [10]byte // 80 bits -> 16 base32 characters
	var secret [32]byte  // 256 bits -> 52 base32 characters
	if _, err := io.ReadFull(r, idBytes[:]); err != nil {
		return Key{}, err
	}
	if _, err := io.ReadFull(r, secret[:]); err != nil {
		return Key{}, err
	}
	id := encoding.EncodeToString(idBytes[:])
	body := Prefix + id + "_" + encoding.EncodeToString(secret[:])
	sum := checksum(body)
	return Key{id: id, plain: body + "_" + string(sum[:])}, nil
}

// Parse checks the format and checksum of s without any lookup.
func Parse(s string) (Key, error) {
	if len(s) != Len || !strings.HasPrefix(s, Prefix) {
		return Key{}, ErrMalformed
	}
	rest := s[len(Prefix):]
	if rest[keyIDLen] != '_' || rest[keyIDLen+1+secretLen] != '_' {
		return Key{}, ErrMalformed
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return Key{}, ErrMalformed
		}
	}
	body := s[:len(s)-checksumLen-1]
	sum := checksum(body)
	if subtle.ConstantTimeCompare(sum[:], []byte(s[len(s)-checksumLen:])) != 1 {
		return Key{}, ErrMalformed
	}
	return Key{id: rest[:keyIDLen], plain: s}, nil
}

// ValidKeyID reports whether id has the form of a key ID.
func ValidKeyID(id string) bool {
	if len(id) != keyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// Hash returns the lowercase hex SHA-256 of a key string.
func Hash(plain string) string {
	sum := sha256.Sum256([]byte(plain))
	return hex.EncodeToString(sum[:])
}

// HashMatches compares a key with a stored hex hash in constant time.
func HashMatches(k Key, storedHex string) bool {
	stored, err := hex.DecodeString(storedHex)
	if err != nil || len(stored) != sha256.Size {
		return false
	}
	sum := sha256.Sum256([]byte(k.plain))
	return subtle.ConstantTimeCompare(sum[:], stored) == 1
}

// bodyBuffers hold a key's body while its CRC is computed: crc32 takes a
// []byte, and converting the string allocated a copy on every check of a
// key (the sidecar parses every key it is sent).
var bodyBuffers = sync.Pool{New: func() any { return new([Len]byte) }}

// checksum is the checksum of a key's body, without allocating.
func checksum(body string) [checksumLen]byte {
	var crc uint32
	if len(body) <= Len {
		buf := bodyBuffers.Get().(*[Len]byte)
		n := copy(buf[:], body)
		crc = crc32.ChecksumIEEE(buf[:n])
		clear(buf[:n]) // the body holds the secret
		bodyBuffers.Put(buf)
	} else {
		crc = crc32.ChecksumIEEE([]byte(body))
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc)
	var out [checksumLen]byte
	encoding.Encode(out[:], b[:])
	return out
}
