package server

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

func TestFirstValueIsTheFirstOfValuesAndTheirNumber(t *testing.T) {
	requests := []*authv3.AttributeContext_HttpRequest{
		{},
		{Headers: map[string]string{"authorization": "Bearer a", "x-api-key": ""}},
		{Headers: map[string]string{"Authorization": "upper-case keys are not found in the map"}},
		{HeaderMap: rawHeaders("Authorization", "Bearer a", "x-api-key", "k1", "X-API-KEY", "k2", "x-empty", "")},
		{Headers: map[string]string{"authorization": "the map is not read when header_map is set"}, HeaderMap: rawHeaders("x-api-key", "k")},
	}
	for _, r := range requests {
		h := grpcHeaders{r}
		for _, name := range []string{"authorization", "x-api-key", "x-empty", "absent"} {
			vs := h.Values(name)
			first, n := h.FirstValue(name)
			if n != len(vs) || (n > 0 && first != vs[0]) || (n == 0 && first != "") {
				t.Errorf("%v: FirstValue(%q) = %q, %d; Values = %q", r, name, first, n, vs)
			}
		}
	}
}

// rawHeaders is a header_map of the name/value pairs kv; a pair with an
// empty value carries its value as raw_value instead ("raw:" + name).
func rawHeaders(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hv := &corev3.HeaderValue{Key: kv[i], Value: kv[i+1]}
		if kv[i+1] == "" {
			hv.RawValue = []byte("raw:" + kv[i])
		}
		m.Headers = append(m.Headers, hv)
	}
	return m
}
