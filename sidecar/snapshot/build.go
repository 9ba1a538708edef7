package snapshot

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/canonical"
)

// Defaults applied when an AuthPolicy leaves a field unset.
const (
	DefaultAPIKeyHeader = "x-api-key"
	DefaultClockSkew    = 30 * time.Second
	MaxClockSkew        = 5 * time.Minute
)

// Inputs are the objects a snapshot is built from: the APIKeys, the
// SigningKeys, the JWKS ConfigMaps and the AuthPolicies of the sidecar's
// namespace.
type Inputs struct {
	// APIKeys are read for their spec (subject, scopes, expiry, disabled,
	// rate limit) and their status (hashes, windows, state), which only the
	// operator can write. ConfigMaps never supply API keys: anyone who may
	// write ConfigMaps could forge one.
	APIKeys []*gatehousev1.APIKey
	// Records are APIKeys already compiled by apikeyformat.RecordOf, as
	// the files source delivers them so as not to hold 100,000 decoded
	// APIKeys at once. They count exactly like APIKeys.
	Records    []CompiledAPIKey
	ConfigMaps []*corev1.ConfigMap
	Policies   []*gatehousev1.AuthPolicy
	// SigningKeys supply the JWKS of issuers named by signingKeyRef: the
	// JWKS and issuer the operator wrote into their status, nothing else.
	SigningKeys []*gatehousev1.SigningKey
}

// CompiledAPIKey is apikeyformat.RecordOf of one APIKey, with a version
// that changes whenever the APIKey does (its content hash, for files).
type CompiledAPIKey struct {
	Version string
	Record  *apikeyformat.Record
}

// keySource is one APIKey to index, as an object or already compiled.
type keySource struct {
	name    string
	version [sha256.Size]byte
	ak      *gatehousev1.APIKey
	rec     *apikeyformat.Record
}

// RemoteKeySets supplies the key sets of issuers whose keys are fetched over
// the network. The same issuer must yield the same KeySet across builds so
// that fetched keys survive rebuilds.
type RemoteKeySets interface {
	// Discovery is the key set found through OIDC discovery of issuer.
	Discovery(issuer string) KeySet
	// URI is the key set served at jwksURI.
	URI(jwksURI string) KeySet
}

// BuildOptions configure a Builder.
type BuildOptions struct {
	// Namespace is the sidecar's namespace; objects of other namespaces are
	// ignored. Objects without a namespace are taken to be in it.
	Namespace string
	// PodLabels are the labels of the sidecar's pod, matched against
	// AuthPolicy selectors.
	PodLabels labels.Set
	// Remote supplies remote key sets; nil gives remote issuers no keys.
	Remote RemoteKeySets
	// Clock stamps BuiltAt; time.Now when nil.
	Clock func() time.Time
}

// Builder builds snapshots. It remembers what it compiled last time (APIKeys
// by object version, JWKS by content) so that a rebuild after one change
// costs map operations, not re-decoding 100,000 records. A Builder is not
// safe for concurrent use: one goroutine (the reload loop) owns it.
type Builder struct {
	opts BuildOptions
	gen  uint64
	// prev is the record table of the last build; memo maps the hash of
	// an APIKey's name and version to its record there. Neither holds a
	// pointer per record (see records.go).
	prev *recordTable
	memo map[[sha256.Size]byte]uint32
	jwks map[[sha256.Size]byte]jwksMemo
	// live is the state Apply changes; nil until the first Apply.
	live *liveRecords
	// minOverlay overrides the overlay's smallest bound (tests).
	minOverlay int
}

type jwksMemo struct {
	set      *StaticKeySet
	problems []string
	err      error
}

// NewBuilder returns a Builder.
func NewBuilder(opts BuildOptions) *Builder {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	return &Builder{opts: opts, jwks: map[[sha256.Size]byte]jwksMemo{}}
}

// Build compiles inputs into a new snapshot. Defects in single objects are
// reported in Snapshot.Problems and fail closed for what they affect.
func (b *Builder) Build(in Inputs) *Snapshot {
	b.gen++
	s := &Snapshot{Generation: b.gen, BuiltAt: b.opts.Clock()}
	var problems []string
	problemf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	apiKeys := make([]keySource, 0, len(in.APIKeys)+len(in.Records))
	for _, ak := range in.APIKeys {
		if b.inNamespace(ak.Namespace) {
			apiKeys = append(apiKeys, keySource{name: ak.Name, version: apiKeyVersion(ak), ak: ak})
		}
	}
	for _, c := range in.Records {
		if b.inNamespace(c.Record.Namespace) {
			apiKeys = append(apiKeys, keySource{name: c.Record.Name, version: compiledVersion(c), rec: c.Record})
		}
	}
	s.records = b.indexRecords(apiKeys, problemf)
	s.keys = len(s.records.index)
	s.Policy = b.policyOf(PolicyInputs{ConfigMaps: in.ConfigMaps, Policies: in.Policies, SigningKeys: in.SigningKeys}, problemf)
	s.Problems = problems
	// Apply continues from its own state, not from this build's.
	b.live = nil
	return s
}

