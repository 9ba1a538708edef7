package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"gatehouse.dev/gatehouse/test/testenv"
)

func TestIntegrationDemoRunsTheWholeFlowAndStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts its own API server")
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, Options{AssetsDir: assets, Out: &out}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"billing", "platform", "orders", "Every request got the answer it should.", "==> stopping"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "gth_") {
		t.Errorf("the demo printed an API key:\n%s", out.String())
	}
	t.Logf("demo output:\n%s", out.String())
}
