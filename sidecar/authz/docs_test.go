package authz_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

// TestEveryReasonIsDocumented keeps docs/sidecar.md's table in step with
// the code: a reason operators cannot look up is a support ticket.
func TestEveryReasonIsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "sidecar.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range authz.AllReasons {
		if !strings.Contains(string(doc), "`"+string(r)+"`") {
			t.Errorf("docs/sidecar.md does not mention reason %s", r)
		}
		if r != authz.Authenticated && r != authz.Anonymous && !strings.Contains(string(doc), "| `"+string(r)+"` | "+strconv.Itoa(r.Status())) {
			t.Errorf("docs/sidecar.md's table row for %s does not give status %d", r, r.Status())
		}
	}
}