// PolicyInputs are the inputs of the policy: the AuthPolicies, and the
// SigningKeys and JWKS ConfigMaps their issuers name (see Inputs).
type PolicyInputs struct {
	ConfigMaps  []*corev1.ConfigMap
	Policies    []*gatehousev1.AuthPolicy
	SigningKeys []*gatehousev1.SigningKey
}

// policyOf compiles the policy that selects the pod, nil when none does.
func (b *Builder) policyOf(in PolicyInputs, problemf func(string, ...any)) *Policy {
	p := b.selectPolicy(in.Policies)
	if p == nil {
		return nil
	}
	signingKeys := map[string]*gatehousev1.SigningKey{}
	for _, sk := range in.SigningKeys {
		if b.inNamespace(sk.Namespace) {
			signingKeys[sk.Name] = sk
		}
	}
	byName := map[string]*corev1.ConfigMap{}
	for _, cm := range in.ConfigMaps {
		if b.inNamespace(cm.Namespace) {
			byName[cm.Name] = cm
		}
	}
	return b.compilePolicy(p, signingKeys, byName, problemf)
}

func (b *Builder) inNamespace(ns string) bool {
	return ns == "" || b.opts.Namespace == "" || ns == b.opts.Namespace
}

// indexRecords compiles the APIKeys into the record table. An APIKey
// unchanged since the last build (same UID and resourceVersion) is copied
// from the last table, not compiled again.
func (b *Builder) indexRecords(apiKeys []keySource, problemf func(string, ...any)) *recordTable {
	tb := newTableBuilder(len(apiKeys))
	memo := make(map[[sha256.Size]byte]uint32, len(apiKeys))
	index := make(map[keyID]uint32, len(apiKeys))
	conflicts := map[keyID]bool{}
	// Sorted so that problems come out in a stable order.
	sort.Slice(apiKeys, func(i, j int) bool { return apiKeys[i].name < apiKeys[j].name })
	for _, src := range apiKeys {
		version := src.version
		var idx uint32
		if i, ok := b.memo[version]; ok {
			idx = tb.copyRecord(b.prev, i)
		} else if src.rec != nil {
			idx = tb.addRecord(src.rec)
		} else {
			idx = tb.addRecord(apikeyformat.RecordOf(src.ak))
		}
		memo[version] = idx
		info := tb.t.recs[idx]
		for ki := info.firstKey; ki < info.firstKey+info.nKeys; ki++ {
			k := &tb.t.keys[ki]
			if _, dup := index[k.id]; dup || conflicts[k.id] {
				// Two APIKeys of this namespace listing one key ID is a
				// conflict nobody can resolve safely here: deny the key ID
				// altogether. Only the operator writes status, so this
				// takes two APIKeys given the same spec.hash.
				conflicts[k.id] = true
				delete(index, k.id)
				problemf(conflictProblem, keyIDEncoding.EncodeToString(k.id[:]))
				continue
			}
			index[k.id] = ki
		}
	}
	t := tb.finish(index)
	b.prev, b.memo = t, memo
	return t
}

// conflictProblem reports a key ID listed more than once.
const conflictProblem = "key ID %s appears in more than one APIKey; it is denied"

// compiledVersion identifies a compiled APIKey: its name and version.
func compiledVersion(c CompiledAPIKey) [sha256.Size]byte {
	return sha256.Sum256([]byte(c.Record.Namespace + "/" + c.Record.Name + "\x00\x02" + c.Version))
}

// apiKeyVersion identifies what an APIKey says: its name with its UID and
// resourceVersion for objects of the API server, else its content.
func apiKeyVersion(ak *gatehousev1.APIKey) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(ak.Namespace + "/" + ak.Name))
	h.Write([]byte{0})
	if ak.ResourceVersion != "" {
		h.Write([]byte(string(ak.UID) + "/" + ak.ResourceVersion))
	} else {
		// Test inputs without a version: hash what RecordOf reads.
		doc, _ := json.Marshal(struct {
			Spec   *gatehousev1.APIKeySpec   `json:"spec"`
			Status *gatehousev1.APIKeyStatus `json:"status"`
			Del    *metav1.Time              `json:"del"`
		}{&ak.Spec, &ak.Status, ak.DeletionTimestamp})
		h.Write([]byte{1})
		h.Write(doc)
	}
	var v [sha256.Size]byte
	h.Sum(v[:0])
	return v
}

