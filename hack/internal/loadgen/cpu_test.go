package loadgen

import (
	"os"
	"testing"
	"time"
)

func TestProcStatTimesAreReadAfterACommandNameWithSpacesAndParentheses(t *testing.T) {
	stat := []byte("4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 8 0 100 1000000 200 18446744073709551615\n")
	got, err := parseProcStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 325 * clockTick; got != want { // utime 250 + stime 75 ticks
		t.Errorf("cpu time %v, want %v", got, want)
	}
	if _, err := parseProcStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("a truncated stat line parsed")
	}
	if _, err := parseProcStat([]byte("no parenthesis")); err == nil {
		t.Error("a line without a command name parsed")
	}
}

func TestProcessCPUGrowsWhileThisProcessWorks(t *testing.T) {
	clock := ProcessCPU(os.Getpid())
	before, err := clock()
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	self0, err := SelfCPU()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	after, _ := clock()
	self1, _ := SelfCPU()
	if after <= before || self1 <= self0 {
		t.Errorf("cpu clocks did not advance after spinning (x=%d): /proc %v→%v, rusage %v→%v", x, before, after, self0, self1)
	}
}
