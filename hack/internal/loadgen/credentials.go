package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Credentials are the plaintext test credentials a load run sends, with the
// request shape the fixture's policy accepts. They are read from a 0600 file
// written by WriteFixtures and held in memory only: String redacts them and
// nothing in this package logs them.
type Credentials struct {
	Host         string   `json:"host"`
	Path         string   `json:"path"`
	APIKeyHeader string   `json:"apiKeyHeader"`
	APIKeys      []string `json:"apiKeys"`
	// Tokens are valid ES256 tokens.
	Tokens []string `json:"tokens"`
	// RSTokens are valid RS256 tokens.
	RSTokens []string `json:"rsTokens,omitempty"`
	// ExpiredTokens are correctly signed (RS256) and expired.
	ExpiredTokens []string `json:"expiredTokens,omitempty"`
}

// String summarises the credentials without any of them.
func (c *Credentials) String() string {
	return fmt.Sprintf("%d api keys, %d ES256, %d RS256 and %d expired tokens for %s%s (redacted)",
		len(c.APIKeys), len(c.Tokens), len(c.RSTokens), len(c.ExpiredTokens), c.Host, c.Path)
}

// GoString is String, so that %#v cannot print a credential either.
func (c *Credentials) GoString() string { return c.String() }

// Save writes the credentials to path, readable by the owner only.
func (c *Credentials) Save(path string) error {
	b, err := json.Marshal(c) //nolint:gosec // writing the test credentials is this function's purpose; the file is 0600
	if err != nil {
		return fmt.Errorf("encoding credentials: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing credentials: %w", err)
	}
	return nil
}

// LoadCredentials reads a credentials file written by Save.
func LoadCredentials(path string) (*Credentials, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the path is the operator's choice
	if err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	c := &Credentials{}
	if err := json.Unmarshal(b, c); err != nil {
		// The decoder's error may quote the input: do not wrap it.
		return nil, errors.New("decoding credentials: malformed JSON")
	}
	if c.Host == "" || c.Path == "" {
		return nil, errors.New("credentials: host and path are required")
	}
	if c.APIKeyHeader == "" {
		c.APIKeyHeader = "x-api-key"
	}
	return c, nil
}
