package loadgen

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// Fixture layout under FixtureOptions.Dir.
const (
	// ConfigDirName holds the sidecar's files-source objects: what the
	// operator would have written on a cluster. Nothing in it is secret.
	ConfigDirName = "config"
	// CredentialsFileName holds the plaintext keys and tokens for the load
	// client (mode 0600). They are test credentials for this fixture only.
	CredentialsFileName = "credentials.json"
	// SigningKeyName owns the fixture's JWKS ConfigMap and is named by the
	// AuthPolicy's signingKeyRef.
	SigningKeyName = "loadtest"
	// PolicyName is the fixture's AuthPolicy.
	PolicyName = "loadtest"
)

// FixtureOptions configure WriteFixtures. Zero values take the defaults
// shown.
type FixtureOptions struct {
	// Dir receives config/ and credentials.json. Required.
	Dir string
	// Namespace of every object ("loadtest").
	Namespace string
	// Keys is the number of API key records (1,000).
	Keys int
	// ClientKeys is how many of those keys the client gets (min(Keys, 1,000)).
	ClientKeys int
	// Tokens is the number of JWTs minted of each kind (16): valid ES256,
	// valid RS256, expired RS256.
	Tokens int
	// TokenLifetime is the tokens' lifetime (2h): long enough for a run.
	TokenLifetime time.Duration
	// Issuer ("https://issuer.loadtest.example") and Audience ("orders").
	Issuer, Audience string
	// Scope every credential carries and the policy requires ("orders:read").
	Scope string
	// Host and Path of the requests the policy matches
	// ("app.loadtest.example", "/api/orders").
	Host, Path string
	// ObjectsPerFile is the number of YAML documents per file (1,000).
	ObjectsPerFile int
	// Now is the issuing time (time.Now).
	Now time.Time
	// Rand is the randomness for keys (crypto/rand).
	Rand io.Reader
}

func (o *FixtureOptions) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Namespace, "loadtest")
	def(&o.Issuer, "https://issuer.loadtest.example")
	def(&o.Audience, "orders")
	def(&o.Scope, "orders:read")
	def(&o.Host, "app.loadtest.example")
	def(&o.Path, "/api/orders")
	if o.Keys <= 0 {
		o.Keys = 1000
	}
	if o.ClientKeys <= 0 {
		o.ClientKeys = 1000
	}
	o.ClientKeys = min(o.ClientKeys, o.Keys)
	if o.Tokens <= 0 {
		o.Tokens = 16
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = 2 * time.Hour
	}
	if o.ObjectsPerFile <= 0 {
		o.ObjectsPerFile = 1000
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
}

