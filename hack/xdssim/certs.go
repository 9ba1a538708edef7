package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"time"

	"gatehouse.dev/gatehouse/hack/internal/xdsload"
)

// writeCertDir writes, into dir, what cert-manager would mount for the
// operator's --webhook-cert-dir: a CA (ca.crt) and a serving certificate
// it signs for 127.0.0.1 (tls.crt, tls.key), valid for a day. The full
// sidecars get ca.crt as --xds-ca-file; the simulated ones trust it too.
func writeCertDir(dir string, now time.Time) (caPEM []byte, err error) {
	cfg, caPEM, err := xdsload.LoopbackTLS(now)
	if err != nil {
		return nil, err
	}
	cert := cfg.Certificates[0]
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.crt":  caPEM,
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}
