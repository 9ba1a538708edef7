package keyring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// IssuerIndex is the cache field index of SigningKeys by issuer (host and
// path, see IssuerKey). The controller, discovery and the token endpoint
// find the claimants of an issuer with it.
const IssuerIndex = "gatehouse.signingkey.issuer"

// IndexIssuer registers IssuerIndex with a manager's field indexer.
func IndexIssuer(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &gatehousev1.SigningKey{}, IssuerIndex, IssuerIndexValue); err != nil {
		return fmt.Errorf("indexing signingkeys by issuer: %w", err)
	}
	return nil
}

// IssuerIndexValue extracts the IssuerIndex value of a SigningKey.
func IssuerIndexValue(o client.Object) []string {
	sk, ok := o.(*gatehousev1.SigningKey)
	if !ok {
		return nil
	}
	if key, ok := IssuerKeyOf(sk.Spec.Issuer); ok {
		return []string{key}
	}
	return nil
}

// IssuerKeyOf is the IssuerKey of an https issuer URL.
func IssuerKeyOf(issuer string) (string, bool) {
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", false
	}
	return IssuerKey(u.Host, u.Path), true
}

// IssuerKey normalises a host (with optional port) and path into the key
// requests and issuers are matched on: lower-case host, no default port,
// path without a trailing slash.
func IssuerKey(host, path string) string {
	host = strings.ToLower(host)
	if h, port, err := net.SplitHostPort(host); err == nil && (port == "443" || port == "80") {
		host = h
	}
	return host + strings.TrimSuffix(path, "/")
}

// IssuerPrefix is the operator's --issuer-prefix: a URL prefix containing
// "{namespace}" under which every issuer of that namespace must sit, for
// example "https://auth.example.com/{namespace}/". Empty allows any issuer.
type IssuerPrefix string

// NamespacePlaceholder is what IssuerPrefix replaces with the namespace.
const NamespacePlaceholder = "{namespace}"

// Validate checks the prefix itself: an https URL whose path holds the
// namespace placeholder as a whole segment and ends with "/", so that
// namespace "a" can never reach the issuers of namespace "ab".
func (p IssuerPrefix) Validate() error {
	if p == "" {
		return nil
	}
	s := string(p)
	if !strings.HasPrefix(s, "https://") || !strings.HasSuffix(s, "/") || !strings.Contains(s, "/"+NamespacePlaceholder+"/") {
		return fmt.Errorf("issuer prefix %q must be an https URL ending in \"/\" with %s as a whole path segment", s, NamespacePlaceholder)
	}
	return nil
}

// Allows reports whether issuer may be claimed by a SigningKey of
// namespace. The issuer must be a plain https URL (no dot segments, empty
// segments or percent-encoding, which verifiers might read differently)
// whose host (case-insensitive) and path start with the prefix.
func (p IssuerPrefix) Allows(namespace, issuer string) error {
	if p == "" {
		return nil
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("spec.issuer is not a plain https URL")
	}
	if u.RawPath != "" || strings.Contains(u.Path, "//") || slices.Contains(strings.Split(u.Path, "/"), "..") || slices.Contains(strings.Split(u.Path, "/"), ".") {
		return errors.New("spec.issuer has an encoded, empty or dot path segment")
	}
	want := strings.ReplaceAll(string(p), NamespacePlaceholder, namespace)
	got := "https://" + strings.ToLower(u.Host) + u.Path
	if i := strings.Index(want[len("https://"):], "/"); i >= 0 {
		want = strings.ToLower(want[:len("https://")+i]) + want[len("https://")+i:]
	}
	if !strings.HasPrefix(got+"/", want) && got != strings.TrimSuffix(want, "/") {
		return fmt.Errorf("spec.issuer must start with %s", want)
	}
	return nil
}

// ClaimsBefore reports whether a's claim to an issuer precedes b's: the
// older SigningKey wins (creationTimestamp), then namespace/name.
func ClaimsBefore(a, b *gatehousev1.SigningKey) bool {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c < 0
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// IssuerOwner picks, among SigningKeys that name the same issuer, the one
// that owns it: the oldest live claimant whose issuer the prefix allows.
// A SigningKey outside its prefix or being deleted claims nothing, so it
// can neither take nor block an issuer. Nil when nobody owns it.
func IssuerOwner(claimants []gatehousev1.SigningKey, prefix IssuerPrefix) *gatehousev1.SigningKey {
	var owner *gatehousev1.SigningKey
	for i := range claimants {
		sk := &claimants[i]
		if sk.DeletionTimestamp != nil || prefix.Allows(sk.Namespace, sk.Spec.Issuer) != nil {
			continue
		}
		if owner == nil || ClaimsBefore(sk, owner) {
			owner = sk
		}
	}
	return owner
}

// Claimants lists, through r (a cache with IssuerIndex), the SigningKeys
// naming issuer.
func Claimants(ctx context.Context, r client.Reader, issuer string) ([]gatehousev1.SigningKey, error) {
	key, ok := IssuerKeyOf(issuer)
	if !ok {
		return nil, nil
	}
	list := &gatehousev1.SigningKeyList{}
	if err := r.List(ctx, list, client.MatchingFields{IssuerIndex: key}); err == nil {
		return list.Items, nil
	}
	// A reader without the index (a direct client, in tests and tools):
	// list every SigningKey and filter.
	if err := r.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing signingkeys: %w", err)
	}
	return slices.DeleteFunc(list.Items, func(sk gatehousev1.SigningKey) bool {
		k, ok := IssuerKeyOf(sk.Spec.Issuer)
		return !ok || k != key
	}), nil
}

// Owns reports whether sk is the owner of its issuer among claimants.
func Owns(sk *gatehousev1.SigningKey, claimants []gatehousev1.SigningKey, prefix IssuerPrefix) bool {
	owner := IssuerOwner(claimants, prefix)
	return owner != nil && owner.UID == sk.UID && owner.Namespace == sk.Namespace && owner.Name == sk.Name
}

// Served is the public state of a SigningKey that validators may trust:
// the JWKS and issuer the controller wrote into its status. ok is false
// when the status publishes nothing, or publishes it for an issuer other
// than the spec's (the controller has not yet looked at a changed spec).
func Served(sk *gatehousev1.SigningKey) (jwks []byte, issuer string, ok bool) {
	if sk.Status.JWKS == "" || sk.Status.Issuer == "" || sk.Status.Issuer != sk.Spec.Issuer {
		return nil, "", false
	}
	return []byte(sk.Status.JWKS), sk.Status.Issuer, true
}