// WriteFixtures writes a files-source config directory with opts.Keys API
// key records, a JWKS ConfigMap and an AuthPolicy that accepts both, plus
// the credentials file the load client reads, and returns the credentials.
func WriteFixtures(opts FixtureOptions) (*Credentials, error) {
	if opts.Dir == "" {
		return nil, errors.New("fixtures: no output directory")
	}
	opts.defaults()
	configDir := filepath.Join(opts.Dir, ConfigDirName)
	if err := os.MkdirAll(configDir, 0o755); err != nil { //nolint:gosec // the config holds no secret
		return nil, fmt.Errorf("creating %s: %w", configDir, err)
	}
	creds := &Credentials{Host: opts.Host, Path: opts.Path, APIKeyHeader: "x-api-key"}

	if err := writeDocuments(filepath.Join(configDir, "authpolicy.yaml"), []any{policy(opts)}, yaml.Marshal); err != nil {
		return nil, err
	}
	jwksMap, tokens, err := signingFixtures(opts)
	if err != nil {
		return nil, err
	}
	creds.Tokens, creds.RSTokens, creds.ExpiredTokens = tokens.es, tokens.rs, tokens.expired
	if err := writeDocuments(filepath.Join(configDir, "signingkey.yaml"), []any{jwksMap}, yaml.Marshal); err != nil {
		return nil, err
	}

	issuedAt := opts.Now.Add(-time.Hour).UTC().Truncate(time.Second)
	batch := make([]any, 0, opts.ObjectsPerFile)
	file := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// JSON documents: the sidecar reads them without YAML conversion,
		// which at 100,000 APIKeys is most of its start time.
		err := writeDocuments(filepath.Join(configDir, fmt.Sprintf("apikeys-%04d.yaml", file)), batch, json.Marshal)
		batch, file = batch[:0], file+1
		return err
	}
	for i := range opts.Keys {
		key, err := apikeyformat.Generate(opts.Rand)
		if err != nil {
			return nil, fmt.Errorf("generating api key: %w", err)
		}
		if i < opts.ClientKeys {
			creds.APIKeys = append(creds.APIKeys, key.Plaintext())
		}
		batch = append(batch, apiKeyObject(opts, fmt.Sprintf("load-%06d", i), key, issuedAt))
		if len(batch) == opts.ObjectsPerFile {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if err := creds.Save(filepath.Join(opts.Dir, CredentialsFileName)); err != nil {
		return nil, err
	}
	return creds, nil
}

// apiKeyObject is an APIKey as the operator leaves it once the key is
// issued and delivered: spec as its author wrote it, status with the key's
// hash, state, summary fields and conditions.
func apiKeyObject(opts FixtureOptions, name string, key apikeyformat.Key, issuedAt time.Time) *gatehousev1.APIKey {
	at := metav1.NewTime(issuedAt)
	cond := func(t string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: t, Status: s, ObservedGeneration: 1, LastTransitionTime: at, Reason: reason, Message: msg}
	}
	return &gatehousev1.APIKey{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatehousev1.GroupVersion.String(), Kind: "APIKey"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: opts.Namespace, Generation: 1},
		Spec: gatehousev1.APIKeySpec{
			Subject:    "service:" + name,
			Scopes:     []string{opts.Scope},
			SecretName: name + "-key",
		},
		Status: gatehousev1.APIKeyStatus{
			ObservedGeneration: 1,
			Conditions: []metav1.Condition{
				cond(gatehousev1.ConditionExpired, metav1.ConditionFalse, gatehousev1.ReasonNotExpired, "The key does not expire."),
				cond(gatehousev1.ConditionRevoked, metav1.ConditionFalse, gatehousev1.ReasonEnabled, "The key is not disabled."),
				cond(gatehousev1.ConditionReady, metav1.ConditionTrue, gatehousev1.ReasonIssued, "Key "+key.ID()+" is recorded in the APIKey's status."),
				cond(gatehousev1.ConditionDelivered, metav1.ConditionTrue, gatehousev1.ReasonDelivered, "Secret "+name+"-key holds key "+key.ID()+"."),
			},
			State:              gatehousev1.APIKeyActive,
			Keys:               []gatehousev1.APIKeyStatusKey{{KeyID: key.ID(), SHA256: key.Hash(), IssuedAt: &at}},
			DeliveredKeyID:     key.ID(),
			DeliverySecretName: name + "-key",
			KeyID:              key.ID(),
			IssuedAt:           &at,
		},
	}
}

func policy(opts FixtureOptions) *gatehousev1.AuthPolicy {
	return &gatehousev1.AuthPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatehousev1.GroupVersion.String(), Kind: "AuthPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Namespace: opts.Namespace},
		Spec: gatehousev1.AuthPolicySpec{
			Issuers: []gatehousev1.TrustedIssuer{{
				Name:          "loadtest",
				SigningKeyRef: &gatehousev1.LocalObjectReference{Name: SigningKeyName},
				Audiences:     []string{opts.Audience},
			}},
			APIKeys: gatehousev1.APIKeySource{Header: "x-api-key"},
			Rules: []gatehousev1.Rule{{
				Name:   "orders",
				Match:  gatehousev1.RuleMatch{Hosts: []string{opts.Host}, Paths: []string{opts.Path}},
				Action: gatehousev1.ActionAuthenticate,
				Scopes: []string{opts.Scope},
			}},
		},
	}
}

// signingFixtures makes the signing keys, the SigningKey whose status
// publishes their JWKS, and the tokens of every JWT workload (mintTokens).
func signingFixtures(opts FixtureOptions) (*gatehousev1.SigningKey, *tokenSets, error) {
	tokens, err := mintTokens(opts)
	if err != nil {
		return nil, nil, err
	}
	// The SigningKey as the operator leaves it: its status publishes the
	// JWKS, which is all sidecars trust.
	sk := &gatehousev1.SigningKey{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatehousev1.GroupVersion.String(), Kind: "SigningKey"},
		ObjectMeta: metav1.ObjectMeta{Name: SigningKeyName, Namespace: opts.Namespace},
		Spec:       gatehousev1.SigningKeySpec{Issuer: opts.Issuer},
		Status:     gatehousev1.SigningKeyStatus{JWKS: string(tokens.jwks), Issuer: opts.Issuer},
	}
	return sk, tokens, nil
}

func randomHex(r io.Reader, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("reading randomness: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// writeDocuments writes objects as one multi-document YAML file, each
// document encoded by marshal (YAML, or JSON, which is YAML too).
func writeDocuments(path string, objs []any, marshal func(any) ([]byte, error)) (err error) {
	f, err := os.Create(path) //nolint:gosec // path is built from the fixture directory
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing %s: %w", path, cerr)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	for _, o := range objs {
		b, err := marshal(o)
		if err != nil {
			return fmt.Errorf("encoding %T for %s: %w", o, path, err)
		}
		if _, err := w.WriteString("---\n"); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
