package app_test

import (
	"reflect"
	"testing"

	"gatehouse.dev/gatehouse/sidecar/app"
)

func TestParseLabelsFile(t *testing.T) {
	cases := []struct {
		name    string
		data    string
		want    map[string]string
		wantErr bool
	}{
		{"A downward-API file is read", "app=\"orders\"\npod-template-hash=\"5d9c\"\napp.kubernetes.io/name=\"shop\"\n", map[string]string{"app": "orders", "pod-template-hash": "5d9c", "app.kubernetes.io/name": "shop"}, false},
		{"An empty file has no labels", "", map[string]string{}, false},
		{"An unquoted value is refused", "app=orders\n", nil, true},
		{"A line without = is refused", "app\n", nil, true},
		{"An invalid key is refused", "bad key=\"x\"\n", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := app.ParseLabelsFile([]byte(tc.data))
			if (err != nil) != tc.wantErr || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
				t.Fatalf("got %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	got, err := app.ParseLabels("app=orders, tier=web")
	if err != nil || !reflect.DeepEqual(got, map[string]string{"app": "orders", "tier": "web"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := app.ParseLabels("app"); err == nil {
		t.Fatal("a label without = was accepted")
	}
}
