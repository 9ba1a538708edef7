package webhook

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Data keys of the certificate Secret (type kubernetes.io/tls).
const (
	// SecretCertKey and SecretKeyKey hold the serving certificate and key.
	SecretCertKey = "tls.crt"
	SecretKeyKey  = "tls.key"
	// SecretCAKey holds the CA bundle written into caBundle and given to
	// injected xDS sidecars: the current CA first, then the next one, then
	// retired CAs that have not expired yet.
	SecretCAKey = "ca.crt"
	// SecretCAPrivateKeyKey holds the current CA's private key.
	SecretCAPrivateKeyKey = "ca.key"
	// SecretNextCACertKey and SecretNextCAPrivateKeyKey hold the next CA:
	// made with the current one, trusted at once, valid from the current
	// CA's renewal point, when it replaces it. Clients handed the bundle
	// before a rotation (sidecars, whose pods keep the bundle of their
	// admission) so still trust the server after it.
	SecretNextCACertKey       = "next-ca.crt"
	SecretNextCAPrivateKeyKey = "next-ca.key"
)

// backdate moves NotBefore into the past, so that a certificate is valid at
// once on an API server whose clock is a little behind ours.
const backdate = 5 * time.Minute

// keyPair is a certificate with its private key.
type keyPair struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// certSpec says what the serving certificate must hold.
type certSpec struct {
	DNSNames     []string
	IPAddresses  []net.IP
	CAValidity   time.Duration
	CertValidity time.Duration
}

// bundle is what the Secret holds, parsed.
type bundle struct {
	CA      *keyPair
	Serving *keyPair
	// Next is the CA that replaces CA at its renewal point.
	Next *keyPair
	// Trusted are the CAs in caBundle: CA first, then Next, then retired
	// ones.
	Trusted []*x509.Certificate
}

