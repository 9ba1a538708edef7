package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

func runMintCommand(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newMintCommand(rand.Reader)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func decodeManifest(t *testing.T, doc string) *gatehousev1.APIKey {
	t.Helper()
	ak := &gatehousev1.APIKey{}
	if err := yaml.UnmarshalStrict([]byte(doc), ak); err != nil {
		t.Fatalf("the manifest is not an APIKey: %v\n%s", err, doc)
	}
	return ak
}

func TestMintPrintsTheKeyOnceAndAManifestWithOnlyItsHash(t *testing.T) {
	stdout, stderr, err := runMintCommand(t, "--name", "billing", "-n", "shop", "--subject", "service:billing",
		"--scope", "orders:read", "--scope", "orders:write", "--expires-at", "2027-01-01T00:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	var key apikeyformat.Key
	for _, f := range strings.Fields(stderr) {
		if k, err := apikeyformat.Parse(f); err == nil {
			key = k
		}
	}
	if key.ID() == "" {
		t.Fatalf("no key shown on stderr:\n%s", stderr)
	}
	if strings.Count(stderr, key.Plaintext()) != 1 || strings.Contains(stdout, key.Plaintext()) {
		t.Fatal("the key must be shown exactly once, and never in the manifest")
	}
	if !strings.Contains(stderr, key.Hash()) {
		t.Fatal("the hash is not shown")
	}
	ak := decodeManifest(t, stdout)
	if ak.APIVersion != "auth.gatehouse.dev/v1" || ak.Kind != "APIKey" || ak.Name != "billing" || ak.Namespace != "shop" {
		t.Fatalf("manifest metadata: %+v %+v", ak.TypeMeta, ak.ObjectMeta)
	}
	if ak.Spec.Hash == nil || ak.Spec.Hash.KeyID != key.ID() || ak.Spec.Hash.SHA256 != key.Hash() || ak.Spec.SecretName != "" {
		t.Fatalf("manifest hash: %+v", ak.Spec)
	}
	if ak.Spec.Subject != "service:billing" || len(ak.Spec.Scopes) != 2 || ak.Spec.ExpiresAt.Year() != 2027 {
		t.Fatalf("manifest spec: %+v", ak.Spec)
	}
	if strings.Contains(stdout, "status") || strings.Contains(stdout, "creationTimestamp") {
		t.Fatalf("the manifest carries fields a user does not set:\n%s", stdout)
	}
}

func TestMintWritesTheKeyToANewPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "billing.key")
	stdout, stderr, err := runMintCommand(t, "--name", "billing", "--subject", "s", "--key-file", path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, err := apikeyformat.Parse(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("the key file holds no key: %v", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}
	if strings.Contains(stdout+stderr, key.Plaintext()) {
		t.Fatal("with --key-file the key must not be printed")
	}
	if ak := decodeManifest(t, stdout); ak.Spec.Hash.SHA256 != key.Hash() {
		t.Fatal("the manifest's hash is not the key file's")
	}
	if _, _, err := runMintCommand(t, "--name", "billing", "--subject", "s", "--key-file", path); err == nil {
		t.Fatal("an existing key file was overwritten")
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Fatal("the existing key file changed")
	}
}

func TestMintRefusesBadInput(t *testing.T) {
	cases := map[string][]string{
		"A missing name is refused.":           {"--subject", "s"},
		"A missing subject is refused.":        {"--name", "n"},
		"A name that is not a DNS name fails.": {"--name", "Not_A_Name", "--subject", "s"},
		"A malformed expiry is refused.":       {"--name", "n", "--subject", "s", "--expires-at", "next week"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, err := runMintCommand(t, args...)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(stdout+stderr, apikeyformat.Prefix) {
				t.Fatal("a key was generated for bad input")
			}
		})
	}
}
