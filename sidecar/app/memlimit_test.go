package app

import (
	"os"
	"path/filepath"
	"testing"
)

func TestContainerMemoryLimit(t *testing.T) {
	cases := []struct {
		name, file, content string
		want                int64
		ok                  bool
	}{
		{"cgroup v2 with a limit", "memory.max", "134217728\n", 134217728, true},
		{"cgroup v2 without a limit", "memory.max", "max\n", 0, false},
		{"cgroup v1 with a limit", "memory/memory.limit_in_bytes", "268435456\n", 268435456, true},
		{"cgroup v1 without a limit", "memory/memory.limit_in_bytes", "9223372036854771712\n", 0, false},
		{"garbage", "memory.max", "lots", 0, false},
		{"no cgroup file system", "", "", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.file != "" {
				p := filepath.Join(root, tc.file)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := ContainerMemoryLimit(root)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("ContainerMemoryLimit = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestResolveMemoryLimit(t *testing.T) {
	env := func(v string) func(string) string { return func(string) string { return v } }
	container := func(n int64, ok bool) func() (int64, bool) { return func() (int64, bool) { return n, ok } }
	cases := []struct {
		name       string
		configured int64
		getenv     func(string) string
		container  func() (int64, bool)
		want       int64
	}{
		{"an explicit limit wins", 64 << 20, env("1GiB"), container(128<<20, true), 64 << 20},
		{"a negative limit means none", -1, env(""), container(128<<20, true), 0},
		{"GOMEMLIMIT is left to the runtime", 0, env("90MiB"), container(128<<20, true), 0},
		{"a share of the container's limit", 0, env(""), container(128<<20, true), 96 << 20},
		{"no container limit: none", 0, env(""), container(0, false), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolveMemoryLimit(tc.configured, tc.getenv, tc.container); got != tc.want {
				t.Fatalf("resolveMemoryLimit = %d, want %d", got, tc.want)
			}
		})
	}
}
