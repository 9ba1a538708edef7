package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// CPUClock reads the CPU time (user plus system, all threads) a process has
// used so far.
type CPUClock func() (time.Duration, error)

// clockTick is Linux's USER_HZ, the unit of the times in /proc/<pid>/stat:
// 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// ProcessCPU returns a CPUClock of process pid, read from /proc/<pid>/stat
// (10 ms resolution: use it over windows of seconds).
func ProcessCPU(pid int) CPUClock {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	return func() (time.Duration, error) {
		b, err := os.ReadFile(path) //nolint:gosec // a /proc path built from a pid
		if err != nil {
			return 0, fmt.Errorf("reading process cpu time: %w", err)
		}
		return parseProcStat(b)
	}
}

// parseProcStat reads utime and stime from the contents of /proc/<pid>/stat.
func parseProcStat(b []byte) (time.Duration, error) {
	// The command name (field 2) may contain spaces and parentheses: the
	// fields that follow start after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	var total time.Duration
	for _, f := range fields[11:13] {
		ticks, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc stat: %w", err)
		}
		total += time.Duration(ticks) * clockTick
	}
	return total, nil
}

// SelfCPU is the CPUClock of this process (microsecond resolution).
func SelfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// cpuWindow measures the CPU share of one or two processes over a window.
type cpuWindow struct {
	server            CPUClock
	serverAt, selfAt  time.Duration
	serverOK, startOK bool
}

func (w *cpuWindow) start() {
	if w.server != nil {
		var err error
		w.serverAt, err = w.server()
		w.serverOK = err == nil
	}
	var err error
	w.selfAt, err = SelfCPU()
	w.startOK = err == nil
}

// stop fills the result's CPU shares: the client's over clientElapsed of
// wall time, the server's over serverElapsed.
func (w *cpuWindow) stop(r *Result, clientElapsed, serverElapsed time.Duration) {
	if now, err := SelfCPU(); err == nil && w.startOK && clientElapsed > 0 {
		r.ClientCPU = float64(now-w.selfAt) / float64(clientElapsed)
	}
	if w.serverOK && serverElapsed > 0 {
		if now, err := w.server(); err == nil {
			r.ServerCPU = float64(now-w.serverAt) / float64(serverElapsed)
		}
	}
}
