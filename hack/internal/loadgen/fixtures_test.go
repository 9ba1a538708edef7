package loadgen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// readDocs returns the YAML documents of every file in dir.
func readDocs(t *testing.T, dir string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "---\n") {
			if strings.TrimSpace(doc) != "" {
				out[e.Name()] = append(out[e.Name()], doc)
			}
		}
	}
	return out
}

func TestFixturesHoldRecordsThatAcceptTheClientsKeys(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	creds, err := WriteFixtures(FixtureOptions{Dir: dir, Keys: 25, ClientKeys: 10, Tokens: 3, ObjectsPerFile: 10, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(creds.APIKeys) != 10 || len(creds.Tokens) != 3 {
		t.Fatalf("got %d keys and %d tokens, want 10 and 3", len(creds.APIKeys), len(creds.Tokens))
	}
	docs := readDocs(t, filepath.Join(dir, ConfigDirName))
	records := map[string]*apikeyformat.Record{}
	var files int
	for name, ds := range docs {
		if !strings.HasPrefix(name, "apikeys-") {
			continue
		}
		files++
		for _, d := range ds {
			var ak gatehousev1.APIKey
			if err := yaml.UnmarshalStrict([]byte(d), &ak); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if ak.Kind != "APIKey" || ak.APIVersion != gatehousev1.GroupVersion.String() || len(ak.Status.Keys) != 1 {
				t.Fatalf("%s: %s is not an APIKey with one key in status: %v %v", name, ak.Name, ak.Kind, ak.Status.Keys)
			}
			rec := apikeyformat.RecordOf(&ak)
			records[rec.Keys[0].KeyID] = rec
		}
	}
	if len(records) != 25 || files != 3 {
		t.Fatalf("found %d records in %d files, want 25 in 3", len(records), files)
	}
	for i, plain := range creds.APIKeys {
		k, err := apikeyformat.Parse(plain)
		if err != nil {
			t.Fatalf("client key %d does not parse: %v", i, err)
		}
		rec := records[k.ID()]
		if rec == nil {
			t.Fatalf("client key %d has no record", i)
		}
		if d := rec.Check(k, now); d != apikeyformat.Accepted {
			t.Errorf("client key %d: record says %s, want accepted", i, d)
		}
		if len(rec.Scopes) != 1 || rec.Scopes[0] != "orders:read" {
			t.Errorf("record scopes %v, want the policy's scope", rec.Scopes)
		}
	}
}

func TestFixtureTokensVerifyAgainstThePublishedJWKSOnly(t *testing.T) {
	dir := t.TempDir()
	creds, err := WriteFixtures(FixtureOptions{Dir: dir, Keys: 1, Tokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	docs := readDocs(t, filepath.Join(dir, ConfigDirName))
	var sk gatehousev1.SigningKey
	if err := yaml.UnmarshalStrict([]byte(docs["signingkey.yaml"][0]), &sk); err != nil {
		t.Fatal(err)
	}
	if sk.Kind != "SigningKey" || sk.Name != SigningKeyName || sk.Status.Issuer != sk.Spec.Issuer {
		t.Fatalf("SigningKey %s/%s, issuer %q in status, %q in spec", sk.Kind, sk.Name, sk.Status.Issuer, sk.Spec.Issuer)
	}
	jwksDoc := sk.Status.JWKS
	if strings.Contains(jwksDoc, `"d"`) {
		t.Fatal("the published JWKS contains a private key parameter")
	}
	set, err := jwk.Parse([]byte(jwksDoc))
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range creds.Tokens {
		parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set),
			jwt.WithIssuer(sk.Status.Issuer), jwt.WithAudience("orders"), jwt.WithValidate(true))
		if err != nil {
			t.Fatalf("token %d does not verify: %v", i, err)
		}
		if scope, _ := parsed.Get("scope"); scope != "orders:read" {
			t.Errorf("token %d scope %v", i, scope)
		}
		if parsed.Expiration().Before(time.Now().Add(time.Hour)) {
			t.Errorf("token %d expires at %v: too soon for a load run", i, parsed.Expiration())
		}
	}
}

func TestFixturePolicyAcceptsBothCredentialsForTheClientsRequests(t *testing.T) {
	dir := t.TempDir()
	creds, err := WriteFixtures(FixtureOptions{Dir: dir, Keys: 1, Tokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	docs := readDocs(t, filepath.Join(dir, ConfigDirName))
	var p gatehousev1.AuthPolicy
	if err := yaml.UnmarshalStrict([]byte(docs["authpolicy.yaml"][0]), &p); err != nil {
		t.Fatal(err)
	}
	if p.Kind != "AuthPolicy" || p.APIVersion != gatehousev1.GroupVersion.String() {
		t.Errorf("policy type %s/%s", p.APIVersion, p.Kind)
	}
	if len(p.Spec.Issuers) != 1 || p.Spec.Issuers[0].SigningKeyRef.Name != SigningKeyName {
		t.Errorf("policy issuers %+v, want the fixture's signing key", p.Spec.Issuers)
	}
	r := p.Spec.Rules[0]
	if r.Match.Hosts[0] != creds.Host || r.Match.Paths[0] != creds.Path || len(r.Credentials) != 0 {
		t.Errorf("rule %+v does not match the client's %s%s for both credential types", r, creds.Host, creds.Path)
	}
}

func TestTheCredentialsFileIsPrivateAndRoundTrips(t *testing.T) {
	dir := t.TempDir()
	creds, err := WriteFixtures(FixtureOptions{Dir: dir, Keys: 3, Tokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, CredentialsFileName)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode %v, want 0600", st.Mode().Perm())
	}
	got, err := LoadCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.APIKeys) != 3 || got.APIKeys[2] != creds.APIKeys[2] || got.Tokens[0] != creds.Tokens[0] {
		t.Error("credentials did not round trip")
	}
	if s := got.String() + got.GoString(); strings.Contains(s, got.APIKeys[0]) || strings.Contains(s, got.Tokens[0]) {
		t.Error("String printed a credential")
	}
}

func TestWorkloadsCarryTheirCredentialAndExpectation(t *testing.T) {
	creds := &Credentials{Host: "h", Path: "/p", APIKeyHeader: "x-api-key", APIKeys: []string{"k1", "k2", "k3"}, Tokens: []string{"t1", "t2", "t3", "t4", "t5"}}
	cases := []struct {
		name   string
		opts   WorkloadOptions
		n      int
		header string
		value  string
		expect Expect
	}{
		{WorkloadAPIKey, WorkloadOptions{}, 3, "x-api-key", "k1", Expect{Allow: true}},
		{WorkloadAPIKey, WorkloadOptions{Distinct: 2}, 2, "x-api-key", "k1", Expect{Allow: true}},
		{WorkloadJWTCached, WorkloadOptions{}, 4, "authorization", "Bearer t1", Expect{Allow: true}},
		{WorkloadDeny, WorkloadOptions{}, 1, "", "", Expect{Status: 401}},
	}
	for _, tc := range cases {
		w, err := BuildWorkload(tc.name, creds, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(w.Requests) != tc.n {
			t.Errorf("%s: %d requests, want %d", tc.name, len(w.Requests), tc.n)
		}
		h := w.Requests[0].CheckRequest().GetAttributes().GetRequest().GetHttp().GetHeaders()
		if tc.header != "" && h[tc.header] != tc.value {
			t.Errorf("%s: header %s = %q, want %q", tc.name, tc.header, h[tc.header], tc.value)
		}
		if tc.header == "" && (h["x-api-key"] != "" || h["authorization"] != "") {
			t.Errorf("%s: the deny workload carries a credential", tc.name)
		}
		if w.Requests[0].Expect() != tc.expect {
			t.Errorf("%s: expects %v, want %v", tc.name, w.Requests[0].Expect(), tc.expect)
		}
	}
	if _, err := BuildWorkload("nope", creds, WorkloadOptions{}); err == nil {
		t.Error("an unknown workload was built")
	}
	if _, err := BuildWorkload(WorkloadJWTCached, &Credentials{Host: "h", Path: "/p"}, WorkloadOptions{}); err == nil {
		t.Error("a token workload was built without tokens")
	}
}
