package rsapkcs1_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"math/big"
	"sync"
	"testing"

	"gatehouse.dev/gatehouse/sidecar/rsapkcs1"
)

var (
	keysOnce sync.Once
	key2048  *rsa.PrivateKey
	key3072  *rsa.PrivateKey
)

// testKeys are generated once per test binary: 3072 bits takes a while.
func testKeys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if key2048, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if key3072, err = rsa.GenerateKey(rand.Reader, 3072); err != nil {
			panic(err)
		}
	})
	return key2048, key3072
}

func hashOf(h crypto.Hash, msg []byte) []byte {
	d := h.New()
	d.Write(msg)
	return d.Sum(nil)
}

// stdlibVerdict is crypto/rsa's answer, the reference every case is
// compared with.
func stdlibVerdict(pub *rsa.PublicKey, h crypto.Hash, msg, sig []byte) bool {
	return rsa.VerifyPKCS1v15(pub, h, hashOf(h, msg), sig) == nil
}

// rawSign returns em^d mod n as k bytes: a signature whose encoded message
// is exactly em, whatever em holds. It lets the tests present the verifier
// with every malformed encoding a forger would aim for.
func rawSign(t testing.TB, priv *rsa.PrivateKey, em []byte) []byte {
	t.Helper()
	m := new(big.Int).SetBytes(em)
	if m.Cmp(priv.N) >= 0 {
		t.Fatalf("encoded message is not below the modulus")
	}
	s := new(big.Int).Exp(m, priv.D, priv.N)
	return s.FillBytes(make([]byte, priv.Size()))
}

// encode builds EM = 0x00 || 0x01 || PS || 0x00 || T for a k-byte modulus
// with T = digestInfo || digest, as RFC 8017 section 9.2 does.
func encode(k int, digestInfo, digest []byte) []byte {
	em := make([]byte, k)
	em[1] = 0x01
	t := append(append([]byte{}, digestInfo...), digest...)
	for i := 2; i < k-len(t)-1; i++ {
		em[i] = 0xff
	}
	copy(em[k-len(t):], t)
	return em
}

// shortPadding is a k-byte 00 01 ff×8 00 followed by zeros: the
// shortest padding RFC 8017 allows, with room for what forgers put after it.
func shortPadding(k int) []byte {
	em := make([]byte, k)
	em[1] = 0x01
	for i := 2; i < 10; i++ {
		em[i] = 0xff
	}
	return em
}

var sha256Info = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

func TestSignaturesOfCryptoRSAVerify(t *testing.T) {
	k2048, k3072 := testKeys(t)
	msg := []byte("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9")
	for _, priv := range []*rsa.PrivateKey{k2048, k3072} {
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			sig, err := rsa.SignPKCS1v15(nil, priv, h, hashOf(h, msg))
			if err != nil {
				t.Fatal(err)
			}
			k, err := rsapkcs1.New(&priv.PublicKey, h)
			if err != nil {
				t.Fatal(err)
			}
			if k.Size() != priv.Size() {
				t.Errorf("%d bits: Size() = %d, want %d", priv.N.BitLen(), k.Size(), priv.Size())
			}
			if err := k.Verify(msg, sig); err != nil || !stdlibVerdict(&priv.PublicKey, h, msg, sig) {
				t.Errorf("%d bits, %v: a valid signature was refused: %v", priv.N.BitLen(), h, err)
			}
			other := append(append([]byte{}, msg...), '.')
			if err := k.Verify(other, sig); !errors.Is(err, rsapkcs1.ErrVerification) {
				t.Errorf("%d bits, %v: a signature verified for another message: %v", priv.N.BitLen(), h, err)
			}
			// The same signature under the other hashes: never.
			for _, h2 := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
				if h2 == h {
					continue
				}
				k2, _ := rsapkcs1.New(&priv.PublicKey, h2)
				if k2.Verify(msg, sig) == nil {
					t.Errorf("%d bits: a %v signature verified as %v", priv.N.BitLen(), h, h2)
				}
			}
		}
	}
}

