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

func TestParseMemoryLimit(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "auto is the automatic limit (0).", in: "auto", want: 0},
		{name: "An empty value is the automatic limit too.", in: "", want: 0},
		{name: "none turns the limit off (-1).", in: "none", want: -1},
		{name: "A binary quantity is read in bytes.", in: "96Mi", want: 96 << 20},
		{name: "A decimal quantity is read in bytes.", in: "100M", want: 100_000_000},
		{name: "Zero is refused: it would mean automatic, which auto says.", in: "0", wantErr: true},
		{name: "A negative quantity is refused.", in: "-1Mi", wantErr: true},
		{name: "A word that is no quantity is refused.", in: "lots", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMemoryLimit(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseMemoryLimit(%q) error = %v, want error: %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("ParseMemoryLimit(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}
