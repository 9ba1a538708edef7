package source_test

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"

	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/sidecar/source"
)

// BenchmarkHeapOfAFixture reports the heap taken by reading a directory of
// records and by the snapshot built from it, as metrics of the benchmark
// (MiB of live heap, MiB allocated). Run it on hack/loadgen's fixtures with
//
//	GATEHOUSE_HEAP_DIR=/tmp/fx/config go test -run '^$' -bench HeapOfAFixture -benchtime 1x ./sidecar/source/
//
// (docs/performance.md has the figures). GATEHOUSE_HEAP_PROFILE=FILE
// writes a heap profile of the inputs and the snapshot.
func BenchmarkHeapOfAFixture(b *testing.B) {
	dir := os.Getenv("GATEHOUSE_HEAP_DIR")
	if dir == "" {
		b.Skip("GATEHOUSE_HEAP_DIR is not set")
	}
	heap := func() (live, total uint64) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, ms.TotalAlloc
	}
	const mib = 1 << 20
	for b.Loop() {
		base, total0 := heap()
		in, err := source.ReadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		read, total1 := heap()
		builder := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "loadtest"})
		s := builder.Build(in)
		built, total2 := heap()
		n := len(in.ConfigMaps) + len(in.APIKeys) + len(in.Records)
		in = snapshot.Inputs{}
		_ = in
		kept, _ := heap()
		b.ReportMetric(float64(n), "objects")
		b.ReportMetric(float64(read-base)/mib, "inputs-MiB")
		b.ReportMetric(float64(total1-total0)/mib, "read-alloc-MiB")
		b.ReportMetric(float64(kept-base)/mib, "snapshot-MiB")
		b.ReportMetric(float64(total2-total1)/mib, "build-alloc-MiB")
		b.ReportMetric(float64(built-base)/mib, "inputs+snapshot-MiB")
		if out := os.Getenv("GATEHOUSE_HEAP_PROFILE"); out != "" {
			writeHeapProfile(b, out)
		}
		runtime.KeepAlive(s)
		runtime.KeepAlive(builder)
	}
}

func writeHeapProfile(b *testing.B, path string) {
	b.Helper()
	f, err := os.Create(path) //nolint:gosec // a path the person running the benchmark chose
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}
