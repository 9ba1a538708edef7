// Package image checks the container image recipe without a container
// engine (none runs where this is developed): the Dockerfile's structure, that
// .dockerignore keeps every input of the build, and that the binary built the
// way the Dockerfile builds it is static and runs as the image's non-root user
// with a read-only working directory and no home.
package image

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const module = "gatehouse.dev/gatehouse"

func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// instruction is one Dockerfile instruction with the comment lines right
// above it.
type instruction struct {
	Cmd, Args, Comment string
}

// parseDockerfile splits a Dockerfile into instructions, joining
// continuation lines.
func parseDockerfile(t testing.TB, data []byte) []instruction {
	t.Helper()
	var out []instruction
	var comment, cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && strings.HasPrefix(line, "#") {
			comment.WriteString(strings.TrimSpace(strings.TrimPrefix(line, "#")) + "\n")
			continue
		}
		if cur.Len() == 0 && line == "" {
			comment.Reset()
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Comment: comment.String()})
		cur.Reset()
		comment.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// stages groups instructions by FROM.
func stages(ins []instruction) [][]instruction {
	var s [][]instruction
	for _, in := range ins {
		if in.Cmd == "FROM" {
			s = append(s, nil)
		}
		if len(s) > 0 {
			s[len(s)-1] = append(s[len(s)-1], in)
		}
	}
	return s
}

func readDockerfile(t testing.TB) [][]instruction {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := stages(parseDockerfile(t, data))
	if len(s) != 2 {
		t.Fatalf("want a two-stage Dockerfile (build, runtime), got %d stages", len(s))
	}
	return s
}

func TestDockerfileIsMultiStageStaticAndNonRoot(t *testing.T) {
	s := readDockerfile(t)
	build, final := s[0], s[1]
	digestPinned := regexp.MustCompile(`@sha256:[a-f0-9]{64}\b`)

	tests := []struct {
		name string
		ok   func() bool
	}{
		{"The builder is the Go 1.26 image.", func() bool {
			return regexp.MustCompile(`(^|\s)golang:1\.26[-.\w]*(@sha256:[a-f0-9]{64})?\s+AS\s+build$`).MatchString(build[0].Args)
		}},
		{"The runtime is distroless static, nonroot variant.", func() bool {
			return regexp.MustCompile(`^gcr\.io/distroless/static-debian12:nonroot(@sha256:[a-f0-9]{64})?$`).MatchString(final[0].Args)
		}},
		{"Each base image is pinned by digest, or says right above it how release tooling pins it.", func() bool {
			for _, st := range s {
				from := st[0]
				if !digestPinned.MatchString(from.Args) && !strings.Contains(from.Comment, "@sha256:<digest>") {
					return false
				}
			}
			return true
		}},
		{"The binary is built static, trimmed, stripped and without gRPC's x/net/trace (which keeps every method linked).", func() bool {
			for _, in := range build {
				if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
					return strings.Contains(in.Args, "CGO_ENABLED=0") && strings.Contains(in.Args, "-trimpath") &&
						strings.Contains(in.Args, `-ldflags "-s -w`) && strings.Contains(in.Args, "-tags grpcnotrace") &&
						strings.Contains(in.Args, "./cmd/gatehouse ") && strings.Contains(in.Args, "./cmd/gatehouse-sidecar")
				}
			}
			return false
		}},
		{"The runtime holds only the two binaries, from the build stage.", func() bool {
			var copies []string
			for _, in := range final {
				if in.Cmd == "COPY" || in.Cmd == "ADD" || in.Cmd == "RUN" {
					copies = append(copies, in.Cmd+" "+in.Args)
				}
			}
			return len(copies) == 1 && copies[0] == "COPY --from=build /out/gatehouse /out/gatehouse-sidecar /"
		}},
		{"The runtime runs as the numeric non-root user 65532.", func() bool {
			var user string
			for _, in := range final {
				if in.Cmd == "USER" {
					user = in.Args
				}
			}
			return user == "65532:65532"
		}},
		{"The entrypoint is the operator's binary, in exec form.", func() bool {
			last := final[len(final)-1]
			return last.Cmd == "ENTRYPOINT" && last.Args == `["/gatehouse"]`
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok() {
				t.Fatalf("the Dockerfile breaks this; stages: %+v", s)
			}
		})
	}
}

// dockerignore holds .dockerignore's patterns. Exceptions ("!pattern") are
// refused: this matcher does not implement them, so the test would lie.
func dockerignore(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore uses an exception (%s), which this test cannot check", line)
		}
		pats = append(pats, path.Clean(strings.TrimPrefix(line, "/")))
	}
	return pats
}

// ignored reports whether Docker leaves rel (slash-separated, relative to
// the context) out of the build context: a pattern matches the path or one
// of its parent directories; "**/" matches any number of directories.
func ignored(pats []string, rel string) bool {
	parts := strings.Split(rel, "/")
	for _, p := range pats {
		for i := 1; i <= len(parts); i++ {
			prefix := strings.Join(parts[:i], "/")
			if suffix, ok := strings.CutPrefix(p, "**/"); ok {
				for j := 0; j < i; j++ {
					if m, _ := path.Match(suffix, strings.Join(parts[j:i], "/")); m {
						return true
					}
				}
				continue
			}
			if m, _ := path.Match(p, prefix); m {
				return true
			}
		}
	}
	return false
}

