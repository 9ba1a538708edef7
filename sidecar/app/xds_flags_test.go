package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"gatehouse.dev/gatehouse/sidecar/source"
)

// selfSignedPEM is a throwaway CA certificate in PEM.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestXDSSourceFlags(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	notPEM := filepath.Join(dir, "junk")
	if err := os.WriteFile(ca, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notPEM, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		flags      Flags
		wantErr    string
		wantServer string
	}{
		{"the server name is the host of the address", Flags{xdsTarget: "dns:///gatehouse-xds.gatehouse.svc:15010", xdsCAFile: ca}, "", "gatehouse-xds.gatehouse.svc"},
		{"--xds-server-name overrides it", Flags{xdsTarget: "10.0.0.1:15010", xdsCAFile: ca, xdsServerName: "xds.example"}, "", "xds.example"},
		{"no address is refused", Flags{xdsCAFile: ca}, "--xds-address", ""},
		{"no CA is refused: TLS is not optional", Flags{xdsTarget: "x:1"}, "--xds-ca-file", ""},
		{"a CA file without a certificate is refused", Flags{xdsTarget: "x:1", xdsCAFile: notPEM}, "no PEM", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, err := tc.flags.xdsSource("shop", logr.Discard())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			x := src.(*source.XDS)
			if x.TLS.ServerName != tc.wantServer || x.Namespace != "shop" || x.TLS.RootCAs == nil {
				t.Fatalf("source %+v", x)
			}
		})
	}
}
