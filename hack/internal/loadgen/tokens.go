package loadgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// tokenSets are the public JWKS of the fixture's signing keys (one ES256,
// one RS256) and the tokens of the JWT workloads, all from the fixture's
// issuer for its audience and scope.
type tokenSets struct {
	jwks []byte
	// es and rs are valid for opts.TokenLifetime, opts.Tokens of each,
	// all distinct (their own jti and subject).
	es, rs []string
	// expired carry a valid RS256 signature and expired an hour ago,
	// well past any clock skew: opts.Tokens of them.
	expired []string
}

// mintTokens makes the signing keys and every token of the fixture.
func mintTokens(opts FixtureOptions) (*tokenSets, error) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("generating ES256 signing key: %w", err)
	}
	rsKey, err := rsa.GenerateKey(opts.Rand, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating RS256 signing key: %w", err)
	}
	set := jwk.NewSet()
	var es, rs jwk.Key
	for _, k := range []struct {
		priv crypto.Signer
		alg  jwa.SignatureAlgorithm
		dst  *jwk.Key
	}{{ecKey, jwa.ES256, &es}, {rsKey, jwa.RS256, &rs}} {
		if *k.dst, err = signingJWK(opts, k.priv, k.alg); err != nil {
			return nil, err
		}
		pub, err := (*k.dst).PublicKey()
		if err != nil {
			return nil, fmt.Errorf("deriving public jwk: %w", err)
		}
		if err := set.AddKey(pub); err != nil {
			return nil, fmt.Errorf("building jwks: %w", err)
		}
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encoding jwks: %w", err)
	}
	ts := &tokenSets{jwks: doc}
	now := opts.Now.Truncate(time.Second)
	for _, s := range []struct {
		key      jwk.Key
		alg      jwa.SignatureAlgorithm
		iat, exp time.Time
		prefix   string
		dst      *[]string
	}{
		{es, jwa.ES256, now, now.Add(opts.TokenLifetime), "jwt", &ts.es},
		{rs, jwa.RS256, now, now.Add(opts.TokenLifetime), "rs", &ts.rs},
		{rs, jwa.RS256, now.Add(-3 * time.Hour), now.Add(-time.Hour), "expired", &ts.expired},
	} {
		for i := range opts.Tokens {
			tok, err := mintToken(opts, s.key, s.alg, fmt.Sprintf("service:%s-%04d", s.prefix, i), s.iat, s.exp)
			if err != nil {
				return nil, err
			}
			*s.dst = append(*s.dst, tok)
		}
	}
	return ts, nil
}

func signingJWK(opts FixtureOptions, priv crypto.Signer, alg jwa.SignatureAlgorithm) (jwk.Key, error) {
	key, err := jwk.FromRaw(priv)
	if err != nil {
		return nil, fmt.Errorf("wrapping signing key: %w", err)
	}
	kid, err := randomHex(opts.Rand, 8)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: alg, jwk.KeyUsageKey: "sig"} {
		if err := key.Set(k, v); err != nil {
			return nil, fmt.Errorf("setting jwk %s: %w", k, err)
		}
	}
	return key, nil
}

func mintToken(opts FixtureOptions, key jwk.Key, alg jwa.SignatureAlgorithm, subject string, iat, exp time.Time) (string, error) {
	jti, err := randomHex(opts.Rand, 16)
	if err != nil {
		return "", err
	}
	tok, err := jwt.NewBuilder().
		Issuer(opts.Issuer).
		Audience([]string{opts.Audience}).
		Subject(subject).
		IssuedAt(iat).
		NotBefore(iat.Add(-time.Minute)).
		Expiration(exp).
		JwtID(jti).
		Claim("scope", opts.Scope).
		Build()
	if err != nil {
		return "", fmt.Errorf("building token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(alg, key))
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return string(signed), nil
}
