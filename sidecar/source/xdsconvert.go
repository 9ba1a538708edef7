package source

import (
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// The xDS source hands the snapshot builder the same inputs the other
// sources do: API key records, JWKS ConfigMaps and AuthPolicies, rebuilt
// from the resources the operator compiled.

// recordFromXDS is the record of an APIKeyEntry. A key whose hash is not
// 32 bytes is left out: refused as unknown.
func recordFromXDS(e *xdsv1alpha1.APIKeyEntry, ns string) *apikeyformat.Record {
	r := &apikeyformat.Record{
		Version:   apikeyformat.RecordVersion,
		Name:      e.GetName(),
		Namespace: ns,
		Subject:   e.GetSubject(),
		Scopes:    e.GetScopes(),
		State:     stateFromXDS(e.GetState()),
		ExpiresAt: timeOf(e.GetExpiresAt()),
		Keys:      make([]apikeyformat.RecordKey, 0, len(e.GetKeys())),
	}
	if rl := e.GetRateLimit(); rl != nil {
		r.RateLimit = &apikeyformat.RecordRateLimit{RequestsPerSecond: rl.GetRequestsPerSecond(), Burst: rl.GetBurst()}
	}
	for _, k := range e.GetKeys() {
		if len(k.GetSha256()) != 32 {
			continue
		}
		r.Keys = append(r.Keys, apikeyformat.RecordKey{
			KeyID:     k.GetKeyId(),
			SHA256:    hex.EncodeToString(k.GetSha256()),
			NotBefore: timeOf(k.GetNotBefore()),
			NotAfter:  timeOf(k.GetNotAfter()),
		})
	}
	return r
}

// stateFromXDS maps every state but active to one that refuses keys; an
// unknown one becomes invalid, which Record.Check refuses too.
func stateFromXDS(s xdsv1alpha1.APIKeyState) apikeyformat.State {
	switch s {
	case xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE:
		return apikeyformat.StateActive
	case xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED:
		return apikeyformat.StateRevoked
	case xdsv1alpha1.APIKeyState_API_KEY_STATE_EXPIRED:
		return apikeyformat.StateExpired
	}
	return "Invalid"
}

func timeOf(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

// signingKeyFromXDS is the SigningKey the snapshot builder expects: its
// status publishing the key set's JWKS and issuer, as the operator wrote
// them.
func signingKeyFromXDS(ks *xdsv1alpha1.IssuerKeySet, ns string) *gatehousev1.SigningKey {
	return &gatehousev1.SigningKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ks.GetName()},
		Status:     gatehousev1.SigningKeyStatus{Issuer: ks.GetIssuer(), JWKS: string(ks.GetJwks())},
	}
}

// policyFromXDS is the AuthPolicy a compiled policy came from, defaults
// applied. An issuer whose keys the operator could not resolve gets none:
// its tokens are refused.
func policyFromXDS(p *xdsv1alpha1.AuthPolicy, ns string) *gatehousev1.AuthPolicy {
	out := &gatehousev1.AuthPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.GetName(), CreationTimestamp: metav1.NewTime(p.GetCreatedAt().AsTime())},
		Spec: gatehousev1.AuthPolicySpec{
			Selector: selectorFromXDS(p.GetSelector()),
			APIKeys:  gatehousev1.APIKeySource{Disabled: p.GetApiKeysDisabled(), Header: p.GetApiKeyHeader()},
		},
	}
	if p.GetMergeSlashes() || p.GetStripPathParameters() {
		pn := &gatehousev1.PathNormalization{EmptySegments: gatehousev1.EmptySegmentsReject, PathParameters: gatehousev1.PathParametersReject}
		if p.GetMergeSlashes() {
			pn.EmptySegments = gatehousev1.EmptySegmentsMerge
		}
		if p.GetStripPathParameters() {
			pn.PathParameters = gatehousev1.PathParametersStrip
		}
		out.Spec.PathNormalization = pn
	}
	for _, iss := range p.GetIssuers() {
		out.Spec.Issuers = append(out.Spec.Issuers, issuerFromXDS(iss))
	}
	for _, r := range p.GetRules() {
		out.Spec.Rules = append(out.Spec.Rules, ruleFromXDS(r))
	}
	return out
}

