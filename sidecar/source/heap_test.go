package source_test

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"

	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/sidecar/source"
)

// TestHeapOfAFixture reports the heap taken by reading a directory of
// records and by the snapshot built from it. It measures, it does not
// judge: run it on hack/loadgen's fixtures with
//
//	GATEHOUSE_HEAP_DIR=/tmp/fx/config go test -run HeapOfAFixture -v ./sidecar/source/
//
// (docs/performance.md has the figures).
func TestHeapOfAFixture(t *testing.T) {
	dir := os.Getenv("GATEHOUSE_HEAP_DIR")
	if dir == "" {
		t.Skip("GATEHOUSE_HEAP_DIR is not set")
	}
	heap := func() (live, total uint64) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, ms.TotalAlloc
	}
	const mib = 1 << 20
	base, total0 := heap()
	in, err := source.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	read, total1 := heap()
	b := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "loadtest"})
	s := b.Build(in)
	built, total2 := heap()
	n := len(in.ConfigMaps) + len(in.APIKeys) + len(in.Records)
	in = snapshot.Inputs{}
	_ = in
	kept, _ := heap()
	t.Logf("%d objects: decoded inputs %.1f MiB (reading allocated %.0f MiB); snapshot and builder %.1f MiB (building allocated %.0f MiB); inputs and snapshot %.1f MiB",
		n, float64(read-base)/mib, float64(total1-total0)/mib, float64(kept-base)/mib, float64(total2-total1)/mib, float64(built-base)/mib)
	if out := os.Getenv("GATEHOUSE_HEAP_PROFILE"); out != "" {
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
	}
	runtime.KeepAlive(s)
	runtime.KeepAlive(b)
}
