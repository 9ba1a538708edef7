package signingkeys

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

func TestSecretToSigningKeyMapsOnlyUncontrolledSecretsByName(t *testing.T) {
	yes := true
	cases := []struct {
		name   string
		secret *corev1.Secret
		want   string
	}{
		{"A foreign Secret blocking a SigningKey's name wakes that SigningKey.", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tokens-signing-keys"}}, "ns/tokens"},
		{"A Secret with another suffix wakes nobody.", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tokens-key"}}, ""},
		{"A controlled Secret is left to the owner watch.", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tokens-signing-keys",
			OwnerReferences: []metav1.OwnerReference{{Kind: "SigningKey", Name: "tokens", Controller: &yes}}}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reqs := secretToSigningKey(t.Context(), tc.secret)
			got := ""
			if len(reqs) == 1 {
				got = reqs[0].String()
			}
			if got != tc.want || len(reqs) > 1 {
				t.Fatalf("got %v, want %q", reqs, tc.want)
			}
		})
	}
}

func TestDedupeDropsPhaseEventsAlreadyTold(t *testing.T) {
	phase := []Change{
		{Reason: ReasonKeyActivated, KeyID: "a"},
		{Reason: ReasonKeyRetired, KeyID: "b"},
		{Reason: ReasonKeyRemoved, KeyID: "c"},
	}
	told := []Change{
		{Reason: ReasonKeyActivated, KeyID: "a"},
		{Reason: gatehousev1.ReasonKeyLost, KeyID: "c"},
	}
	got := dedupe(phase, told)
	if len(got) != 1 || got[0].KeyID != "b" {
		t.Fatalf("got %+v, want only the retirement of b", got)
	}
}

func TestSecretWriteErrorsNeverQuoteTheServerMessage(t *testing.T) {
	err := secretWriteError(&testStatusError{})
	if strings.Contains(err.Error(), "PRIVATE") {
		t.Fatalf("error %q quotes the server message", err)
	}
}

// testStatusError is an API error whose message could quote an object.
type testStatusError struct{}

func (*testStatusError) Error() string { return "Secret is invalid: data: PRIVATE" }
func (*testStatusError) Status() metav1.Status {
	return metav1.Status{Reason: metav1.StatusReasonInvalid, Message: "Secret is invalid: data: PRIVATE"}
}
