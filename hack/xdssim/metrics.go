package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
)

// metrics is one scrape of a Prometheus endpoint, by family name.
type metrics map[string]*dto.MetricFamily

func parseMetrics(r io.Reader) (metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	return fams, nil
}

// sum adds the values (a counter's, a gauge's, a histogram's or summary's
// sum) of the series of family name whose labels all match match.
func (m metrics) sum(name string, match map[string]string) float64 {
	return m.fold(name, match, func(mt *dto.Metric) float64 {
		switch {
		case mt.GetCounter() != nil:
			return mt.GetCounter().GetValue()
		case mt.GetGauge() != nil:
			return mt.GetGauge().GetValue()
		case mt.GetHistogram() != nil:
			return mt.GetHistogram().GetSampleSum()
		case mt.GetSummary() != nil:
			return mt.GetSummary().GetSampleSum()
		default:
			return mt.GetUntyped().GetValue()
		}
	})
}

// count adds the sample counts of the histogram series of family name whose
// labels all match match.
func (m metrics) count(name string, match map[string]string) float64 {
	return m.fold(name, match, func(mt *dto.Metric) float64 { return float64(mt.GetHistogram().GetSampleCount()) })
}

func (m metrics) fold(name string, match map[string]string, value func(*dto.Metric) float64) float64 {
	total := 0.0
	for _, mt := range m[name].GetMetric() {
		if labelsMatch(mt, match) {
			total += value(mt)
		}
	}
	return total
}

// labelsMatch says whether every label of match has its value in mt; a
// value "*" matches any value but the empty one.
func labelsMatch(mt *dto.Metric, match map[string]string) bool {
	have := map[string]string{}
	for _, l := range mt.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range match {
		got := have[k]
		if (v == "*" && got == "") || (v != "*" && got != v) {
			return false
		}
	}
	return true
}

// scrapeAPIServer reads the API server's /metrics as the admin.
func scrapeAPIServer(ctx context.Context, cs *kubernetes.Clientset) (metrics, error) {
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's /metrics: %w", err)
	}
	return parseMetrics(bytes.NewReader(raw))
}

// scrapeHTTP reads a Prometheus endpoint over plain HTTP (the operator's,
// on loopback).
func scrapeHTTP(ctx context.Context, url string) (metrics, error) {
	var m metrics
	err := httpGet(ctx, url, func(body io.Reader) (err error) {
		m, err = parseMetrics(body)
		return err
	})
	return m, err
}

// httpGet GETs url over plain HTTP and hands a 200 response's body to read.
func httpGet(ctx context.Context, url string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reading %s: %s", url, resp.Status)
	}
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	return nil
}

// sidecarResources are the resources a sidecar on the kubernetes source
// lists and watches: what an xDS sidecar no longer asks the API server for.
var sidecarResources = []struct{ group, resource string }{
	{"auth.gatehouse.dev", "apikeys"},
	{"auth.gatehouse.dev", "signingkeys"},
	{"auth.gatehouse.dev", "authpolicies"},
	{"", "configmaps"},
}

// apiTraffic is what the API server reports about the sidecars' resources
// at one moment: open watches, and LIST and watch-event totals since it
// started.
type apiTraffic struct {
	Watches         float64 // apiserver_longrunning_requests{verb="WATCH"}
	Lists           float64 // apiserver_request_total{verb="LIST"}
	ListBytes       float64 // apiserver_response_sizes_sum{verb="LIST"}
	WatchEvents     float64 // apiserver_watch_events_total
	WatchEventBytes float64 // apiserver_watch_events_sizes_sum
}

func readAPITraffic(m metrics) apiTraffic {
	var t apiTraffic
	for _, r := range sidecarResources {
		res := map[string]string{"group": r.group, "resource": r.resource}
		with := func(k, v string) map[string]string {
			out := map[string]string{k: v}
			for a, b := range res {
				out[a] = b
			}
			return out
		}
		t.Watches += m.sum("apiserver_longrunning_requests", with("verb", "WATCH"))
		t.Lists += m.sum("apiserver_request_total", with("verb", "LIST"))
		t.ListBytes += m.sum("apiserver_response_sizes", with("verb", "LIST"))
		t.WatchEvents += m.sum("apiserver_watch_events_total", res)
		t.WatchEventBytes += m.sum("apiserver_watch_events_sizes", res)
	}
	return t
}

// minus is the change from before to t (gauges: the difference too).
func (t apiTraffic) minus(before apiTraffic) apiTraffic {
	return apiTraffic{
		Watches: t.Watches - before.Watches,
		Lists:   t.Lists - before.Lists, ListBytes: t.ListBytes - before.ListBytes,
		WatchEvents: t.WatchEvents - before.WatchEvents, WatchEventBytes: t.WatchEventBytes - before.WatchEventBytes,
	}
}