// selectPolicy picks the oldest policy whose selector matches the pod.
func (b *Builder) selectPolicy(policies []*gatehousev1.AuthPolicy) *gatehousev1.AuthPolicy {
	var best *gatehousev1.AuthPolicy
	for _, p := range policies {
		if !b.inNamespace(p.Namespace) || p.DeletionTimestamp != nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.Selector)
		if err != nil || !sel.Matches(b.opts.PodLabels) {
			continue
		}
		if best == nil || older(p, best) {
			best = p
		}
	}
	return best
}

func older(a, b *gatehousev1.AuthPolicy) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return a.Name < b.Name
}

func (b *Builder) compilePolicy(p *gatehousev1.AuthPolicy, signingKeys map[string]*gatehousev1.SigningKey, byName map[string]*corev1.ConfigMap, problemf func(string, ...any)) *Policy {
	cp := &Policy{
		Namespace:       p.Namespace,
		Name:            p.Name,
		APIKeysDisabled: p.Spec.APIKeys.Disabled,
		APIKeyHeader:    strings.ToLower(p.Spec.APIKeys.Header),
		byIss:           map[string]*Issuer{},
	}
	if cp.APIKeyHeader == "" {
		cp.APIKeyHeader = DefaultAPIKeyHeader
	}
	for i := range p.Spec.Issuers {
		ti := &p.Spec.Issuers[i]
		iss := b.compileIssuer(ti, signingKeys, byName, problemf)
		if iss == nil {
			continue
		}
		if _, dup := cp.byIss[iss.Issuer]; dup {
			problemf("AuthPolicy %s: issuer %s repeats the iss of an earlier entry and is ignored", p.Name, ti.Name)
			continue
		}
		cp.byIss[iss.Issuer] = iss
		cp.Issuers = append(cp.Issuers, iss)
	}
	if pn := p.Spec.PathNormalization; pn != nil {
		cp.PathOptions = canonical.Options{
			MergeSlashes:        pn.EmptySegments == gatehousev1.EmptySegmentsMerge,
			StripPathParameters: pn.PathParameters == gatehousev1.PathParametersStrip,
		}
	}
	for i := range p.Spec.Rules {
		cr := compileRule(&p.Spec.Rules[i])
		cr.Paths = canonicalPatterns(p.Name, cr.Name, cr.Paths, cp.PathOptions, problemf)
		cp.Rules = append(cp.Rules, cr)
	}
	return cp
}

// canonicalPatterns puts rule path patterns in the canonical form requests
// are matched in, so that "/%61dmin" in a rule is "/admin". A pattern that
// has no canonical form (a dot segment, an encoded "/") is replaced by one
// that no canonical path can equal or start with, so the rule never
// matches by that path (and a rule whose every path is unusable never
// matches at all, rather than matching every path).
func canonicalPatterns(policy, rule string, patterns []string, opts canonical.Options, problemf func(string, ...any)) []string {
	out := make([]string, 0, len(patterns))
	for _, p := range patterns {
		c, ok := canonicalPattern(p, opts)
		if !ok {
			problemf("AuthPolicy %s: rule %q: path pattern %q has no canonical form and matches nothing", policy, rule, p)
			c = unmatchablePattern
		}
		out = append(out, c)
	}
	return out
}

func canonicalPattern(p string, opts canonical.Options) (string, bool) {
	if p == "*" {
		return p, true
	}
	if p == "" || strings.ContainsAny(p, "?#") {
		return "", false
	}
	if !strings.HasSuffix(p, "*") {
		c, err := canonical.Path(p, opts)
		return c, err == nil
	}
	// A prefix's last segment is incomplete: canonicalise it with a letter
	// in place of the "*", so that "/api/.*" is not taken for a dot
	// segment, and put the "*" back.
	c, err := canonical.Path(p[:len(p)-1]+"x", opts)
	if err != nil || !strings.HasSuffix(c, "x") {
		return "", false
	}
	return c[:len(c)-1] + "*", true
}

// unmatchablePattern can never equal a canonical path: those never hold
// a raw "?".
const unmatchablePattern = "/?"

