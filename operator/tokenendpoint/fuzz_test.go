package tokenendpoint

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzTokenRequest sends arbitrary bodies and Authorization headers: the
// endpoint never panics, answers a known status with an RFC 6749 body and
// no-store, and never echoes what it was sent.
func FuzzTokenRequest(f *testing.F) {
	fx := newFixture(f)
	good := fx.key.Plaintext()
	f.Add("grant_type=client_credentials&scope=orders:read", "Basic "+b64(":"+good))
	f.Add("grant_type=client_credentials&client_secret="+good, "")
	f.Add("grant_type=password&username=a&password=b", "")
	f.Add("grant_type=client_credentials&scope=%zz", "Basic !!!")
	f.Add("grant_type=client_credentials&grant_type=client_credentials", "Bearer x")
	f.Add(strings.Repeat("a=b&", 3000), "Basic "+b64("gth_x:gth_"))
	f.Fuzz(func(t *testing.T, body, authorization string) {
		req := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if authorization != "" {
			req.Header["Authorization"] = []string{authorization}
		}
		req.RemoteAddr = "192.0.2.7:1234"
		rec := httptest.NewRecorder()
		fx.srv.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		default:
			t.Fatalf("status %d", rec.Code)
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("Cache-Control %q", rec.Header().Get("Cache-Control"))
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("body is not JSON: %q", rec.Body.String())
		}
		if rec.Code != http.StatusOK {
			if _, ok := out["error"].(string); !ok {
				t.Fatalf("error body without error: %q", rec.Body.String())
			}
			if len(body) >= 8 && strings.Contains(rec.Body.String(), body) {
				t.Fatalf("the answer echoes the request body")
			}
		}
	})
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
