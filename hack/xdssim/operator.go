package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// operatorProcess is the operator (cmd/gatehouse operator) running as a
// process of its own, with xDS on loopback.
type operatorProcess struct {
	*process
	xdsAddr     string
	metricsURL  string
	pprofURL    string
	certDir     string
	caPEM       []byte
	serverName  string
	injectionIn string
}

// startOperator runs the operator against the cluster's kubeconfig: the
// webhook and xDS on loopback with certificates from a directory (as
// cert-manager's would be mounted), metrics on loopback, discovery off.
func startOperator(ctx context.Context, o options, dir, bin, kubeconfig string) (*operatorProcess, error) {
	op := &operatorProcess{certDir: filepath.Join(dir, "certs"), serverName: "127.0.0.1"}
	if err := os.MkdirAll(op.certDir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if op.caPEM, err = writeCertDir(op.certDir, time.Now()); err != nil {
		return nil, err
	}
	op.injectionIn = filepath.Join(dir, "injection.yaml")
	if err := os.WriteFile(op.injectionIn, []byte("image: example.com/gatehouse:xdssim\n"), 0o600); err != nil {
		return nil, err
	}
	addrs := make([]string, 5)
	for i := range addrs {
		if addrs[i], err = freeAddr(ctx); err != nil {
			return nil, err
		}
	}
	webhookAddr, metricsAddr, probeAddr := addrs[0], addrs[1], addrs[2]
	op.xdsAddr = addrs[3]
	op.metricsURL = "http://" + metricsAddr + "/metrics"
	op.pprofURL = "http://" + addrs[4] + "/debug/pprof"
	qps := fmt.Sprint(o.OperatorQPS)
	op.process, err = startProcess(ctx, "operator", dir, bin, "operator",
		"--kubeconfig", kubeconfig,
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr,
		"--pprof-bind-address", addrs[4],
		"--discovery-bind-address", "0",
		"--webhook-bind-address", webhookAddr, "--webhook-cert-dir", op.certDir,
		"--sidecar-injection-config", op.injectionIn,
		"--xds-bind-address", op.xdsAddr,
		"--kube-api-qps", qps, "--kube-api-burst", qps,
		"--apikey-workers", fmt.Sprint(o.APIKeyWorkers),
		"--zap-log-level", "info",
	)
	if err != nil {
		return nil, err
	}
	return op, nil
}

// operatorReading is the operator's resource use at one moment.
type operatorReading struct {
	usage
	HeapInuse float64 // go_memstats_heap_inuse_bytes
	// HeapLive is go_memstats_heap_alloc_bytes right after two forced
	// garbage collections, which sweep before they return: the bytes of
	// live objects, without the garbage HeapInuse may still count.
	HeapLive float64
}

func (op *operatorProcess) read(ctx context.Context) (operatorReading, error) {
	u, err := op.usage()
	if err != nil {
		return operatorReading{}, err
	}
	m, err := scrapeHTTP(ctx, op.metricsURL)
	if err != nil {
		return operatorReading{}, err
	}
	r := operatorReading{usage: u, HeapInuse: m.sum("go_memstats_heap_inuse_bytes", nil)}
	// The heap profile endpoint collects garbage first when asked to
	// (gc=1); the metrics read after it show the live heap. Twice: what
	// a sync.Pool holds (gRPC's encoding buffers among it) survives one
	// collection in the pool's victim cache.
	for range 2 {
		if err := httpGet(ctx, op.pprofURL+"/heap?gc=1", discard); err != nil {
			return operatorReading{}, err
		}
	}
	if m, err = scrapeHTTP(ctx, op.metricsURL); err != nil {
		return operatorReading{}, err
	}
	r.HeapLive = m.sum("go_memstats_heap_alloc_bytes", nil)
	return r, nil
}

// reconciled reads, from the operator's metrics, how many APIKey
// reconciliations succeeded and how many wait in the queue.
func (op *operatorProcess) reconciled(ctx context.Context) (success, queued float64, err error) {
	m, err := scrapeHTTP(ctx, op.metricsURL)
	if err != nil {
		return 0, 0, err
	}
	return m.sum("controller_runtime_reconcile_total", map[string]string{"controller": "apikey", "result": "success"}),
		m.sum("workqueue_depth", map[string]string{"name": "apikey"}), nil
}

// discard reads a body to its end and drops it.
func discard(body io.Reader) error {
	_, err := io.Copy(io.Discard, body)
	return err
}
