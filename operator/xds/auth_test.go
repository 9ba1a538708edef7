package xds

import (
	"context"
	"maps"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
)

func TestIdentityOf(t *testing.T) {
	ok := authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{DefaultAudience},
		User: authnv1.UserInfo{Username: "system:serviceaccount:shop:default", Extra: map[string]authnv1.ExtraValue{
			podNameExtra: {"orders-7d9f"}, podUIDExtra: {"0b6c7a4e-8f1d-4c2a-9e51-3f6d2b7a1c90"},
		}},
	}
	cases := []struct {
		name   string
		edit   func(*authnv1.TokenReviewStatus)
		wantNS string
	}{
		{"an authenticated ServiceAccount token for the audience gives its namespace", nil, "shop"},
		{"an unauthenticated token is refused", func(s *authnv1.TokenReviewStatus) { s.Authenticated = false }, ""},
		{"a token for another audience is refused", func(s *authnv1.TokenReviewStatus) { s.Audiences = []string{"https://kubernetes.default.svc"} }, ""},
		{"a token without audiences is refused", func(s *authnv1.TokenReviewStatus) { s.Audiences = nil }, ""},
		{"a user that is not a ServiceAccount is refused", func(s *authnv1.TokenReviewStatus) { s.User.Username = "alice" }, ""},
		{"a ServiceAccount user name with an invalid namespace is refused", func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount:Shop/x:default" }, ""},
		{"a ServiceAccount user name without a name is refused", func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount:shop" }, ""},
		{"a name that would smuggle another namespace is refused", func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount:shop:x:victim" }, ""},
		{"a ServiceAccount user name with an empty namespace is refused", func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount::default" }, ""},
		{"a token bound to no pod is refused", func(s *authnv1.TokenReviewStatus) { s.User.Extra = nil }, ""},
		{"a token naming a pod without its UID is refused", func(s *authnv1.TokenReviewStatus) { delete(s.User.Extra, podUIDExtra) }, ""},
		{"a token naming a pod UID without a pod name is refused", func(s *authnv1.TokenReviewStatus) { delete(s.User.Extra, podNameExtra) }, ""},
		{"two pod UIDs are refused", func(s *authnv1.TokenReviewStatus) { s.User.Extra[podUIDExtra] = []string{"a", "b"} }, ""},
		{"an empty pod UID is refused", func(s *authnv1.TokenReviewStatus) { s.User.Extra[podUIDExtra] = []string{""} }, ""},
		{"an invalid pod name is refused", func(s *authnv1.TokenReviewStatus) { s.User.Extra[podNameExtra] = []string{"Orders/x"} }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := ok
			st.Audiences = append([]string(nil), ok.Audiences...)
			st.User.Extra = maps.Clone(ok.User.Extra)
			if tc.edit != nil {
				tc.edit(&st)
			}
			id, err := identityOf(&authnv1.TokenReview{Status: st}, DefaultAudience)
			if tc.wantNS == "" {
				if err == nil {
					t.Fatalf("accepted as %+v", id)
				}
				return
			}
			if err != nil || id.Namespace != tc.wantNS || id.ServiceAccount != "default" ||
				id.PodName != "orders-7d9f" || id.PodUID != "0b6c7a4e-8f1d-4c2a-9e51-3f6d2b7a1c90" {
				t.Fatalf("identity = %+v, %v", id, err)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		want   string
	}{
		{"one bearer header gives its token", []string{"Bearer abc"}, "abc"},
		{"the scheme is case-insensitive", []string{"bearer abc"}, "abc"},
		{"no header gives none", nil, ""},
		{"two headers give none", []string{"Bearer a", "Bearer b"}, ""},
		{"another scheme gives none", []string{"Basic abc"}, ""},
		{"an empty token gives none", []string{"Bearer "}, ""},
		{"a token over 16 KiB gives none (never sent to TokenReview)", []string{"Bearer " + strings.Repeat("a", maxTokenBytes+1)}, ""},
		{"a token of 16 KiB is taken", []string{"Bearer " + strings.Repeat("a", maxTokenBytes)}, strings.Repeat("a", maxTokenBytes)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			md := metadata.MD{}
			for _, v := range tc.values {
				md.Append("authorization", v)
			}
			got, ok := bearerToken(metadata.NewIncomingContext(context.Background(), md))
			if got != tc.want || ok != (tc.want != "") {
				t.Fatalf("bearerToken = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}
