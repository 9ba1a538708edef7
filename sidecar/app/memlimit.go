package app

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// MemoryLimitShare is the part of the container's memory limit that the
// automatic Config.MemoryLimit gives the Go runtime. The rest is for what
// the runtime does not count: thread stacks, and the executable's pages
// (about 24 MiB of the gatehouse-sidecar binary are resident; they are
// clean and the kernel can reclaim them, but the cgroup charges them).
const MemoryLimitShare = 0.75

// cgroupLimitFiles are where a container's memory limit is found: cgroup v2,
// then v1. A v1 hierarchy without a limit reports a huge number.
var cgroupLimitFiles = []string{"memory.max", "memory/memory.limit_in_bytes"}

// ContainerMemoryLimit reads the memory limit of the cgroup the process
// runs in from the cgroup file system mounted at root (/sys/fs/cgroup);
// ok is false when there is none.
func ContainerMemoryLimit(root string) (limit int64, ok bool) {
	for _, name := range cgroupLimitFiles {
		data, err := os.ReadFile(filepath.Join(root, name)) //nolint:gosec // a fixed kernel interface
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(data))
		if v == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		// v1 without a limit says 9223372036854771712 (page-aligned max).
		if err != nil || n <= 0 || n >= math.MaxInt64/2 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// resolveMemoryLimit decides the soft memory limit of the Go runtime:
// configured > 0 is used as it is, < 0 means none; 0 is automatic:
// GOMEMLIMIT when the environment sets it (the runtime has applied it
// already), else MemoryLimitShare of the container's limit, else none.
// It returns the limit to set, or 0 to leave the runtime alone.
func resolveMemoryLimit(configured int64, getenv func(string) string, container func() (int64, bool)) int64 {
	switch {
	case configured > 0:
		return configured
	case configured < 0 || getenv("GOMEMLIMIT") != "":
		return 0
	}
	if n, ok := container(); ok {
		return int64(float64(n) * MemoryLimitShare)
	}
	return 0
}

// applyMemoryLimit sets the runtime's soft memory limit as resolved; it
// returns the limit in force (math.MaxInt64: none).
func applyMemoryLimit(configured int64) int64 {
	limit := resolveMemoryLimit(configured, os.Getenv, func() (int64, bool) { return ContainerMemoryLimit("/sys/fs/cgroup") })
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	return debug.SetMemoryLimit(-1)
}
