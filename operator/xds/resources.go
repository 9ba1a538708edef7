package xds

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// Type URLs of the resources served, one typeCache each per namespace.
const (
	APIKeyEntryType  = "type.googleapis.com/gatehouse.xds.v1alpha1.APIKeyEntry"
	IssuerKeySetType = "type.googleapis.com/gatehouse.xds.v1alpha1.IssuerKeySet"
	AuthPolicyType   = "type.googleapis.com/gatehouse.xds.v1alpha1.AuthPolicy"
)

// Types lists the type URLs served.
var Types = []string{APIKeyEntryType, IssuerKeySetType, AuthPolicyType}

// Defaults applied when an AuthPolicy leaves a field unset; the sidecar's
// snapshot builder applies the same.
const (
	defaultAPIKeyHeader = "x-api-key"
	defaultClockSkew    = 30 * time.Second
	maxClockSkew        = 5 * time.Minute
)

// APIKeyEntry builds the resource of one APIKey from apikeyformat.RecordOf,
// the one rule of what a validator may count: hashes, windows and state
// from status, the rest from spec. A key whose hash is not 64 hex digits is
// left out, so it is refused as unknown.
func APIKeyEntry(ak *gatehousev1.APIKey) *xdsv1alpha1.APIKeyEntry {
	rec := apikeyformat.RecordOf(ak)
	e := &xdsv1alpha1.APIKeyEntry{
		Name:      rec.Name,
		Subject:   rec.Subject,
		Scopes:    rec.Scopes,
		State:     apiKeyState(rec.State),
		ExpiresAt: timestamp(rec.ExpiresAt),
		Keys:      make([]*xdsv1alpha1.APIKeyHash, 0, len(rec.Keys)),
	}
	if rl := rec.RateLimit; rl != nil {
		e.RateLimit = &xdsv1alpha1.RateLimit{RequestsPerSecond: rl.RequestsPerSecond, Burst: rl.Burst}
	}
	for _, k := range rec.Keys {
		sum, err := hex.DecodeString(k.SHA256)
		if err != nil || len(sum) != 32 {
			continue
		}
		e.Keys = append(e.Keys, &xdsv1alpha1.APIKeyHash{
			KeyId:     k.KeyID,
			Sha256:    sum,
			NotBefore: timestamp(k.NotBefore),
			NotAfter:  timestamp(k.NotAfter),
		})
	}
	return e
}

func apiKeyState(s apikeyformat.State) xdsv1alpha1.APIKeyState {
	switch s {
	case apikeyformat.StateActive:
		return xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE
	case apikeyformat.StateRevoked:
		return xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED
	case apikeyformat.StateExpired:
		return xdsv1alpha1.APIKeyState_API_KEY_STATE_EXPIRED
	}
	return xdsv1alpha1.APIKeyState_API_KEY_STATE_UNSPECIFIED
}

func timestamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// IssuerKeySet builds the resource of one SigningKey from what its status
// publishes: status.jwks and status.issuer, which the operator alone
// writes, and leaves empty while the SigningKey is not reconciled or is
// refused its issuer (IssuerConflict, IssuerOutsidePrefix). No ConfigMap
// counts, whatever its labels (docs/security.md). It returns nil while
// nothing is published.
func IssuerKeySet(sk *gatehousev1.SigningKey) *xdsv1alpha1.IssuerKeySet {
	if sk.Status.JWKS == "" || sk.Status.Issuer == "" {
		return nil
	}
	return &xdsv1alpha1.IssuerKeySet{Name: sk.Name, Issuer: sk.Status.Issuer, Jwks: []byte(sk.Status.JWKS)}
}

// ConfigMapGetter returns a ConfigMap of the policy's namespace by name,
// or nil when there is none.
type ConfigMapGetter func(name string) *corev1.ConfigMap

