package authz_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"golang.org/x/sys/unix"

	"gatehouse.dev/gatehouse/test/testfixture"
)

// BenchmarkOneVerification is the cost of the cryptography alone: one
// signature verification of a typical token by jwx's verifier (crypto/rsa
// and crypto/ecdsa, as any Go server calls them) and nothing else. The
// engine verifies ES256 the same way; for RS256 it prepares the key once
// (sidecar/rsapkcs1), which costs about two thirds of this
// (BenchmarkEngineVerification in sidecar/server). Issue 14 sets the uncached-token targets against
// it: a check of a valid, uncached token may cost at most the baseline
// server's cost plus 1.2 times this. Besides the wall time it reports the
// process's CPU time per verification (cpu-ns/op, garbage collection
// included), the measure hack/load.sh compares with the servers' CPU time
// per request: it runs this benchmark pinned to the servers' CPU in the
// same session as the load.
func BenchmarkOneVerification(b *testing.B) {
	for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256, jwa.RS256} {
		b.Run(alg.String(), func(b *testing.B) {
			s := testfixture.NewSigner(b, alg)
			tok := s.Sign(b, testfixture.Claims(issuer, "alice", testfixture.Epoch, map[string]any{"scope": "orders:read"}), nil)
			i := strings.LastIndexByte(tok, '.')
			input := []byte(tok[:i])
			sig := decodeB64(b, tok[i+1:])
			v, err := jws.NewVerifier(alg)
			if err != nil {
				b.Fatal(err)
			}
			pub := s.Private.Public()
			if err := v.Verify(input, sig, pub); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU(b)
			for range b.N {
				if err := v.Verify(input, sig, pub); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time of the whole process (every thread, the
// garbage collector's too), as /proc/<pid>/stat counts a server's.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

func decodeB64(b *testing.B, s string) []byte {
	b.Helper()
	out, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		b.Fatal(err)
	}
	return out
}