func TestASignatureOfAnotherKeyIsRefused(t *testing.T) {
	k2048, _ := testKeys(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("header.payload")
	sig, _ := rsa.SignPKCS1v15(nil, other, crypto.SHA256, hashOf(crypto.SHA256, msg))
	k, _ := rsapkcs1.New(&k2048.PublicKey, crypto.SHA256)
	if k.Verify(msg, sig) == nil {
		t.Fatal("a signature of another key verified")
	}
}

// TestForgedEncodingsAreRefused signs encoded messages that differ from
// the one expected in the ways signature forgeries use (Bleichenbacher's
// 2006 attack on parsers that stop after the digest, short or non-0xff
// padding, other DigestInfo encodings, another hash's DigestInfo). Each is
// a real signature of its encoding, so only the comparison can refuse it;
// crypto/rsa must refuse it too, and the one exact encoding must pass both.
func TestForgedEncodingsAreRefused(t *testing.T) {
	priv, _ := testKeys(t)
	k := priv.Size()
	msg := []byte("header.payload")
	digest := hashOf(crypto.SHA256, msg)
	good := encode(k, sha256Info, digest)
	derT := append(append([]byte{}, sha256Info...), digest...) // T of RFC 8017
	mutate := func(f func(em []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	noNull := []byte{0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20}
	longLength := []byte{0x30, 0x81, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
	sha384Info := []byte{0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30}
	cases := map[string][]byte{
		"block type 2":         mutate(func(em []byte) []byte { em[1] = 0x02; return em }),
		"block type 0":         mutate(func(em []byte) []byte { em[1] = 0x00; return em }),
		"no leading zero":      mutate(func(em []byte) []byte { return append(em[1:], 0x00) }),
		"a padding byte 0xfe":  mutate(func(em []byte) []byte { em[40] = 0xfe; return em }),
		"no zero separator":    mutate(func(em []byte) []byte { em[k-len(sha256Info)-len(digest)-1] = 0xff; return em }),
		"digest of another":    encode(k, sha256Info, hashOf(crypto.SHA256, []byte("header.other"))),
		"DigestInfo no NULL":   encode(k, noNull, digest),
		"DigestInfo long form": encode(k, longLength, digest),
		"SHA-384 DigestInfo":   encode(k, sha384Info, hashOf(crypto.SHA384, msg)),
		"garbage after digest": func() []byte {
			// 00 01 ff×8 00 DigestInfo digest garbage…: what a parser that
			// reads the digest and stops would accept.
			em := shortPadding(k)
			n := copy(em[11:], derT)
			for i := 11 + n; i < k; i++ {
				em[i] = 0x5a
			}
			return em
		}(),
		"short padding, zeros before": func() []byte {
			em := shortPadding(k)
			copy(em[k-len(derT):], derT)
			return em
		}(),
	}
	key, err := rsapkcs1.New(&priv.PublicKey, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	sig := rawSign(t, priv, good)
	if err := key.Verify(msg, sig); err != nil || !stdlibVerdict(&priv.PublicKey, crypto.SHA256, msg, sig) {
		t.Fatalf("the exact encoding, signed raw, must verify here (%v) and in crypto/rsa", err)
	}
	for name, em := range cases {
		sig := rawSign(t, priv, em)
		if key.Verify(msg, sig) == nil {
			t.Errorf("%s: verified", name)
		}
		if stdlibVerdict(&priv.PublicKey, crypto.SHA256, msg, sig) {
			t.Errorf("%s: crypto/rsa verified it: the case is not a forgery", name)
		}
	}
}

// TestMalformedSignaturesAreRefused changes a valid signature's bytes,
// length and value: every single-bit change, a byte more or less, and
// values at or above the modulus (s + n is the same residue).
func TestMalformedSignaturesAreRefused(t *testing.T) {
	priv, _ := testKeys(t)
	msg := []byte("header.payload")
	sig, _ := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, hashOf(crypto.SHA256, msg))
	key, _ := rsapkcs1.New(&priv.PublicKey, crypto.SHA256)
	for i := range sig {
		for bit := range 8 {
			bad := append([]byte{}, sig...)
			bad[i] ^= 1 << bit
			if key.Verify(msg, bad) == nil {
				t.Fatalf("byte %d bit %d flipped: verified", i, bit)
			}
		}
	}
	n := priv.N.FillBytes(make([]byte, priv.Size()))
	sPlusN := new(big.Int).Add(new(big.Int).SetBytes(sig), priv.N).Bytes()
	cases := map[string][]byte{
		"empty":             nil,
		"one byte short":    sig[1:],
		"one byte long":     append([]byte{0}, sig...),
		"a byte appended":   append(append([]byte{}, sig...), 0),
		"zero":              make([]byte, len(sig)),
		"one":               append(make([]byte, len(sig)-1), 1),
		"the modulus":       n,
		"s + n":             sPlusN,
		"all ones":          bytes.Repeat([]byte{0xff}, len(sig)),
		"the modulus minus": new(big.Int).Sub(priv.N, big.NewInt(1)).FillBytes(make([]byte, len(sig))),
	}
	for name, s := range cases {
		if err := key.Verify(msg, s); !errors.Is(err, rsapkcs1.ErrVerification) {
			t.Errorf("%s: got %v, want ErrVerification", name, err)
		}
		if stdlibVerdict(&priv.PublicKey, crypto.SHA256, msg, s) {
			t.Errorf("%s: crypto/rsa verified it", name)
		}
	}
}

func TestKeysCryptoRSAWouldRefuseAreRefused(t *testing.T) {
	priv, _ := testKeys(t)
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	n := priv.N
	even := new(big.Int).Add(n, big.NewInt(1))
	cases := map[string]*rsa.PublicKey{
		"nil modulus":  {E: 65537},
		"zero modulus": {N: new(big.Int), E: 65537},
		"1024 bits":    &short.PublicKey,
		"even modulus": {N: even, E: 65537},
		"e = 1":        {N: n, E: 1},
		"e = 2":        {N: n, E: 2},
		"e even":       {N: n, E: 65536},
		"e = 2^31":     {N: n, E: 1 << 31},
		"e negative":   {N: n, E: -65537},
	}
	for name, pub := range cases {
		if _, err := rsapkcs1.New(pub, crypto.SHA256); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := rsapkcs1.New(nil, crypto.SHA256); err == nil {
		t.Error("nil key: accepted")
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA224, crypto.MD5, crypto.SHA3_256, 0} {
		if _, err := rsapkcs1.New(&priv.PublicKey, h); err == nil {
			t.Errorf("hash %v: accepted", h)
		}
	}
	if _, err := rsapkcs1.New(&rsa.PublicKey{N: n, E: 3}, crypto.SHA256); err != nil {
		t.Errorf("e = 3: refused: %v", err)
	}
}

// FuzzVerifyAgreesWithCryptoRSA signs whatever encoded message the fuzzer
// writes (its first byte cleared, so that it is below the modulus) and
// requires the same verdict as crypto/rsa, for the message the fuzzer
// also writes; and the same for the raw signature bytes it writes.
func FuzzVerifyAgreesWithCryptoRSA(f *testing.F) {
	priv, _ := testKeys(f)
	k := priv.Size()
	msg := []byte("header.payload")
	digest := hashOf(crypto.SHA256, msg)
	f.Add(msg, encode(k, sha256Info, digest), []byte{})
	f.Add([]byte("x"), encode(k, sha256Info, digest), make([]byte, k))
	key, err := rsapkcs1.New(&priv.PublicKey, crypto.SHA256)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg, em, rawSig []byte) {
		if len(em) > k {
			em = em[:k]
		}
		em = append(make([]byte, k-len(em)), em...)
		em[0] = 0
		for _, sig := range [][]byte{rawSign(t, priv, em), rawSig} {
			ours := key.Verify(msg, sig) == nil
			if want := stdlibVerdict(&priv.PublicKey, crypto.SHA256, msg, sig); ours != want {
				t.Fatalf("verdict %v, crypto/rsa %v (em %x, sig %x)", ours, want, em, sig)
			}
		}
	})
}
