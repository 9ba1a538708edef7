package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gatehouse.dev/gatehouse/operator/webhook"
)

// certDir writes a self-signed tls.crt and tls.key, as cert-manager mounts
// them, into a new directory.
func certDir(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gatehouse-xds.gatehouse.svc"},
		DNSNames:  []string{"gatehouse-xds.gatehouse.svc"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, block := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestShareCertificateWithXDS(t *testing.T) {
	mounted := certDir(t)
	cases := []struct {
		name        string
		opts        Options
		wantTLS     bool
		wantWatcher bool
		wantErr     bool
	}{
		{name: "xDS off needs nothing", opts: Options{XDSAddr: "0"}},
		{name: "xDS without the webhook is refused: no TLS, no CA for sidecars, no xDS", opts: Options{XDSAddr: ":8443", Webhook: webhook.Options{BindAddress: "0"}}, wantErr: true},
		{name: "xDS with cert-manager's webhook certificates serves them, reloaded by a watcher", opts: Options{XDSAddr: ":8443", Webhook: webhook.Options{BindAddress: ":9443", CertDir: mounted}}, wantTLS: true, wantWatcher: true},
		{name: "xDS with cert-manager's certificates not mounted is refused", opts: Options{XDSAddr: ":8443", Webhook: webhook.Options{BindAddress: ":9443", CertDir: t.TempDir()}}, wantErr: true},
		{name: "xDS with the webhook's own certificates shares them and names the xDS Service", opts: Options{XDSAddr: ":8443", XDSServiceName: "gatehouse-xds", Webhook: webhook.Options{BindAddress: ":9443"}}, wantTLS: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			cfg, watcher, err := shareCertificateWithXDS(&o)
			if (err != nil) != tc.wantErr || (cfg != nil) != tc.wantTLS || (watcher != nil) != tc.wantWatcher {
				t.Fatalf("TLS config %v, watcher %v, error %v", cfg, watcher, err)
			}
			if !tc.wantTLS {
				return
			}
			if cfg.MinVersion < tls.VersionTLS12 {
				t.Errorf("MinVersion %x", cfg.MinVersion)
			}
			if tc.wantWatcher {
				if c, err := cfg.GetCertificate(nil); err != nil || c == nil {
					t.Fatalf("the mounted certificate is not served: %v", err)
				}
				return
			}
			if o.Webhook.Store == nil || cfg.GetCertificate == nil || !slices.Contains(o.Webhook.ExtraServiceNames, "gatehouse-xds") {
				t.Fatalf("webhook options %+v do not share the certificate with xDS", o.Webhook)
			}
		})
	}
}
