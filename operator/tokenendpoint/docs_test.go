package tokenendpoint

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestEveryReasonIsDocumented keeps docs/token-endpoint.md's table in step
// with the code: each reason has a row giving its status and error code.
func TestEveryReasonIsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "token-endpoint.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range AllReasons {
		if _, ok := refusals[r]; !ok {
			t.Errorf("reason %s has no refusal", r)
			continue
		}
		row := "| `" + string(r) + "` | " + strconv.Itoa(r.Status()) + " | `" + r.Code() + "` |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/token-endpoint.md lacks the row %q", row)
		}
	}
	if len(refusals) != len(AllReasons) {
		t.Errorf("%d refusals but %d reasons in AllReasons", len(refusals), len(AllReasons))
	}
}
