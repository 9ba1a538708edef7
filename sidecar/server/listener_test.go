package server_test

import (
	"net/http"
	"testing"
	"time"

	"gatehouse.dev/gatehouse/sidecar/server"
)

func TestEverySidecarHTTPServerBoundsHeaderRequestAndIdleTime(t *testing.T) {
	cases := []struct {
		name string
		idle time.Duration
	}{
		{"The ext_authz server keeps a proxy's pooled connection longer than nginx's keepalive_timeout.", server.ExtAuthzIdleTimeout},
		{"The health and metrics servers keep a connection longer than a 60 s scrape interval.", server.ProbeIdleTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := server.NewHTTPServer(http.NotFoundHandler(), tc.idle)
			if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.ReadHeaderTimeout > s.ReadTimeout {
				t.Errorf("header timeout %v, read timeout %v: both must be set, the header's within the request's", s.ReadHeaderTimeout, s.ReadTimeout)
			}
			if s.IdleTimeout != tc.idle || s.IdleTimeout <= time.Minute {
				t.Errorf("idle timeout %v, want %v (over a minute)", s.IdleTimeout, tc.idle)
			}
			if s.MaxHeaderBytes <= 0 {
				t.Error("no header size limit")
			}
			if !s.DisableGeneralOptionsHandler {
				t.Error(`net/http would answer "OPTIONS *" itself, with a 200 that reads as an allow`)
			}
		})
	}
}