// AuthPolicy compiles one AuthPolicy: defaults applied and JWKS documents
// of ConfigMaps put in place (only ConfigMaps labelled as JWKS records, as
// the sidecar reads them). Defects are listed in Problems and fail closed
// for what they affect.
func AuthPolicy(p *gatehousev1.AuthPolicy, configMap ConfigMapGetter) *xdsv1alpha1.AuthPolicy {
	out := &xdsv1alpha1.AuthPolicy{
		Name:            p.Name,
		CreatedAt:       timestamppb.New(p.CreationTimestamp.Time),
		Selector:        selector(&p.Spec.Selector),
		ApiKeysDisabled: p.Spec.APIKeys.Disabled,
		ApiKeyHeader:    strings.ToLower(p.Spec.APIKeys.Header),
	}
	if out.GetApiKeyHeader() == "" {
		out.ApiKeyHeader = defaultAPIKeyHeader
	}
	if pn := p.Spec.PathNormalization; pn != nil {
		out.MergeSlashes = pn.EmptySegments == gatehousev1.EmptySegmentsMerge
		out.StripPathParameters = pn.PathParameters == gatehousev1.PathParametersStrip
	}
	problemf := func(format string, args ...any) { out.Problems = append(out.Problems, fmt.Sprintf(format, args...)) }
	for i := range p.Spec.Issuers {
		out.Issuers = append(out.Issuers, issuer(&p.Spec.Issuers[i], configMap, problemf))
	}
	for i := range p.Spec.Rules {
		out.Rules = append(out.Rules, rule(&p.Spec.Rules[i]))
	}
	return out
}

func selector(s *metav1.LabelSelector) *xdsv1alpha1.LabelSelector {
	out := &xdsv1alpha1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, &xdsv1alpha1.LabelSelectorRequirement{
			Key: r.Key, Operator: string(r.Operator), Values: r.Values,
		})
	}
	return out
}

func issuer(ti *gatehousev1.TrustedIssuer, configMap ConfigMapGetter, problemf func(string, ...any)) *xdsv1alpha1.Issuer {
	skew := defaultClockSkew
	if ti.ClockSkew != nil {
		skew = min(max(ti.ClockSkew.Duration, 0), maxClockSkew)
	}
	out := &xdsv1alpha1.Issuer{Name: ti.Name, Issuer: ti.Issuer, Audiences: ti.Audiences, ClockSkew: durationpb.New(skew)}
	switch {
	case ti.SigningKeyRef != nil:
		out.Keys = &xdsv1alpha1.Issuer_SigningKey{SigningKey: ti.SigningKeyRef.Name}
	case ti.JWKS != nil && ti.JWKS.ConfigMapKeyRef != nil:
		ref := ti.JWKS.ConfigMapKeyRef
		cm := configMap(ref.Name)
		if cm == nil || cm.Labels[gatehousev1.LabelRecord] != gatehousev1.RecordJWKS {
			problemf("issuer %s: JWKS ConfigMap %s not found (it must carry the label %s=%s); its tokens are denied",
				ti.Name, ref.Name, gatehousev1.LabelRecord, gatehousev1.RecordJWKS)
			break
		}
		out.Keys = &xdsv1alpha1.Issuer_Jwks{Jwks: []byte(cm.Data[ref.Key])}
	case ti.JWKS != nil:
		out.Keys = &xdsv1alpha1.Issuer_Jwks{Jwks: []byte(ti.JWKS.Inline)}
	case ti.Discovery:
		out.Keys = &xdsv1alpha1.Issuer_Discovery{Discovery: true}
	case ti.JWKSURI != "":
		out.Keys = &xdsv1alpha1.Issuer_JwksUri{JwksUri: ti.JWKSURI}
	}
	return out
}

func rule(r *gatehousev1.Rule) *xdsv1alpha1.Rule {
	out := &xdsv1alpha1.Rule{
		Name:   r.Name,
		Paths:  r.Match.Paths,
		Action: action(r.Action),
		Scopes: r.Scopes,
	}
	for _, h := range r.Match.Hosts {
		out.Hosts = append(out.Hosts, strings.ToLower(h))
	}
	for _, m := range r.Match.Methods {
		out.Methods = append(out.Methods, strings.ToUpper(m))
	}
	if len(r.Credentials) == 0 {
		out.AcceptApiKey, out.AcceptJwt = true, true
	}
	for _, c := range r.Credentials {
		switch c {
		case gatehousev1.CredentialAPIKey:
			out.AcceptApiKey = true
		case gatehousev1.CredentialJWT:
			out.AcceptJwt = true
		}
	}
	for _, c := range r.Claims {
		out.Claims = append(out.Claims, &xdsv1alpha1.ClaimRequirement{Name: c.Name, Values: c.Values})
	}
	return out
}

func action(a gatehousev1.RuleAction) xdsv1alpha1.Action {
	switch a {
	case "", gatehousev1.ActionAuthenticate:
		return xdsv1alpha1.Action_ACTION_AUTHENTICATE
	case gatehousev1.ActionAllowAnonymous:
		return xdsv1alpha1.Action_ACTION_ALLOW_ANONYMOUS
	case gatehousev1.ActionDeny:
		return xdsv1alpha1.Action_ACTION_DENY
	}
	return xdsv1alpha1.Action_ACTION_UNSPECIFIED
}
