package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

const sampleMetrics = `# TYPE apiserver_longrunning_requests gauge
apiserver_longrunning_requests{component="apiserver",group="auth.gatehouse.dev",resource="apikeys",scope="namespace",subresource="",verb="WATCH",version="v1"} 3
apiserver_longrunning_requests{component="apiserver",group="",resource="configmaps",scope="namespace",subresource="",verb="WATCH",version="v1"} 2
apiserver_longrunning_requests{component="apiserver",group="",resource="secrets",scope="namespace",subresource="",verb="WATCH",version="v1"} 7
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",group="auth.gatehouse.dev",resource="apikeys",verb="LIST",version="v1"} 4
apiserver_request_total{code="200",group="auth.gatehouse.dev",resource="apikeys",verb="GET",version="v1"} 9
# TYPE apiserver_response_sizes histogram
apiserver_response_sizes_bucket{group="auth.gatehouse.dev",resource="apikeys",verb="LIST",version="v1",le="+Inf"} 4
apiserver_response_sizes_sum{group="auth.gatehouse.dev",resource="apikeys",verb="LIST",version="v1"} 4096
apiserver_response_sizes_count{group="auth.gatehouse.dev",resource="apikeys",verb="LIST",version="v1"} 4
`

func TestAPITrafficCountsOnlyTheSidecarsResources(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	got := readAPITraffic(m)
	want := apiTraffic{Watches: 5, Lists: 4, ListBytes: 4096}
	if got != want {
		t.Errorf("readAPITraffic = %+v, want %+v (secrets and GETs are not the sidecars')", got, want)
	}
	if n := m.count("apiserver_response_sizes", map[string]string{"verb": "LIST"}); n != 4 {
		t.Errorf("LIST response count %v, want 4", n)
	}
	if d := got.minus(apiTraffic{Watches: 2, Lists: 1}); d.Watches != 3 || d.Lists != 3 {
		t.Errorf("minus: %+v", d)
	}
}

func TestPercentileIsTheNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 200; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 100 * time.Millisecond, 99: 198 * time.Millisecond, 100: 200 * time.Millisecond} {
		if got := percentile(ds, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one = %v", got)
	}
}

func TestAShutGateHoldsCallersUntilOpened(t *testing.T) {
	g := &gate{}
	if err := g.pass(context.Background()); err != nil {
		t.Fatalf("an open gate held a caller: %v", err)
	}
	held := g.shut()
	passed := make(chan error, 1)
	go func() { passed <- g.pass(context.Background()) }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the shutter was never told a caller is held")
	}
	select {
	case err := <-passed:
		t.Fatalf("a caller passed a shut gate (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	g.open()
	select {
	case err := <-passed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening the gate did not let the caller through")
	}
}
