package app

import (
	"slices"
	"testing"

	"gatehouse.dev/gatehouse/operator/webhook"
)

func TestShareCertificateWithXDS(t *testing.T) {
	cases := []struct {
		name    string
		opts    Options
		wantTLS bool
		wantErr bool
	}{
		{"xDS off needs nothing", Options{XDSAddr: "0"}, false, false},
		{"xDS without the webhook is refused: no TLS, no xDS", Options{XDSAddr: ":8443", Webhook: webhook.Options{BindAddress: "0"}}, false, true},
		{"xDS with cert-manager's webhook certificates is refused (not yet supported)", Options{XDSAddr: ":8443", Webhook: webhook.Options{BindAddress: ":9443", CertDir: "/certs"}}, false, true},
		{"xDS with the webhook's own certificates shares them and names the xDS Service", Options{XDSAddr: ":8443", XDSServiceName: "gatehouse-xds", Webhook: webhook.Options{BindAddress: ":9443"}}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			cfg, err := shareCertificateWithXDS(&o)
			if (err != nil) != tc.wantErr || (cfg != nil) != tc.wantTLS {
				t.Fatalf("TLS config %v, error %v", cfg, err)
			}
			if tc.wantTLS && (o.Webhook.Store == nil || cfg.GetCertificate == nil || !slices.Contains(o.Webhook.ExtraServiceNames, "gatehouse-xds")) {
				t.Fatalf("webhook options %+v do not share the certificate with xDS", o.Webhook)
			}
		})
	}
}