func newSerial() (*big.Int, error) {
	// 128 random bits, as the CA/Browser Forum asks of public CAs: serial
	// numbers must never repeat.
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, []byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing new certificate: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ECDSA P-256 key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// newCA makes a self-signed CA that can sign serving certificates only.
func newCA(now time.Time, validity time.Duration, commonName string) (*keyPair, error) {
	return newCAFor(now.Add(-backdate), now.Add(validity), commonName)
}

// newNextCA makes the CA that replaces current at its renewal point, valid
// from then on for validity: its own renewal point then comes as long after
// its start as the current CA's did.
func newNextCA(current *x509.Certificate, validity time.Duration, commonName string) (*keyPair, error) {
	at := renewAt(current)
	return newCAFor(at.Add(-backdate), at.Add(validity), commonName)
}

func newCAFor(notBefore, notAfter time.Time, commonName string) (*keyPair, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// It signs leaf certificates and nothing else.
		MaxPathLenZero: true,
	}
	cert, certPEM, err := sign(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &keyPair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// newServing makes a serving certificate for spec, signed by ca.
func newServing(now time.Time, ca *keyPair, spec certSpec) (*keyPair, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(spec.CertValidity)
	// A certificate outliving its CA would fail verification early.
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	cn := ""
	if len(spec.DNSNames) > 0 {
		cn = spec.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPAddresses,
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	cert, certPEM, err := sign(tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return &keyPair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// parseKeyPair parses a PEM certificate and key and checks that they
// belong together.
func parseKeyPair(certPEM, keyPEM []byte) (*keyPair, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, errors.New("missing")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key do not match or do not parse: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is a %T, not ECDSA", pair.PrivateKey)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return &keyPair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

func parseCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// parseBundle reads the Secret's data. Parts that are missing or invalid
// stay nil; plan decides what to replace.
func parseBundle(data map[string][]byte) *bundle {
	b := &bundle{}
	trusted := parseCerts(data[SecretCAKey])
	if len(trusted) > 0 {
		caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: trusted[0].Raw})
		if ca, err := parseKeyPair(caPEM, data[SecretCAPrivateKeyKey]); err == nil && ca.Cert.IsCA {
			b.CA = ca
			b.Trusted = trusted
		}
	}
	if s, err := parseKeyPair(data[SecretCertKey], data[SecretKeyKey]); err == nil {
		b.Serving = s
	}
	if n, err := parseKeyPair(data[SecretNextCACertKey], data[SecretNextCAPrivateKeyKey]); err == nil && n.Cert.IsCA {
		b.Next = n
	}
	return b
}

// data is the Secret's data for b.
func (b *bundle) data() map[string][]byte {
	var ca bytes.Buffer
	for _, c := range b.Trusted {
		_ = pem.Encode(&ca, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	data := map[string][]byte{
		SecretCAKey:           ca.Bytes(),
		SecretCAPrivateKeyKey: b.CA.KeyPEM,
		SecretCertKey:         b.Serving.CertPEM,
		SecretKeyKey:          b.Serving.KeyPEM,
	}
	if b.Next != nil {
		data[SecretNextCACertKey] = b.Next.CertPEM
		data[SecretNextCAPrivateKeyKey] = b.Next.KeyPEM
	}
	return data
}

// caBundle is the PEM the webhook configuration must trust.
func (b *bundle) caBundle() []byte { return b.data()[SecretCAKey] }

// renewAt is when a certificate is replaced: when a third of its lifetime is
// left, as cert-manager does by default.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// decision is what plan wants done.
type decision struct {
	// NewCA replaces the CA: by the next CA when it is valid, else by a
	// new one; a new next CA comes with it.
	NewCA, NewServing bool
	// NewNext makes a next CA where there is none (a Secret written by an
	// earlier version) or it has expired.
	NewNext bool
	// Prune drops expired retired CAs from the trusted list.
	Prune bool
	// Reason is a sentence for the log and the event.
	Reason string
}

// plan decides, from what the Secret holds and the time, whether to issue a
// new CA and a new serving certificate. It is pure: tests call it with any
// time.
func plan(now time.Time, b *bundle, spec certSpec) decision {
	switch {
	case b.CA == nil:
		return decision{NewCA: true, NewServing: true, Reason: "there is no valid CA"}
	case !now.Before(renewAt(b.CA.Cert)):
		return decision{NewCA: true, NewServing: true, Reason: "the CA is in the last third of its lifetime"}
	case b.Serving == nil:
		return decision{NewServing: true, Reason: "there is no valid serving certificate"}
	case b.Serving.Cert.CheckSignatureFrom(b.CA.Cert) != nil:
		return decision{NewServing: true, Reason: "the serving certificate is not signed by the current CA"}
	case !sameNames(b.Serving.Cert, spec):
		return decision{NewServing: true, Reason: "the serving certificate's names differ from the webhook's"}
	case !now.Before(renewAt(b.Serving.Cert)):
		return decision{NewServing: true, Reason: "the serving certificate is in the last third of its lifetime"}
	case b.Next == nil || !now.Before(b.Next.Cert.NotAfter):
		return decision{NewNext: true, Reason: "there is no valid next CA"}
	}
	for _, c := range b.Trusted[1:] {
		if !now.Before(c.NotAfter) {
			return decision{Prune: true, Reason: "a retired CA has expired"}
		}
	}
	return decision{}
}

// changes reports whether d asks for any write.
func (d decision) changes() bool { return d.NewCA || d.NewServing || d.NewNext || d.Prune }

func sameNames(c *x509.Certificate, spec certSpec) bool {
	if !slices.Equal(c.DNSNames, spec.DNSNames) || len(c.IPAddresses) != len(spec.IPAddresses) {
		return false
	}
	for i := range c.IPAddresses {
		if !c.IPAddresses[i].Equal(spec.IPAddresses[i]) {
			return false
		}
	}
	return true
}

// apply carries out d, returning the new bundle. A replaced CA stays in the
// trusted list until it expires: replicas that have not loaded the new
// serving certificate yet still serve one it signed. The next CA is in the
// list from the start, so that clients given the list before the CA turns
// over trust the certificates signed after.
func apply(now time.Time, old *bundle, d decision, spec certSpec, commonName string) (*bundle, error) {
	next := &bundle{CA: old.CA, Serving: old.Serving, Next: old.Next}
	var err error
	if d.NewCA {
		if next.CA, err = replacementCA(now, old, spec, commonName); err != nil {
			return nil, err
		}
		next.Next = nil
	}
	if next.Next == nil || d.NewNext {
		if next.Next, err = newNextCA(next.CA.Cert, spec.CAValidity, commonName); err != nil {
			return nil, err
		}
	}
	if d.NewServing {
		if next.Serving, err = newServing(now, next.CA, spec); err != nil {
			return nil, err
		}
	}
	next.Trusted = []*x509.Certificate{next.CA.Cert, next.Next.Cert}
	for _, c := range old.Trusted {
		if now.Before(c.NotAfter) && !c.Equal(next.CA.Cert) && !c.Equal(next.Next.Cert) && len(next.Trusted) < 4 {
			next.Trusted = append(next.Trusted, c)
		}
	}
	return next, nil
}

// replacementCA is the next CA when it is valid now (the CA's renewal
// point has come), else a new CA (none yet, or the operator was away
// past the next CA's life).
func replacementCA(now time.Time, old *bundle, spec certSpec, commonName string) (*keyPair, error) {
	if n := old.Next; n != nil && !now.Before(n.Cert.NotBefore) && now.Before(n.Cert.NotAfter) {
		return n, nil
	}
	return newCA(now, spec.CAValidity, commonName)
}

// nextRenewal is the earliest time plan will want a change.
func (b *bundle) nextRenewal() time.Time {
	t := renewAt(b.CA.Cert)
	if s := renewAt(b.Serving.Cert); s.Before(t) {
		t = s
	}
	// An expiring retired CA changes the bundle too.
	for _, c := range b.Trusted[1:] {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}