func TestIgnoredMatchesDockerSemantics(t *testing.T) {
	pats := []string{"bin", "*.md", "**/*_test.go", "**/testdata"}
	tests := []struct {
		name string
		path string
		want bool
	}{
		{"A file in an ignored directory is ignored.", "bin/gatehouse", true},
		{"A root Markdown file is ignored.", "README.md", true},
		{"A nested Markdown file is not: *.md is anchored at the root.", "docs/x/README.md", false},
		{"A test file at any depth is ignored.", "internal/x/y_test.go", true},
		{"A file under testdata at any depth is ignored.", "internal/x/testdata/a.json", true},
		{"An ordinary source file is kept.", "internal/x/y.go", false},
		{"A directory merely named like an ignored one is kept.", "internal/bin2/x.go", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ignored(pats, tt.path); got != tt.want {
				t.Fatalf("ignored(%q) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}

// TestDockerContextHoldsEveryBuildInput lists the module's packages that
// the image's binaries are built from, with their Go and embedded files, and
// fails when .dockerignore would leave one out of the image build.
func TestDockerContextHoldsEveryBuildInput(t *testing.T) {
	root := repoRoot(t)
	pats := dockerignore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-json=ImportPath,Dir,GoFiles,EmbedFiles,Module", "./cmd/gatehouse", "./cmd/gatehouse-sidecar")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type pkg struct {
		ImportPath, Dir     string
		GoFiles, EmbedFiles []string
		Module              *struct{ Path string }
	}
	inputs := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || p.Module.Path != module {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			inputs = append(inputs, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	if len(inputs) < 10 {
		t.Fatalf("go list found only %v: the check would prove nothing", inputs)
	}
	for _, in := range inputs {
		if ignored(pats, in) {
			t.Errorf(".dockerignore leaves %s out, but the binary is built from it", in)
		}
	}
	for _, junk := range []string{"bin/gatehouse", ".git/HEAD", "charts/gatehouse/values.yaml", "internal/x/y_test.go"} {
		if !ignored(pats, junk) {
			t.Errorf(".dockerignore lets %s into the build context", junk)
		}
	}
}

// TestBinaryIsStaticAndRunsAsNonRootWithoutWriting builds the binary as the
// Dockerfile does and runs it as the image would: as user 65532, without
// HOME, in a directory it cannot write.
func TestBinaryIsStaticAndRunsAsNonRootWithoutWriting(t *testing.T) {
	root := repoRoot(t)
	// A directory every user can read, so that user 65532 can run the
	// binary (t.TempDir is private to the test's user).
	dir, err := os.MkdirTemp("", "gatehouse-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { //nolint:gosec // must be traversable by the unprivileged user.
		t.Fatal(err)
	}
	bins := []string{filepath.Join(dir, "gatehouse"), filepath.Join(dir, "gatehouse-sidecar")}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X gatehouse.dev/gatehouse/internal/version.Version=v0.0.0-test",
		"-o", dir+"/", "./cmd/gatehouse", "./cmd/gatehouse-sidecar")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	for _, bin := range bins {
		t.Run(filepath.Base(bin)+" has no interpreter and needs no shared library.", func(t *testing.T) {
			assertStaticStripped(t, bin)
		})
	}

	// The working directory is read-only for the process, and is checked to
	// stay empty; TMPDIR is the one place it may write, as /tmp in the pod.
	work := filepath.Join(dir, "work")
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{work, tmp} {
		if err := os.Mkdir(d, 0o755); err != nil { //nolint:gosec // see above.
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(tmp, 65532, 65532); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Chmod(work, 0o555); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		bin  string
		args []string
		want string
	}{
		{name: "gatehouse version prints the stamped version.", bin: bins[0], args: []string{"version"}, want: "gatehouse v0.0.0-test"},
		{name: "gatehouse help lists the operator subcommand.", bin: bins[0], args: []string{"--help"}, want: "operator"},
		{name: "the operator's help parses its flags.", bin: bins[0], args: []string{"operator", "--help"}, want: "--metrics-bind-address"},
		{name: "gatehouse-sidecar version prints the stamped version.", bin: bins[1], args: []string{"version"}, want: "gatehouse-sidecar v0.0.0-test"},
		{name: "the sidecar's help parses its flags.", bin: bins[1], args: []string{"--help"}, want: "--grpc-bind-address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tt.bin, tt.args...)
			cmd.Dir = work
			// No HOME, no USER: distroless' nonroot user has neither a
			// writable home nor a shell profile.
			cmd.Env = []string{"PATH=/nonexistent", "TMPDIR=" + tmp}
			if os.Geteuid() == 0 {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v as a non-root user: %v\n%s", filepath.Base(tt.bin), tt.args, err, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("%s %v printed %q, want it to contain %q", filepath.Base(tt.bin), tt.args, out, tt.want)
			}
			entries, err := os.ReadDir(work)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) > 0 {
				t.Fatalf("%s %v wrote into its working directory: %v", filepath.Base(tt.bin), tt.args, entries)
			}
		})
	}
}

// assertStaticStripped fails unless bin is a static ELF binary without a
// symbol table, as distroless/static needs and -s promises.
func assertStaticStripped(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a PT_INTERP program header: it is dynamically linked")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Error("the binary has a PT_DYNAMIC program header")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries (DT_NEEDED): %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary keeps its symbol table: -s was not applied")
	}
}
