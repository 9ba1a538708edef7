package source_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/testfixture"
)

func TestReadDirReadsJSONAndYAMLDocumentsAlike(t *testing.T) {
	key := testfixture.NewAPIKey(t, "shop", "billing", "service:billing", "orders:read")
	asJSON, err := json.Marshal(key.Object())
	if err != nil {
		t.Fatal(err)
	}
	pol := testfixture.Policy("shop", "main", testfixture.Epoch, nil)
	cases := []struct {
		name string
		docs string
	}{
		{"A YAML document", string(testfixture.YAML(t, key.Object(), pol))},
		{"A JSON document, read without YAML conversion", "---\n" + string(asJSON) + "\n" + string(testfixture.YAML(t, pol))},
		{"A flow mapping that is YAML but not JSON still reads", "{kind: AuthPolicy, apiVersion: auth.gatehouse.dev/v1, metadata: {name: main, namespace: shop}, spec: {}}\n---\n" + string(asJSON)},
	}
	var first [][]string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "state.yaml"), []byte(tc.docs), 0o600); err != nil {
				t.Fatal(err)
			}
			in, err := source.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(in.Records) != 1 || len(in.Policies) != 1 {
				t.Fatalf("read %d API keys and %d policies, want 1 and 1", len(in.Records), len(in.Policies))
			}
			rec := in.Records[0].Record
			got := []string{rec.Name, rec.Subject, string(rec.State)}
			for _, k := range rec.Keys {
				got = append(got, k.KeyID, k.SHA256)
			}
			if rec.State != apikeyformat.StateActive || got[3] != key.Key.ID() {
				t.Fatalf("read %v, want state Active and key ID %s", got, key.Key.ID())
			}
			if first != nil && !reflect.DeepEqual(got, first[0]) {
				t.Fatalf("read %v, want %v as from YAML", got, first[0])
			}
			first = append(first, got)
		})
	}
}