func (b *Builder) compileIssuer(ti *gatehousev1.TrustedIssuer, signingKeys map[string]*gatehousev1.SigningKey, byName map[string]*corev1.ConfigMap, problemf func(string, ...any)) *Issuer {
	iss := &Issuer{Name: ti.Name, Issuer: ti.Issuer, Audiences: append([]string(nil), ti.Audiences...), ClockSkew: DefaultClockSkew, Keys: EmptyKeySet}
	if ti.ClockSkew != nil {
		iss.ClockSkew = min(max(ti.ClockSkew.Duration, 0), MaxClockSkew)
	}
	switch {
	case ti.SigningKeyRef != nil:
		sk := signingKeys[ti.SigningKeyRef.Name]
		if sk == nil {
			problemf("issuer %s: no SigningKey %s; its tokens are denied", ti.Name, ti.SigningKeyRef.Name)
			return nil
		}
		// Only what the operator wrote into the status counts: the JWKS
		// and the issuer it was published for. A SigningKey that is not
		// published (not yet reconciled, or in conflict over its issuer)
		// verifies nothing.
		if sk.Status.JWKS == "" || sk.Status.Issuer == "" {
			problemf("issuer %s: SigningKey %s publishes no JWKS in its status; its tokens are denied", ti.Name, ti.SigningKeyRef.Name)
			return nil
		}
		iss.Issuer = sk.Status.Issuer
		iss.Keys = b.parseJWKS(ti.Name, sk.Status.JWKS, problemf)
	case ti.JWKS != nil && ti.JWKS.ConfigMapKeyRef != nil:
		ref := ti.JWKS.ConfigMapKeyRef
		cm := byName[ref.Name]
		if cm == nil {
			problemf("issuer %s: JWKS ConfigMap %s not found (it must carry the label %s=%s); its tokens are denied", ti.Name, ref.Name, gatehousev1.LabelRecord, gatehousev1.RecordJWKS)
			break
		}
		iss.Keys = b.parseJWKS(ti.Name, cm.Data[ref.Key], problemf)
	case ti.JWKS != nil:
		iss.Keys = b.parseJWKS(ti.Name, ti.JWKS.Inline, problemf)
	case ti.Discovery || ti.JWKSURI != "":
		if b.opts.Remote == nil {
			problemf("issuer %s: remote key fetching is disabled; its tokens are denied", ti.Name)
			break
		}
		if ti.Discovery {
			iss.Keys = b.opts.Remote.Discovery(ti.Issuer)
		} else {
			iss.Keys = b.opts.Remote.URI(ti.JWKSURI)
		}
	}
	if iss.Issuer == "" {
		problemf("issuer %s has no iss value; it is ignored", ti.Name)
		return nil
	}
	auds := append([]string(nil), iss.Audiences...)
	sort.Strings(auds)
	iss.Fingerprint = fmt.Sprintf("%s\x00%s\x00%s\x00%d", iss.Name, iss.Issuer, strings.Join(auds, "\x00"), iss.ClockSkew)
	return iss
}

func (b *Builder) parseJWKS(issuerName, doc string, problemf func(string, ...any)) KeySet {
	sum := sha256.Sum256([]byte(doc))
	memo, ok := b.jwks[sum]
	if !ok {
		set, problems, err := ParseJWKS([]byte(doc))
		memo = jwksMemo{set: set, problems: problems, err: err}
		// Only a handful of JWKS documents exist at a time; drop old ones
		// when the memo grows so rotations do not accumulate.
		if len(b.jwks) > 256 {
			clear(b.jwks)
		}
		b.jwks[sum] = memo
	}
	for _, p := range memo.problems {
		problemf("issuer %s: %s", issuerName, p)
	}
	if memo.err != nil {
		problemf("issuer %s: unusable JWKS, its tokens are denied: %v", issuerName, memo.err)
		return EmptyKeySet
	}
	return memo.set
}

func compileRule(r *gatehousev1.Rule) *Rule {
	cr := &Rule{
		Name:   r.Name,
		Hosts:  lowerAll(r.Match.Hosts),
		Paths:  append([]string(nil), r.Match.Paths...),
		Action: r.Action,
		Scopes: append([]string(nil), r.Scopes...),
		Claims: append([]gatehousev1.ClaimRequirement(nil), r.Claims...),
	}
	for _, m := range r.Match.Methods {
		cr.Methods = append(cr.Methods, strings.ToUpper(m))
	}
	if cr.Action == "" {
		cr.Action = gatehousev1.ActionAuthenticate
	}
	if len(r.Credentials) == 0 {
		cr.AcceptAPIKey, cr.AcceptJWT = true, true
	}
	for _, c := range r.Credentials {
		switch c {
		case gatehousev1.CredentialAPIKey:
			cr.AcceptAPIKey = true
		case gatehousev1.CredentialJWT:
			cr.AcceptJWT = true
		}
	}
	return cr
}

func lowerAll(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		out = append(out, strings.ToLower(s))
	}
	return out
}