func selectorFromXDS(s *xdsv1alpha1.LabelSelector) metav1.LabelSelector {
	out := metav1.LabelSelector{MatchLabels: s.GetMatchLabels()}
	for _, r := range s.GetMatchExpressions() {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: r.GetKey(), Operator: metav1.LabelSelectorOperator(r.GetOperator()), Values: r.GetValues(),
		})
	}
	return out
}

func issuerFromXDS(iss *xdsv1alpha1.Issuer) gatehousev1.TrustedIssuer {
	out := gatehousev1.TrustedIssuer{
		Name: iss.GetName(), Issuer: iss.GetIssuer(), Audiences: iss.GetAudiences(),
		ClockSkew: &metav1.Duration{Duration: iss.GetClockSkew().AsDuration()},
	}
	switch k := iss.GetKeys().(type) {
	case *xdsv1alpha1.Issuer_SigningKey:
		out.SigningKeyRef = &gatehousev1.LocalObjectReference{Name: k.SigningKey}
	case *xdsv1alpha1.Issuer_Jwks:
		out.JWKS = &gatehousev1.StaticJWKS{Inline: string(k.Jwks)}
	case *xdsv1alpha1.Issuer_Discovery:
		out.Discovery = k.Discovery
	case *xdsv1alpha1.Issuer_JwksUri:
		out.JWKSURI = k.JwksUri
	default:
		// No keys: an empty JWKS refuses every token of the issuer.
		out.JWKS = &gatehousev1.StaticJWKS{Inline: `{"keys":[]}`}
	}
	return out
}

func ruleFromXDS(r *xdsv1alpha1.Rule) gatehousev1.Rule {
	out := gatehousev1.Rule{
		Name:   r.GetName(),
		Match:  gatehousev1.RuleMatch{Hosts: r.GetHosts(), Paths: r.GetPaths(), Methods: r.GetMethods()},
		Scopes: r.GetScopes(),
	}
	switch r.GetAction() {
	case xdsv1alpha1.Action_ACTION_AUTHENTICATE:
		out.Action = gatehousev1.ActionAuthenticate
	case xdsv1alpha1.Action_ACTION_ALLOW_ANONYMOUS:
		out.Action = gatehousev1.ActionAllowAnonymous
	default:
		out.Action = gatehousev1.ActionDeny
	}
	// Credentials listed explicitly: an empty list would accept both.
	if r.GetAcceptApiKey() {
		out.Credentials = append(out.Credentials, gatehousev1.CredentialAPIKey)
	}
	if r.GetAcceptJwt() {
		out.Credentials = append(out.Credentials, gatehousev1.CredentialJWT)
	}
	if len(out.Credentials) == 0 {
		// Neither accepted: the rule can only deny.
		out.Action = gatehousev1.ActionDeny
	}
	for _, c := range r.GetClaims() {
		out.Claims = append(out.Claims, gatehousev1.ClaimRequirement{Name: c.GetName(), Values: c.GetValues()})
	}
	return out
}

// namedMessage is a resource that carries its own name.
type namedMessage interface {
	proto.Message
	GetName() string
}

// unmarshalNamed decodes a resource and checks that it carries the name
// it was sent under.
func unmarshalNamed(value []byte, m namedMessage, name string) error {
	if err := proto.Unmarshal(value, m); err != nil {
		return fmt.Errorf("decoding %s: %w", name, err)
	}
	if m.GetName() != name {
		return fmt.Errorf("resource %s carries the name %q", name, m.GetName())
	}
	return nil
}
