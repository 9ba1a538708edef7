package authz

import (
	"crypto/sha256"
	"strings"
	"testing"
)

// TestTokenSumIsTheTokensSHA256: the token cache's key is the SHA-256 of
// the token whatever its length, hashed from the stack or not, and a
// token of usual length costs no allocation.
func TestTokenSumIsTheTokensSHA256(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 500, stackHashedTokenBytes, stackHashedTokenBytes + 1, DefaultMaxTokenBytes} {
		token := strings.Repeat("eyJhbGciOiJFUzI1NiJ9.", n/21+1)[:n]
		if got, want := tokenSum(token), sha256.Sum256([]byte(token)); got != want {
			t.Errorf("tokenSum of %d bytes = %x, want %x", n, got, want)
		}
	}
	token := strings.Repeat("a", 600)
	if allocs := testing.AllocsPerRun(100, func() { _ = tokenSum(token) }); allocs != 0 {
		t.Errorf("tokenSum of 600 bytes allocated %v times", allocs)
	}
}
