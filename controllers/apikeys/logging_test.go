package apikeys

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestSafeLoggerDropsEverythingAboveTheCap(t *testing.T) {
	var lines []string
	l := SafeLogger(funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{Verbosity: 10}))
	cases := []struct {
		name   string
		log    func()
		logged bool
	}{
		{"An info line is logged.", func() { l.Info("info") }, true},
		{"An error is logged.", func() { l.Error(nil, "error") }, true},
		{"A V(7) line is logged.", func() { l.V(7).Info("v7") }, true},
		{"A V(8) line (client-go bodies) is dropped.", func() { l.V(8).Info("Request Body", "body", "secret") }, false},
		{"V(4) of a V(4) logger is dropped.", func() { l.V(4).V(4).Info("v8") }, false},
		{"A named logger with values keeps the cap.", func() { l.WithName("x").WithValues("k", "v").V(9).Info("v9") }, false},
		{"A logger with call depth keeps the cap.", func() { l.WithCallDepth(1).V(8).Info("v8") }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lines = nil
			tc.log()
			if got := len(lines) == 1; got != tc.logged {
				t.Fatalf("logged = %v (%q), want %v", got, strings.Join(lines, "|"), tc.logged)
			}
		})
	}
	if l.V(8).Enabled() {
		t.Fatal("V(8) reports enabled, so client-go would build the dump")
	}
}
