package server_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"google.golang.org/protobuf/proto"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// BenchmarkUncachedCheckPerVerification compares what the sidecar spends
// above gRPC's transport on a check of a valid token with the cache off
// (the codec decoding a compact request, the handler, the codec encoding
// the answer) with one bare signature verification of the same token by
// jwx, as BenchmarkOneVerification (sidecar/authz) does it. The two
// alternate within every iteration and are timed apart, so that a busy
// machine slows both alike: check/verify is the ratio issue 14 bounds by
// 1.2 (a check of a valid uncached token may cost the baseline's cost plus
// 1.2 verifications; the transport is the baseline's share).
func BenchmarkUncachedCheckPerVerification(b *testing.B) {
	store, _, es, rs := benchState(b, 0) // no API key is read
	for _, tc := range []struct {
		alg    jwa.SignatureAlgorithm
		signer *testfixture.Signer
		iss    string
	}{{jwa.ES256, es, esIssuer}, {jwa.RS256, rs, rsIssuer}} {
		b.Run(tc.alg.String(), func(b *testing.B) {
			tok := tc.signer.Sign(b, testfixture.Claims(tc.iss, "alice", time.Now(), map[string]any{"scope": "orders:read"}), nil)
			verify := bareVerification(b, tc.alg, tok, tc.signer)
			check := wireCheck(b, authz.New(store, authz.Options{CacheSize: -1}), store, tok)
			var checkTime, verifyTime time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				check()
				t1 := time.Now()
				verify()
				checkTime, verifyTime = checkTime+t1.Sub(t0), verifyTime+time.Since(t1)
			}
			b.ReportMetric(float64(checkTime.Nanoseconds())/float64(b.N), "check-ns/op")
			b.ReportMetric(float64(verifyTime.Nanoseconds())/float64(b.N), "verify-ns/op")
			b.ReportMetric(float64(checkTime)/float64(verifyTime), "check/verify")
		})
	}
}

// bareVerification returns one jwx verification of tok's signature.
func bareVerification(b *testing.B, alg jwa.SignatureAlgorithm, tok string, s *testfixture.Signer) func() {
	b.Helper()
	i := strings.LastIndexByte(tok, '.')
	input := []byte(tok[:i])
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	v, err := jws.NewVerifier(alg)
	if err != nil {
		b.Fatal(err)
	}
	pub := s.Private.Public()
	return func() {
		if err := v.Verify(input, sig, pub); err != nil {
			b.Fatal(err)
		}
	}
}

// wireCheck returns one check of a compact request bearing tok, through
// the sidecar's codec, which must allow it.
func wireCheck(b *testing.B, engine *authz.Engine, store *snapshot.Store, tok string) func() {
	b.Helper()
	core := server.NewCore(engine, store, metrics.New(store, nil), server.Options{StripCredential: true, Log: logr.Discard()})
	srv := server.NewAuthorizationServer(core)
	codec := core.GRPCCodec()
	wire, err := proto.Marshal(benchRequest(map[string]string{"authorization": "Bearer " + tok}))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	return func() { allowOverWire(ctx, b, codec, srv, wire) }
}
